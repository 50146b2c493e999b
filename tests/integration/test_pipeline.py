"""The whole path on real servers: broker, Redis, moto S3 (server mode), an HTTP origin."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
import pyvips
import redis

from streams import codec, records
from streams.catalog.sqlite import SqliteCatalog
from streams.jobstate import job_key
from streams.service import job_for
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker
from tests.images import encode, gradient, ssim
from tests.integration.kafka import collect, publish_books, send

pytestmark = pytest.mark.integration


def _fetch(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(urlsplit(url).path).read_bytes()
    with urlopen(url, timeout=10) as resp:  # presigned GET against the moto server
        return bytes(resp.read())


@pytest.fixture(params=["file", "s3"])
def store_env(request: pytest.FixtureRequest, worker_env: dict[str, str]) -> dict[str, str]:
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        worker_env.update({
            "STORAGE_URL": f"s3://covers-{uuid.uuid4().hex[:8]}", "S3_ENDPOINT": endpoint,
            "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test",
            "S3_CREATE_BUCKET": "true"})
    return worker_env


async def test_good_and_bad_covers_end_to_end(store_env: dict[str, str], origin: Origin,
                                              make_worker: type[Worker], tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    tall, wide = gradient(1000, 1500), gradient(2400, 1600)
    books = [
        records.BookEnriched(f"good-jpeg-{tag}", origin.add(f"/{tag}/a.jpg", encode(tall, "jpg"))),
        records.BookEnriched(f"good-png-{tag}", origin.add(f"/{tag}/b.png", encode(wide, "png"),
                                                           content_type="image/png")),
        records.BookEnriched(f"missing-{tag}", f"{origin.base_url}/{tag}/nope.jpg"),
        records.BookEnriched(f"html-{tag}", origin.add(f"/{tag}/page.jpg", b"<html>hi</html>",
                                                       content_type="image/jpeg")),
        records.BookEnriched(f"no-url-{tag}", None),
    ]
    worker = make_worker(store_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, books)
    await send(settings, settings.topic_book_enriched, [(f"poison-{tag}", b"\xde\xad\xbe\xef")])
    processed, dead = await collect(settings, expected=5, timeout=90, settle=2)

    assert sorted(p.book_id for p in processed) == [f"good-jpeg-{tag}", f"good-png-{tag}"]
    reasons = {d.book_id: d.reason_code for d in dead}
    assert reasons == {f"missing-{tag}": "not_found", f"html-{tag}": "unsupported_type",
                       f"poison-{tag}": "undecodable_event"}
    poison = next(d for d in dead if d.reason_code == "undecodable_event")
    assert poison.original_value == b"\xde\xad\xbe\xef"
    assert poison.source_topic == settings.topic_book_enriched

    expected = {f"good-jpeg-{tag}": tall, f"good-png-{tag}": wide}
    catalog = SqliteCatalog(settings.catalog_url)
    state = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    for event in processed:
        source = expected[event.book_id]
        for rendition in event.renditions:
            want = min({"thumb": 200, "medium": 800, "large": 1600}[rendition.name],
                       source.width)  # never enlarged
            assert rendition.width == want
            # Smaller renditions are derived from larger ones: +-1 px of rounding.
            assert abs(rendition.height - source.height * want / source.width) <= 1
        for rendition in event.renditions:
            assert rendition.key.startswith(f"{event.book_id}/{event.source_sha256[:16]}/")
            image = pyvips.Image.new_from_buffer(_fetch(rendition.url), "")
            assert (image.width, image.height) == (rendition.width, rendition.height)
            assert image.get("vips-loader").startswith(rendition.format)
            assert ssim(image, source) > 0.9
        job = state.hgetall(job_key(event.job_id))
        assert job["state"] == "done"
        assert len(json.loads(job["outputs"])) == 3
        row = await catalog.get(event.book_id)
        assert row is not None and row["job_id"] == event.job_id
        assert row["cover_url"] == event.renditions[-1].url
        assert [r["key"] for r in row["renditions"]] == [r.key for r in event.renditions]

    for failed in (books[2], books[3]):
        job = job_for(failed)
        assert job is not None
        entry = state.hgetall(job_key(job.job_id))
        assert entry["state"] == "failed"
        assert json.loads(entry["error"])["code"] == reasons[failed.book_id]
        assert await catalog.get(failed.book_id) is None
    state.close()
    assert worker.stop() == 0, worker.log()[-3000:]


async def test_cover_requested_is_processed_with_its_job_id(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    url = origin.add(f"/{tag}/req.webp", encode(gradient(900, 1200), "webp"),
                     content_type="image/webp")
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    request = records.CoverRequested(f"job-{tag}", f"req-{tag}", url)
    await send(settings, settings.topic_cover_requested,
               [(request.book_id, codec.COVER_REQUESTED.encode(request))])
    processed, dead = await collect(settings, expected=1, timeout=60)
    assert dead == []
    assert [(p.job_id, p.book_id, p.source_format) for p in processed] == [
        (f"job-{tag}", f"req-{tag}", "webp")]
    worker.stop()
