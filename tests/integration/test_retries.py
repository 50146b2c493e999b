"""Retry tiers and dead letters on the real broker, Redis and an origin that fails on cue."""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
import uuid
from pathlib import Path

import pytest
import redis

from streams import codec, embedded, records
from streams.jobstate import job_key
from streams.service import job_for
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, scrape, wait_until
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books, read_all, send

pytestmark = pytest.mark.integration

DELAYS = (1.0, 2.0, 3.0)  # RETRY_DELAYS_SEC: four attempts in all
SLACK = 4.0  # the retry agent's polling step, a fetch and a render


def _unavailable(retry_after: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    return 503, b"busy", {"Retry-After": retry_after} if retry_after else {}


async def test_backoff_attempts_and_dead_letter_headers(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    jpeg = encode(gradient(300, 450), "jpg")
    ok = (200, jpeg, {"Content-Type": "image/jpeg"})
    books = {
        "flaky": records.BookEnriched(f"flaky-{tag}", origin.script(
            f"/{tag}/flaky.jpg", [_unavailable(), _unavailable(), ok])),
        "down": records.BookEnriched(f"down-{tag}", origin.script(
            f"/{tag}/down.jpg", [_unavailable()])),
        "patient": records.BookEnriched(f"patient-{tag}", origin.script(
            f"/{tag}/patient.jpg", [_unavailable(retry_after="4"), ok])),
    }
    worker_env["RETRY_DELAYS_SEC"] = ",".join(str(d) for d in DELAYS)
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, list(books.values()), headers=[("trace-id", tag.encode())])
    processed, dead = await collect(settings, expected=3, timeout=90, settle=2)

    # 503, 503, 200: done on the third attempt, after the first two tiers' delays.
    by_book = {p.book_id: p for p in processed}
    flaky = by_book[books["flaky"].book_id]
    assert flaky.attempts == 3
    hits = origin.hits[f"/{tag}/flaky.jpg"]
    gaps = [b - a for a, b in itertools.pairwise(hits)]
    assert len(hits) == 3
    for gap, delay in zip(gaps, DELAYS, strict=False):
        assert delay <= gap < delay + SLACK, gaps
    # Retry-After asks for longer than the tier: honoured.
    patient = origin.hits[f"/{tag}/patient.jpg"]
    assert by_book[books["patient"].book_id].attempts == 2
    assert 4 <= patient[1] - patient[0] < 4 + SLACK

    # Never recovers: dead-lettered after exactly 1 + len(DELAYS) attempts.
    (letter,) = dead
    assert letter.book_id == books["down"].book_id
    assert len(origin.hits[f"/{tag}/down.jpg"]) == letter.attempts == 1 + len(DELAYS)
    assert letter.reason_code == "origin_unavailable" and letter.transient
    assert letter.error_class == "TransientError"
    assert letter.source_topic == settings.topic_book_enriched  # not a retry topic
    assert (letter.last_failure_at - letter.first_failure_at).total_seconds() >= sum(DELAYS)
    assert codec.BOOK_ENRICHED.decode(letter.original_value or b"") == books["down"]
    assert letter.original_headers == (records.Header("trace-id", tag.encode()),)
    assert letter.original_timestamp is not None

    # The dead letter's Kafka headers: the event's own, and Spring Kafka's kafka_dlt-*.
    (raw,) = await read_all(settings, settings.topic_dead_letter)
    headers = dict(raw.headers)
    assert headers["trace-id"] == tag.encode()
    assert headers["kafka_dlt-original-topic"] == settings.topic_book_enriched.encode()
    assert struct.unpack(">i", headers["kafka_dlt-original-partition"])[0] == (
        letter.source_partition)
    assert struct.unpack(">q", headers["kafka_dlt-original-offset"])[0] == letter.source_offset
    assert struct.unpack(">q", headers["kafka_dlt-original-timestamp"])[0] == int(
        letter.original_timestamp.timestamp() * 1000)
    assert headers["kafka_dlt-exception-fqcn"] == b"processors.errors.TransientError"
    assert headers["kafka_dlt-exception-message"].startswith(b"origin_unavailable: ")
    assert headers["kafka_dlt-original-consumer-group"] == settings.app_id.encode()
    assert not [k for k in headers if k.startswith("covers-")]

    # Job state on the way: done with its attempts, or failed.
    state = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    for name, final in (("flaky", "done"), ("down", "failed"), ("patient", "done")):
        job = job_for(books[name])
        assert job is not None
        entry = state.hgetall(job_key(job.job_id))
        assert entry["state"] == final, name
    down = job_for(books["down"])
    assert down is not None
    assert json.loads(state.hget(job_key(down.job_id), "attempts") or "0") == 4
    state.close()

    # The log tells each attempt; the metrics count each tier.
    flaky_steps = [e["stage"] for e in worker.log_entries(book_id=books["flaky"].book_id)]
    assert flaky_steps == ["received", "retry", "received", "retry", "received", "fetch",
                           "render", "store", "done"]
    scraped = scrape(worker)
    retries = {tier: scraped.get(
        f'cover_retries_total{{reason="origin_unavailable",tier="{tier}"}}', 0)
        for tier in ("1", "2", "3")}
    assert retries == {"1": 3, "2": 2, "3": 1}
    assert scraped['cover_jobs_total{outcome="retry",reason="origin_unavailable"}'] == 6
    assert worker.stop() == 0


async def test_a_mixed_batch_ends_with_exactly_the_expected_outcomes(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    jpeg = encode(gradient(240, 360), "jpg")
    ok = (200, jpeg, {"Content-Type": "image/jpeg"})
    good = [records.BookEnriched(f"good-{i}-{tag}", origin.add(f"/{tag}/g{i}.jpg", jpeg))
            for i in range(12)]
    missing = [records.BookEnriched(f"missing-{i}-{tag}", f"{origin.base_url}/{tag}/m{i}.jpg")
               for i in range(5)]
    recovering = [records.BookEnriched(f"recovering-{i}-{tag}", origin.script(
        f"/{tag}/r{i}.jpg", [_unavailable(), ok])) for i in range(6)]
    poison = [(f"poison-{i}-{tag}", b"\x00\xff garbage " + bytes([i])) for i in range(4)]
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    mixed = [*good, *missing, *recovering]
    await publish_books(settings, mixed[::2])
    await send(settings, settings.topic_book_enriched, poison[:2])
    await publish_books(settings, mixed[1::2])
    await send(settings, settings.topic_book_enriched, poison[2:])
    total = len(mixed) + len(poison)
    processed, dead = await collect(settings, expected=total, timeout=90, settle=4)

    assert sorted(p.book_id for p in processed) == sorted(
        b.book_id for b in [*good, *recovering])  # each exactly once
    assert {p.book_id: p.attempts for p in processed} == {
        **{b.book_id: 1 for b in good}, **{b.book_id: 2 for b in recovering}}
    assert sorted((d.book_id, d.reason_code) for d in dead) == sorted(
        [(b.book_id, "not_found") for b in missing]
        + [(key, "undecodable_event") for key, _ in poison])
    assert worker.stop() == 0


async def _waiting_retry(worker_env: dict[str, str], origin: Origin,
                         make_worker: type[Worker], log: Path,
                         ) -> tuple[Worker, Settings, list[float]]:
    """A worker whose one book failed its first attempt (503) and now waits 20 s in tier 1;
    returns it, its settings and the origin's request times for the book (200 next)."""
    tag = uuid.uuid4().hex[:6]
    ok = (200, encode(gradient(200, 300), "jpg"), {"Content-Type": "image/jpeg"})
    book = records.BookEnriched(f"waiting-{tag}", origin.script(
        f"/{tag}/w.jpg", [_unavailable(), ok]))
    worker_env["RETRY_DELAYS_SEC"] = "20"
    worker = make_worker(worker_env, log).start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, [book])
    await asyncio.to_thread(wait_until, lambda: bool(worker.log_entries(stage="retry")), 30,
                            "the first attempt to fail")
    return worker, settings, origin.hits.setdefault(f"/{tag}/w.jpg", [])


async def test_a_stop_lets_go_of_a_waiting_retry_which_keeps_its_due_time(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    first, settings, hits = await _waiting_retry(worker_env, origin, make_worker,
                                                 tmp_path / "first.log")
    # The retry waits 20 s for its time; a stop does not wait with it (the uncommitted retry
    # is read again after the restart).
    started = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - started < 15
    second = make_worker(worker_env, tmp_path / "second.log").start()
    processed, dead = await collect(settings, expected=1, timeout=60, settle=1)
    assert dead == [] and [p.attempts for p in processed] == [2]
    assert len(hits) == 2 and 20 <= hits[1] - hits[0] < 20 + SLACK + 10  # due time kept
    assert second.stop() == 0


async def test_a_rebalance_is_not_held_up_by_a_waiting_retry(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    one, settings, hits = await _waiting_retry(worker_env, origin, make_worker,
                                               tmp_path / "one.log")
    other = make_worker({**worker_env, "WORKER_WEB_PORT": str(embedded.free_port()),
                         "METRICS_PORT": str(embedded.free_port())},
                        tmp_path / "other.log").start()
    # The waiting retry is handed back (re-published with its history) instead of holding
    # the rebalance for the rest of its 20 s.
    await asyncio.to_thread(wait_until, lambda: bool(one.log_entries(stage="handback")), 15,
                            "the waiting retry to be handed back")
    processed, dead = await collect(settings, expected=1, timeout=60, settle=2)
    assert dead == [] and [p.attempts for p in processed] == [2]
    assert len(hits) == 2 and 20 <= hits[1] - hits[0] < 20 + SLACK
    assert one.stop() == 0 and other.stop() == 0
