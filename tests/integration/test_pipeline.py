"""The whole path on real servers: broker, Redis, moto S3 (server mode), an HTTP origin."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qsl, urlsplit
from urllib.request import urlopen

import pytest
import pyvips
import redis
from aiobotocore.session import get_session

from streams import codec, records
from streams.demo import catalog_rows
from streams.jobstate import job_key
from streams.service import job_for
from streams.store import object_key
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, scrape, wait_until
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
        tag = uuid.uuid4().hex[:8]
        worker_env.update({
            "STORAGE_URL": f"s3://covers-{tag}", "S3_ENDPOINT": endpoint,
            "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test",
            "S3_CREATE_BUCKET": "true", "ALLOWED_SOURCE_BUCKETS": f"uploads-{tag}"})
    return worker_env


async def _head(env: dict[str, str], key: str) -> dict[str, Any]:
    async with get_session().create_client(
            "s3", endpoint_url=env["S3_ENDPOINT"], region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        head: dict[str, Any] = await client.head_object(
            Bucket=urlsplit(env["STORAGE_URL"]).netloc, Key=key)
    return head


async def _upload(endpoint: str, url: str, data: bytes) -> None:
    parts = urlsplit(url)
    async with get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        await client.create_bucket(Bucket=parts.netloc)
        await client.put_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data)


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
    expected = {f"good-jpeg-{tag}": tall, f"good-png-{tag}": wide}
    on_s3 = "ALLOWED_SOURCE_BUCKETS" in store_env
    if on_s3:  # an uploaded original, named by s3://bucket/key
        upload = f"s3://{store_env['ALLOWED_SOURCE_BUCKETS']}/originals/{tag}.png"
        await _upload(store_env["S3_ENDPOINT"], upload, encode(tall, "png"))
        books.append(records.BookEnriched(f"upload-{tag}", upload))
        expected[f"upload-{tag}"] = tall
    worker = make_worker(store_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, books)
    await send(settings, settings.topic_book_enriched, [(f"poison-{tag}", b"\xde\xad\xbe\xef")])
    processed, dead = await collect(settings, expected=len(expected) + 3, timeout=90, settle=2)

    assert sorted(p.book_id for p in processed) == sorted(expected)
    reasons = {d.book_id: d.reason_code for d in dead}
    assert reasons == {f"missing-{tag}": "not_found", f"html-{tag}": "unsupported_type",
                       f"poison-{tag}": "undecodable_event"}
    poison = next(d for d in dead if d.reason_code == "undecodable_event")
    assert poison.original_value == b"\xde\xad\xbe\xef"
    assert poison.source_topic == settings.topic_book_enriched

    rows = await catalog_rows(settings, set(expected))
    state = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    for event in processed:
        source = expected[event.book_id]
        for rendition in event.renditions:
            want = min({"thumb": 200, "medium": 800, "large": 1600}[rendition.name],
                       source.width)  # never enlarged
            assert rendition.width == want
            # Smaller renditions are derived from larger ones: +-1 px of rounding.
            assert abs(rendition.height - source.height * want / source.width) <= 1
        if on_s3:  # presigned URLs, and the event says until when they work
            assert event.urls_expire_at is not None
            assert timedelta(days=6) < event.urls_expire_at - event.processed_at <= timedelta(7)
            head = await _head(store_env, event.renditions[0].key)
            assert head["Metadata"] == {
                "book-id": event.book_id, "source-sha256": event.source_sha256,
                "source-url-sha256": hashlib.sha256(event.source_url.encode()).hexdigest(),
                "preset": "cover", "preset-version": "1"}
            assert head["CacheControl"] == "public, max-age=31536000, immutable"
        else:
            assert event.urls_expire_at is None
        for rendition in event.renditions:
            assert rendition.key == object_key(event.book_id, event.source_sha256, "cover", "1",
                                               rendition.name, rendition.key.rsplit(".")[-1])
            image = pyvips.Image.new_from_buffer(_fetch(rendition.url), "")
            assert (image.width, image.height) == (rendition.width, rendition.height)
            assert image.get("vips-loader").startswith(rendition.format)
            assert ssim(image, source) > 0.9
        job = state.hgetall(job_key(event.job_id))
        assert job["state"] == "done"
        assert len(json.loads(job["outputs"])) == 3
        row = rows[event.book_id]
        assert row["job_id"] == event.job_id
        assert 0 <= time.time() * 1000 - row["version"] < 120_000  # the input event's time
        assert row["cover_url"] == event.renditions[-1].url
        assert [r["key"] for r in row["renditions"]] == [r.key for r in event.renditions]

    for failed in (books[2], books[3]):
        job = job_for(failed)
        assert job is not None
        entry = state.hgetall(job_key(job.job_id))
        assert entry["state"] == "failed"
        assert json.loads(entry["error"])["code"] == reasons[failed.book_id]
        assert failed.book_id not in await catalog_rows(settings, {failed.book_id}, timeout=0)
    state.close()

    # The worker's /metrics tells the same story.
    good, bad = len(expected), 2
    scraped = scrape(worker)
    assert scraped['cover_jobs_total{outcome="processed",reason=""}'] == good
    assert scraped['cover_jobs_total{outcome="skipped",reason=""}'] == 1
    for reason in ("not_found", "unsupported_type", "undecodable_event"):
        assert scraped[f'cover_jobs_total{{outcome="dead_letter",reason="{reason}"}}'] == 1
        assert scraped[f'cover_dead_letters_total{{reason="{reason}"}}'] == 1
    duration = "image_processing_duration_seconds_count{{preset=\"cover\",success=\"{}\"}}"
    assert scraped[duration.format("true")] == good
    assert scraped[duration.format("false")] == bad
    for stage in ("fetch", "decode", "render", "encode", "store"):
        assert scraped[f'cover_stage_duration_seconds_count{{stage="{stage}"}}'] == good
    assert 1 <= scraped['cover_stage_duration_seconds_count{stage="sink"}'] <= good
    for variant in ("thumb", "medium", "large"):
        ratio = f'image_compression_ratio_sum{{preset="cover",variant="{variant}"}}'
        assert scraped[ratio] > good  # every rendition is smaller than its source
    assert scraped['image_original_size_bytes_count{preset="cover"}'] == good
    assert scraped["cover_jobs_in_flight"] == 0

    def lags() -> dict[str, float]:  # measured every 5 s
        return {k: v for k, v in scrape(worker).items() if k.startswith("cover_consumer_lag{")}

    wait_until(lambda: len(lags()) == 4, 15, "the consumer lag of both input topics' partitions")
    assert set(lags().values()) == {0}
    # Faust's own sensor shares the endpoint: every input was received and acked.
    assert scraped["faust_messages_received_total"] >= len(books) + 1
    assert scraped["faust_total_events_total"] >= len(books) + 1
    assert scraped["faust_active_messages"] == 0

    # Probes: alive, and ready (partitions assigned, Redis, the store and the catalog answer).
    assert _get_json(worker.web_url("/healthz")) == (200, {"status": "ok"})
    assert _get_json(worker.web_url("/readyz")) == (200, {"ready": True, "checks": {
        "partitions": True, "redis": True, "store": True, "catalog": True}})
    assert worker.stop() == 0, worker.log()[-3000:]

    # Logs: one JSON object a line; each job's lifecycle, step by step; no URL signatures.
    log_text = worker.log()
    entries = [json.loads(line) for line in log_text.splitlines() if line.strip()]
    assert [e for e in entries if e["level"] in ("error", "critical")] == []
    for event in processed:
        steps = [e for e in entries if e.get("job_id") == event.job_id]
        assert [e["stage"] for e in steps] == ["received", "fetch", "render", "store", "done"]
        assert all(e["book_id"] == event.book_id and e["level"] == "info" for e in steps)
        assert all(e["duration_ms"] > 0 for e in steps[1:])
        for rendition in event.renditions:
            signature = dict(parse_qsl(urlsplit(rendition.url).query)).get("X-Amz-Signature")
            assert signature is None or signature not in log_text
    dead_logged = {e["book_id"]: e["reason"] for e in entries if e.get("stage") == "dead_letter"}
    assert dead_logged == reasons


def _get_json(url: str) -> tuple[int, Any]:
    try:
        with urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_cover_requests_with_presets_and_custom_outputs(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    source = gradient(900, 1200)
    url = origin.add(f"/{tag}/req.webp", encode(source, "webp"), content_type="image/webp")
    worker_env["PRESETS_FILE"] = str(Path(__file__).parents[2] / "config/presets.example.toml")
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    square = json.dumps([{"name": "square", "width": 300, "height": 300, "fit": "cover",
                          "gravity": "attention", "format": "avif", "quality": 60}])
    requests = [
        records.CoverRequested(f"job-{tag}", f"req-{tag}", url),
        records.CoverRequested(f"sd-{tag}", f"sd-{tag}", url, preset="stable_diffusion"),
        records.CoverRequested(f"sq-{tag}", f"sq-{tag}", url, outputs=square),
        records.CoverRequested(f"bad-{tag}", f"bad-{tag}", url,
                               outputs='[{"name": "x", "fit": "cover", "width": 5}]'),
        records.CoverRequested(f"unk-{tag}", f"unk-{tag}", url, preset="no-such-preset"),
    ]
    await send(settings, settings.topic_cover_requested,
               [(r.book_id, codec.COVER_REQUESTED.encode(r)) for r in requests])
    processed, dead = await collect(settings, expected=5, timeout=60)
    by_book = {p.book_id: p for p in processed}
    assert sorted(by_book) == [f"req-{tag}", f"sd-{tag}", f"sq-{tag}"]
    assert by_book[f"req-{tag}"].job_id == f"job-{tag}"
    assert by_book[f"req-{tag}"].source_format == "webp"

    sd = by_book[f"sd-{tag}"]
    assert (sd.preset, sd.preset_version) == ("stable_diffusion", "1")
    # 900 x 1200 fits inside 768 x 768 as 576 x 768, and is never enlarged into 1536 x 1536
    assert [(r.name, r.width, r.height, r.format) for r in sd.renditions] == [
        ("normal", 576, 768, "jpeg"), ("high", 900, 1200, "webp")]

    sq = by_book[f"sq-{tag}"]
    (out,) = sq.renditions
    assert sq.preset == "custom" and (out.width, out.height, out.format) == (300, 300, "avif")
    assert pyvips.Image.new_from_buffer(_fetch(out.url), "").get("vips-loader").startswith("heif")
    assert sq.placeholder is not None and len(sq.placeholder.blurhash or "") == 28

    reasons = {d.book_id: (d.reason_code, d.message) for d in dead}
    assert reasons[f"bad-{tag}"][0] == "invalid_spec"
    assert "needs width and height" in reasons[f"bad-{tag}"][1]
    assert reasons[f"unk-{tag}"][0] == "unknown_preset"
    worker.stop()
