"""The guard against offsets the consumer skips after a rebalance (faust#216, #606), on the
real broker: a hole in the offsets is read back, in order, before the event after it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams import codec, records
from streams.app import OffsetGuard
from streams.settings import Settings, load
from streams.topics import ensure_topics
from tests.integration.kafka import publish_books, read_all

pytestmark = pytest.mark.integration


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


async def test_a_hole_is_read_back_in_order(worker_env: dict[str, str]) -> None:
    env = {k.lower(): v for k, v in worker_env.items() if k.lower() in Settings.model_fields}
    settings = load(**{**env, "topic_partitions": "1"})
    await ensure_topics(settings)
    books = [records.BookEnriched(f"g{i}-{uuid.uuid4().hex[:4]}", f"https://x/{i}.jpg")
             for i in range(10)]
    await publish_books(settings, books, headers=[("trace-id", b"t")])
    assert len(await read_all(settings, settings.topic_book_enriched)) == 10
    schema = codec.InputSchema({settings.topic_book_enriched: codec.BOOK_ENRICHED})
    committed: dict[Any, int] = {}
    app: Any = SimpleNamespace(consumer=SimpleNamespace(_committed_offset=committed))
    guard = OffsetGuard(app, settings, schema)

    async def skipped(offset: int) -> list[tuple[Any, Any]]:
        message = _Message(settings.topic_book_enriched, 0, offset)
        return [item async for item in guard.skipped_before(message)]

    assert await skipped(0) == [] and await skipped(1) == []  # contiguous: nothing to do
    found = await skipped(7)  # 2..6 never reached the stream
    assert [value for value, _ in found] == books[2:7]
    assert [source.offset for _, source in found] == [2, 3, 4, 5, 6]
    assert all(source.headers == (("trace-id", b"t"),) for _, source in found)
    assert await skipped(8) == [] and await skipped(3) == []  # a re-read after a seek back

    # With concurrent actors, a later event waits while a hole is read back: acking it first
    # would make Faust count the hole as acked before its events are handled.
    reading = guard.skipped_before(_Message(settings.topic_book_enriched, 0, 9))
    guard.next[TopicPartition(settings.topic_book_enriched, 0)] = 8  # 8 went missing
    first = await anext(reading)
    assert first[1].offset == 8
    later = asyncio.create_task(skipped(9))
    await asyncio.sleep(0.2)
    assert not later.done()
    assert [item async for item in reading] == []
    assert await later == []

    # After a rebalance the first event is compared with the group's committed offset.
    guard.forget()
    committed[TopicPartition(settings.topic_book_enriched, 0)] = 8
    assert [s.offset for _, s in await skipped(9)] == [8]
