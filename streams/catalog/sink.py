"""From the ``catalog`` table's changelog to the catalog database.

Every change of the Faust table is a record on its changelog topic (key and value JSON, keyed
by book id). ``ChangelogSink`` reads that topic in a consumer group of its own, gathers a batch
(``CATALOG_BATCH_SIZE`` records or ``CATALOG_BATCH_MS`` after the first), writes it in one
transaction, and only then commits the offsets: a crash re-reads the batch, and the versioned
upsert makes the second write change nothing. A transient database error retries the same batch
with backoff, however long it takes; nothing is read past it meanwhile, so no change is lost or
reordered. ``backfill`` re-writes the database from the whole changelog.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from processors import errors
from streams import metrics
from streams.broker import client_options
from streams.catalog import COLUMNS, CatalogSink
from streams.settings import Settings
from streams.topics import read_through

log = logging.getLogger("covers.catalog")

RETRY_DELAYS = (0.5, 1, 2, 5, 10, 30)  # then every 30 s until the database is back


def changelog_topic(settings: Settings) -> str:
    """The changelog topic Faust keeps for the ``catalog`` table."""
    return f"{settings.app_id}-catalog-changelog"


def decode(message: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
    """A cover record from a changelog message; None for tombstones and foreign values."""
    if message.value is None:
        return None
    try:
        record = json.loads(message.value)
    except ValueError:
        record = None
    if not isinstance(record, dict) or any(name not in record for name in COLUMNS):
        log.error("skipping a changelog value that is not a cover record: partition=%s "
                  "offset=%s", message.partition, message.offset)
        return None
    return record


class ChangelogSink:
    def __init__(self, settings: Settings, catalog: CatalogSink) -> None:
        self.settings = settings
        self.catalog = catalog
        self.topic = changelog_topic(settings)
        self.batch_size = settings.catalog_batch_size
        self.batch_wait = settings.catalog_batch_ms / 1000

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            self.topic, **client_options(s), group_id=f"{s.app_id}-catalog-sink",
            client_id=f"{s.app_id}-catalog-sink", enable_auto_commit=False,
            auto_offset_reset="earliest", metadata_max_age_ms=5000,
            session_timeout_ms=s.kafka_session_timeout_sec * 1000,
            heartbeat_interval_ms=max(1000, s.kafka_session_timeout_sec * 200),
            # A database outage holds a batch for as long as it lasts; stay in the group.
            max_poll_interval_ms=24 * 3600 * 1000)

    async def run(self) -> None:
        """Sink until cancelled."""
        consumer = self._consumer()
        await consumer.start()
        log.info("catalog sink reading %s", self.topic)
        try:
            while True:
                batch = await self._next_batch(consumer)
                if batch:
                    await self._write(batch)
                try:
                    await consumer.commit()
                except CommitFailedError as exc:  # a rebalance: the new owner re-reads them
                    log.warning("catalog sink commit failed, batch will be re-read: %r", exc)
                await self._measure_lag(consumer)
        finally:
            await consumer.stop()

    async def _next_batch(self, consumer: AIOKafkaConsumer) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline: float | None = None
        while len(batch) < self.batch_size:
            wait = 1.0 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            fetched = await consumer.getmany(timeout_ms=int(wait * 1000),
                                             max_records=self.batch_size - len(batch))
            for messages in fetched.values():
                batch += filter(None, map(decode, messages))
            if deadline is None:
                if not fetched:
                    return batch  # idle: let the caller commit and measure
                deadline = time.monotonic() + self.batch_wait
        return batch

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        delays = itertools.chain(RETRY_DELAYS, itertools.repeat(RETRY_DELAYS[-1]))
        for attempt, delay in enumerate(delays):
            started = time.perf_counter()
            try:
                changed = await self.catalog.upsert_many(batch)
            except errors.TransientError as exc:
                metrics.CATALOG_SINK_RETRIES.inc()
                log.warning("catalog write failed (attempt %d, %d records), retrying in %ss: %s",
                            attempt + 1, len(batch), delay, exc.message)
                await asyncio.sleep(delay)
                continue
            elapsed = time.perf_counter() - started
            metrics.CATALOG_SINK_BATCH_SECONDS.observe(elapsed)
            metrics.STAGE_DURATION.labels("sink").observe(elapsed)  # beside the job stages
            metrics.CATALOG_SINK_ROWS.labels("changed").inc(changed)
            metrics.CATALOG_SINK_ROWS.labels("unchanged").inc(len(batch) - changed)
            log.debug("catalog batch written: records=%d changed=%d", len(batch), changed)
            return

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                position = await consumer.position(tp)
                metrics.CATALOG_SINK_LAG.labels(str(tp.partition)).set(highwater - position)


Progress = Callable[[str, int, int], None]  # (phase, done, total): "read", then "write"


async def backfill(settings: Settings, catalog: CatalogSink,
                   progress: Progress | None = None) -> tuple[int, int]:
    """Re-write the catalog database from the whole changelog (e.g. after a restore from an old
    backup); newer rows already there stay. Returns (books, rows changed)."""
    topic = changelog_topic(settings)
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaError(f"no changelog topic {topic!r}: has a worker with APP_ID="
                             f"{settings.app_id} ever run?")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        latest: dict[str, dict[str, Any]] = {}
        reading = (lambda done, total: progress("read", done, total)) if progress else None
        async for _, messages in read_through(consumer, tps, max_records=1000,
                                              progress=reading):
            for message in messages:
                record = decode(message)
                if record is not None:
                    latest[record["book_id"]] = record
    finally:
        await consumer.stop()
    changed = 0
    records = list(latest.values())
    for start in range(0, len(records), settings.catalog_batch_size):
        changed += await catalog.upsert_many(records[start:start + settings.catalog_batch_size])
        if progress:
            progress("write", min(start + settings.catalog_batch_size, len(records)),
                     len(records))
    return len(records), changed
