"""The Faust application: topics, the ``catalog`` table, the agent and a catalog web view.

``create_app`` builds everything from one ``Settings``; nothing here reads the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.web import Request, Response, View

from processors import render
from processors.presets import load_presets
from processors.spec import Limits
from streams import codec, metrics, records, retry
from streams.broker import client_options, faust_credentials
from streams.catalog import open_catalog
from streams.catalog.sink import ChangelogSink
from streams.fetch import make_fetcher
from streams.jobstate import JobState
from streams.service import Deps, Source, handle
from streams.settings import Settings
from streams.store import open_store
from streams.store.s3 import S3Store
from streams.webhooks import Webhooks

log = logging.getLogger("covers.app")

# Seconds between attempts to hand an output to Kafka; the last repeats until it works.
SEND_RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)


def create_app(settings: Settings) -> faust.App:
    Path(settings.worker_data_dir).mkdir(parents=True, exist_ok=True)  # Faust will not make it
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",  # the table is rebuilt from its changelog topic on start
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        producer_acks=-1,
        producer_enable_idempotence=settings.kafka_idempotence,
        broker_session_timeout=settings.kafka_session_timeout_sec,
        broker_heartbeat_interval=max(1, settings.kafka_session_timeout_sec // 5),
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_advertised_host or settings.worker_web_host,
        datadir=settings.worker_data_dir,
        # A retry tier's agent may wait its whole delay on one event: not a stuck commit.
        broker_commit_livelock_soft_timeout=max((*settings.retry_delays, 0)) + 300,
        version=1,
    )

    def topic(*names: str, **kwargs: Any) -> faust.TopicT:
        # internal=True: the worker declares the topic, with the partitions the table needs.
        return app.topic(*names, partitions=settings.topic_partitions, internal=True, **kwargs)

    # Retries carry the input's bytes unchanged and name its topic in a header, so one schema
    # decodes the inputs and every retry tier.
    input_schema = codec.InputSchema({settings.topic_book_enriched: codec.BOOK_ENRICHED,
                                      settings.topic_cover_requested: codec.COVER_REQUESTED})
    input_names = set(input_schema.codecs_by_topic)
    inputs = topic(settings.topic_book_enriched, settings.topic_cover_requested,
                   schema=input_schema)
    retry_topics = [topic(name, schema=input_schema) for name in settings.retry_topics]
    processed_topic = topic(settings.topic_cover_processed, key_serializer="raw",
                            value_serializer=codec.FaustCodec(codec.COVER_PROCESSED))
    dead_letter_topic = topic(settings.topic_dead_letter, key_serializer="raw",
                              value_serializer=codec.FaustCodec(codec.DEAD_LETTER))
    # Keys are book ids (str) and values JSON cover records: Faust's table serializers are JSON.
    catalog = app.Table("catalog", default=None, partitions=settings.topic_partitions,
                        key_type=str)

    class KafkaOutputs:
        async def processed(self, key: str, record: records.CoverProcessed) -> None:
            await deliver(processed_topic, key, record)

        async def dead_letter(self, key: str | None, record: records.CoverDeadLetter,
                              headers: retry.Headers = ()) -> None:
            await deliver(dead_letter_topic, key, record, headers=headers)

        async def retry(self, tier: int, key: bytes | None, value: bytes | None,
                        headers: retry.Headers) -> None:
            await deliver(retry_topics[tier - 1], key, value, headers=headers)

    outputs = KafkaOutputs()
    shared = SharedDeps(settings)
    guard = OffsetGuard(app, settings, input_schema)

    @app.on_partitions_revoked.connect
    async def forget_offsets(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        guard.forget()

    async def handle_with_skipped(event: faust.EventT[Any], deps: Deps) -> None:
        """Handle the offsets the consumer skipped before this event, then the event."""
        message = event.message
        async for value, source in guard.skipped_before(message):
            await handle(value, source, deps, outputs, catalog)
        await handle(event.value, source_of(message), deps, outputs, catalog)

    # Several events at once, so fetches and uploads overlap the renders and every render
    # thread stays busy; a book's catalog record still only moves to a newer version.
    concurrency = settings.worker_concurrency or 2 * render_threads(settings)

    @app.agent(inputs, concurrency=concurrency)
    async def covers(stream: faust.StreamT[Any]) -> None:
        async with shared.use() as deps:
            async for event in stream.events():
                await handle_with_skipped(event, deps)

    def retry_agent(tier: int) -> Callable[[faust.StreamT[Any]], Awaitable[None]]:
        async def run(stream: faust.StreamT[Any]) -> None:
            async with shared.use() as deps:
                async for event in stream.events():
                    source = source_of(event.message)
                    due = retry.history(source.headers, source.topic, source.partition,
                                        source.offset, source.timestamp).due
                    if await _wait_until(app, due):
                        await handle_with_skipped(event, deps)
                    else:  # a rebalance or a stop: hand the event back, unchanged, and let go
                        await outputs.retry(tier, source.key, source.value, source.headers)
                        log.info("waiting retry handed back", extra={
                            "book_id": (source.key or b"").decode(errors="replace"),
                            "stage": "handback", "tier": tier})
        return run

    # One event at a time per tier: events reach the offset guard in offset order only if
    # each waits for its due time in turn (Retry-After makes due times differ).
    for tier, retry_topic in enumerate(retry_topics, 1):
        app.agent(retry_topic, name=f"covers.retry_{tier}")(retry_agent(tier))

    @app.task  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def catalog_sink() -> None:
        sink = open_catalog(settings.catalog_url, settings.catalog_layout)
        try:
            await ChangelogSink(settings, sink).run()
        finally:
            await sink.close()

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def catch_up_job_state() -> None:
        if shared.deps is not None:  # states kept while Redis was unreachable
            await shared.deps.jobs.flush()

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # faust leaves it untyped
    async def measure_lag() -> None:
        for tp in app.consumer.assignment():
            if tp.topic in input_names:
                position, highwater = await app.consumer.position(tp), app.consumer.highwater(tp)
                if position is not None and highwater is not None:
                    metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                        max(0, highwater - position))

    app.monitor = metrics.faust_monitor()  # Faust's own stream, table and producer metrics

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})  # the event loop answers: the process is alive

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        checks = {"partitions": any(tp.topic in input_names
                                    for tp in app.consumer.assignment()),
                  **await dependencies_reachable(settings)}
        ready = all(checks.values())
        return web.json({"ready": ready, "checks": checks}, status=200 if ready else 503)

    @app.page("/catalog/{book_id}/")
    @app.table_route(table=catalog, match_info="book_id")
    async def catalog_view(web: View, request: Request, book_id: str) -> Response:
        record = catalog.get(book_id)
        if record is None:
            return web.json({"error": "not_found", "book_id": book_id}, status=404)
        return web.json(record)

    return app


async def deliver(topic: faust.TopicT, key: str | bytes | None, value: Any,
                  delays: tuple[float, ...] = SEND_RETRY_DELAYS,
                  headers: retry.Headers = ()) -> None:
    """Send and wait for the broker's ack, retrying for as long as it takes: the input event
    stays uncommitted meanwhile (aiokafka's flush does not raise for failed batches), and
    giving up would let Faust ack an input whose outcome was never written. A stop cancels the
    wait, and the unacked input is read again after the restart."""
    raw_key = key.encode() if isinstance(key, str) else key
    for attempt, delay in enumerate(itertools.chain(delays, itertools.repeat(delays[-1])), 1):
        try:
            pending = await topic.send(key=raw_key, value=value, headers=list(headers) or None)
            await pending
            return
        except Exception as exc:
            log.warning("send to %s failed (attempt %d), retrying in %ss: %r",
                        topic.get_topic_name(), attempt, delay, exc)
            await asyncio.sleep(delay)


def source_of(message: Any) -> Source:
    """Where an event came from, with its raw bytes and headers (for retries and dead letters)."""
    return Source(message.topic, message.partition, message.offset, message.key, message.value,
                  message.timestamp, retry.normalize(message.headers))


async def _wait_until(app: faust.App, due: float | None, step: float = 0.5) -> bool:
    """Sleep until ``due`` (epoch seconds); False as soon as the worker stops or rebalances,
    so a retry waiting for its time never holds up either."""
    while due is not None and (left := due - time.time()) > 0:
        if app.rebalancing or app.should_stop:
            return False
        await asyncio.sleep(min(step, left))
    return not app.should_stop


class OffsetGuard:
    """Reads back offsets the consumer skipped, before their successor is handled and acked.

    faust-streaming can resume a stream between a rebalance and the seek to the committed
    offsets (faust#216, #221); the events fetched in that window are dropped, the next one
    arrives with a higher offset, and Faust records the hole as a "gap" that counts as acked
    (#606) -- committing past events no agent has seen. Input and retry topics are never
    compacted or transactional, so their offsets are contiguous: a hole is such a skip. The
    guard notices it, reads the skipped events itself and hands them over first, so the gap is
    only acked (with the event after it) once every event in it is handled."""

    def __init__(self, app: faust.App, settings: Settings, schema: codec.InputSchema) -> None:
        self.app = app
        self.settings = settings
        self.schema = schema
        self.next: dict[Any, int] = {}  # topic partition -> the offset expected next
        self.filling: dict[Any, asyncio.Event] = {}  # partitions whose hole is being read

    def forget(self) -> None:
        self.next.clear()  # partitions move on a rebalance; start again from the commits

    async def skipped_before(self, message: Any) -> AsyncIterator[tuple[Any, Source]]:
        # Runs up to its first await in the order the stream hands out events, so the
        # bookkeeping below sees a partition's offsets in order, even with concurrent actors.
        tp, offset = message.tp, message.offset
        expected = self.next.get(tp)
        if expected is None:  # first event since the assignment: expect the committed offset
            # (Faust's record of the group's commits, read at the assignment; None if none)
            expected = getattr(self.app.consumer, "_committed_offset", {}).get(tp)
        self.next[tp] = max(offset + 1, self.next.get(tp, 0))
        if expected is None or offset <= expected:
            if tp in self.filling:  # later events wait: their acks would ack the hole too
                await self.filling[tp].wait()
            return
        filled = self.filling[tp] = asyncio.Event()
        try:
            log.warning("the consumer skipped offsets; reading them directly", extra={
                "topic": tp.topic, "partition": tp.partition, "from": expected, "to": offset})
            metrics.SKIPPED_OFFSETS.labels(tp.topic).inc(offset - expected)
            async for record in read_range(self.settings, tp, expected, offset):
                yield (self.schema.decode_value(record.topic, record.headers, record.value),
                       source_of(record))
        finally:
            if self.filling.get(tp) is filled:
                del self.filling[tp]
            filled.set()


async def read_range(settings: Settings, tp: Any, start: int, end: int,
                     ) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of one partition from offset ``start`` up to ``end`` (exclusive)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(tp.topic, tp.partition)
        consumer.assign([partition])
        consumer.seek(partition, start)
        while await consumer.position(partition) < end:
            for records_ in (await consumer.getmany(partition, timeout_ms=1000)).values():
                for record in records_:
                    if start <= record.offset < end:
                        yield record
    finally:
        await consumer.stop()


class SharedDeps:
    """One set of dependencies for every agent, opened by the first and closed by the last."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.deps: Deps | None = None
        self.users = 0

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[Deps]:
        if self.deps is None:
            self.deps = build_deps(self.settings)
        self.users += 1
        try:
            yield self.deps
        finally:
            self.users -= 1
            if self.users == 0 and self.deps is not None:
                deps, self.deps = self.deps, None
                await deps.close()


async def dependencies_reachable(settings: Settings, timeout: float = 2.0) -> dict[str, bool]:
    """Whether Redis, the object store and the catalog database answer within ``timeout``
    (fresh connections, so a cached client cannot hide an outage)."""

    async def answers(check: Callable[[], Awaitable[Any]],
                      close: Callable[[], Awaitable[None]]) -> bool:
        try:
            async with asyncio.timeout(timeout):
                result = await check()
                return result is not False
        except Exception:  # unreachable, refused, misconfigured: not ready, whatever the cause
            return False
        finally:
            await close()

    jobs = JobState(settings.redis_url, settings.job_ttl_sec)
    store = open_store(settings)
    catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
    redis_ok, store_ok, catalog_ok = await asyncio.gather(
        answers(jobs.ping, jobs.close), answers(store.check, store.close),
        answers(catalog.check, catalog.close))
    return {"redis": redis_ok, "store": store_ok, "catalog": catalog_ok}


def render_threads(settings: Settings) -> int:
    return settings.render_threads or os.cpu_count() or 1


def build_deps(settings: Settings) -> Deps:
    store = open_store(settings)
    fetcher = make_fetcher(settings, blobs=store if isinstance(store, S3Store) else None)
    # Renders run side by side, one per core, each on one libvips thread: that keeps every
    # core busy without libvips' own threads competing with the pool's.
    threads = render_threads(settings)
    render.configure(threads=1)
    return Deps(
        fetcher=fetcher,
        store=store,
        jobs=JobState(settings.redis_url, settings.job_ttl_sec),
        render_pool=ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render"),
        limits=Limits(max_pixels=settings.max_image_pixels,
                      max_frames=settings.max_image_frames,
                      max_memory_mb=settings.max_decode_memory_mb),
        presets=load_presets(settings.presets_file or None),
        webhooks=Webhooks(fetcher, settings.webhook_secret),
        retry_delays=settings.retry_delays,
        group=settings.app_id,
    )
