"""Chaos: the worker killed, its broker link, S3 and Redis cut, a rebalance mid-batch. After
each, every input has exactly one final outcome and nothing is lost.

"Exactly one final outcome" under at-least-once delivery: a book may see its
``cover_processed`` more than once after a crash (the outcome was sent, the input not yet
committed), but never a dead letter beside it, never two different results, and the objects a
repeat writes are the very same ones.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from streams import embedded, records
from streams.service import job_for
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, scrape, wait_until
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books
from tests.integration.proxy import TcpProxy

pytestmark = pytest.mark.integration


def _books(origin: Origin, n: int) -> list[records.BookEnriched]:
    tag = uuid.uuid4().hex[:6]
    books = []
    for i in range(n):
        image = encode(gradient(48 + i % 7, 72 + i % 5), "jpg")  # small: the batch is long
        books.append(records.BookEnriched(f"chaos-{i}-{tag}", origin.add(f"/{tag}/{i}.jpg",
                                                                           image)))
    return books


def _done(worker: Worker) -> int:
    return len(worker.log_entries(stage="done"))


async def _exactly_once(settings: Settings, books: list[records.BookEnriched],
                        timeout: float = 120) -> None:
    """Wait for every book's outcome and check it is one, processed, consistent result."""
    processed, dead = await collect(settings, expected=len(books), timeout=timeout, settle=3)
    assert dead == [], [(d.book_id, d.reason_code, d.message) for d in dead]
    by_book: dict[str, list[records.CoverProcessed]] = defaultdict(list)
    for event in processed:
        by_book[event.book_id].append(event)
    wanted = {b.book_id for b in books}
    assert set(by_book) == wanted, f"{len(wanted - set(by_book))} inputs without an outcome"
    for book_id, events in by_book.items():
        results = {(e.job_id, e.source_sha256, tuple(r.key for r in e.renditions))
                   for e in events}
        assert len(results) == 1, f"{book_id}: {len(results)} different results"


def _objects_are_unique(store: Path, books: list[records.BookEnriched]) -> None:
    """Content-addressed keys: a repeat wrote the same object, never a second one."""
    for book in books:
        renditions = [p for p in (store / book.book_id).rglob("*")
                      if p.is_file() and not p.name.endswith(".json")]
        assert len(renditions) == 3, (book.book_id, renditions)


async def _batch_a_third_done(make_worker: type[Worker], env: dict[str, str], log: Path,
                              books: list[records.BookEnriched]) -> tuple[Worker, Settings]:
    """A worker started on ``env``, the books published, and a third of them done."""
    worker = make_worker(env, log).start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, books)
    await asyncio.to_thread(wait_until, lambda: _done(worker) >= len(books) // 3, 90,
                            "a third of the batch")
    return worker, settings


async def test_kill_9_mid_batch_and_restart(worker_env: dict[str, str], origin: Origin,
                                            make_worker: type[Worker], tmp_path: Path) -> None:
    books = _books(origin, 200)
    first, settings = await _batch_a_third_done(make_worker, worker_env,
                                                tmp_path / "first.log", books)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    done_before = _done(first)
    assert done_before < len(books), "killed too late to prove anything"
    second = make_worker(worker_env, tmp_path / "second.log").start()
    await _exactly_once(settings, books)
    _objects_are_unique(tmp_path / "store", books)
    assert second.stop() == 0


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Iterator[tuple[embedded.Service, TcpProxy]]:
    """A broker of its own, reachable only through a proxy the test can cut."""
    broker_port = embedded.free_port()
    with TcpProxy(broker_port) as proxy:
        service = embedded.broker(tmp_path, broker_port, advertised_port=proxy.port).start()
        try:
            yield service, proxy
        finally:
            service.stop()


async def test_broker_link_cut_mid_batch(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker], tmp_path: Path,
        proxied_broker: tuple[embedded.Service, TcpProxy]) -> None:
    _, proxy = proxied_broker
    worker_env["KAFKA_BROKERS"] = f"{embedded.LOOPBACK}:{proxy.port}"
    books = _books(origin, 90)
    worker, settings = await _batch_a_third_done(make_worker, worker_env,
                                                 tmp_path / "worker.log", books)
    proxy.cut()
    cut_at = _done(worker)
    await asyncio.sleep(10)
    proxy.restore()
    assert cut_at < len(books)
    await _exactly_once(settings, books)
    _objects_are_unique(tmp_path / "store", books)
    assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
    assert worker.stop() == 0


async def test_s3_down_mid_batch_is_retried_not_dead_lettered(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker], tmp_path: Path,
        moto_endpoint: str) -> None:
    port = int(moto_endpoint.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        worker_env.update({
            "STORAGE_URL": f"s3://chaos-{uuid.uuid4().hex[:8]}",
            "S3_ENDPOINT": f"http://{embedded.LOOPBACK}:{proxy.port}",
            "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test",
            "S3_CREATE_BUCKET": "true",
            # The retry budget: five attempts over 2+4+8+16 = 30 s, beyond a 10 s outage.
            "RETRY_DELAYS_SEC": "2,4,8,16"})
        books = _books(origin, 60)
        worker, settings = await _batch_a_third_done(make_worker, worker_env,
                                                     tmp_path / "worker.log", books)
        proxy.cut()
        await asyncio.sleep(10)
        proxy.restore()
        await _exactly_once(settings, books)
        retried = scrape(worker).get(
            'cover_retries_total{reason="storage_unavailable",tier="1"}', 0)
        assert retried >= 1, "the outage was not noticed"
        assert worker.stop() == 0


async def test_redis_down_mid_batch_does_not_stop_processing(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker], tmp_path: Path,
        redis_server: embedded.Service) -> None:
    with TcpProxy(redis_server.port) as proxy:
        worker_env["REDIS_URL"] = f"redis://{embedded.LOOPBACK}:{proxy.port}/0"
        books = _books(origin, 60)
        worker = make_worker(worker_env, tmp_path / "worker.log").start()
        settings = worker.settings
        await ensure_topics(settings)
        await publish_books(settings, books[:20])
        await asyncio.to_thread(wait_until, lambda: _done(worker) >= 10, 60, "some jobs")
        proxy.cut()
        await publish_books(settings, books[20:])
        # Processing goes on while Redis is unreachable ...
        await asyncio.to_thread(wait_until, lambda: _done(worker) >= 40, 60,
                                "jobs done without Redis")
        proxy.restore()
        await _exactly_once(settings, books)
        # ... and the job state catches up once it is back.
        state = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        jobs = [job_for(b) for b in books]

        def converged() -> bool:
            return all(j is not None and state.hget(f"covers:job:{j.job_id}", "state") == "done"
                       for j in jobs)

        await asyncio.to_thread(wait_until, converged, 30, "the job state to catch up")
        state.close()
        assert worker.log_entries(message="job state caught up")
        assert worker.stop() == 0


async def test_rebalance_when_one_of_two_workers_stops(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    books = _books(origin, 120)
    one = make_worker(worker_env, tmp_path / "one.log").start()
    other_env = {**worker_env, "WORKER_WEB_PORT": str(embedded.free_port()),
                 "METRICS_PORT": str(embedded.free_port())}
    other = make_worker(other_env, tmp_path / "other.log").start()
    settings = one.settings
    await ensure_topics(settings)
    await asyncio.to_thread(wait_until, lambda: bool(
        one.log_entries(logger="faust.worker") and other.log_entries(logger="faust.worker")),
        30, "both workers up")
    await publish_books(settings, books)
    await asyncio.to_thread(wait_until, lambda: _done(one) + _done(other) >= len(books) // 3,
                            90, "a third of the batch")
    started = time.monotonic()
    # SIGTERM: finish what is in flight, commit, leave the group, exit 0 -- quickly.
    assert one.stop(signal.SIGTERM, timeout=60) == 0, one.log()[-2000:]
    assert time.monotonic() - started < 30
    await _exactly_once(settings, books)
    _objects_are_unique(tmp_path / "store", books)
    assert _done(other) > 0
    assert other.stop() == 0
