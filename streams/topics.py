"""The project's topics: created up front, so producers never auto-create them with the wrong
partition count (the ``catalog`` table needs its input and changelog topics co-partitioned),
and read through to their end by the operator commands."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.broker import client_options
from streams.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic_book_enriched, settings.topic_cover_requested,
            settings.topic_cover_processed, settings.topic_dead_letter, *settings.retry_topics]


async def ensure_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, settings.topic_partitions, settings.topic_replication_factor)
                   for name in topic_names(settings) if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another process won the race
                pass
    finally:
        await admin.close()


async def read_through(consumer: AIOKafkaConsumer, partitions: list[TopicPartition],
                       max_records: int | None = None, drain_sec: float = 1.0,
                       progress: Callable[[int, int], None] | None = None,
                       ) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord]]]:
    """Every message of ``partitions`` from the beginning to their ends as of the call, as
    ``(partition, messages)`` fetches; ``consumer`` is started and assigned nothing else.
    ``progress(read, total)`` follows each fetch (``total`` grows if the ends were short).

    The end a broker reports is taken as a lower bound, never as a filter: the embedded broker
    reports the last record *batch*'s base offset + 1, one short per extra record in that
    batch. Once the positions reach the reported ends, the read goes on for at most
    ``drain_sec`` until a fetch comes back empty, which picks up the rest of the last batch
    (and anything that landed meanwhile) while keeping the read bounded on a busy topic.
    """
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    starts = {tp: await consumer.position(tp) for tp in partitions}
    ends = await consumer.end_offsets(partitions)
    total = sum(ends[tp] - starts[tp] for tp in partitions)
    read = 0
    left = {tp for tp in partitions if starts[tp] < ends[tp]}
    drain_until = None
    while partitions:
        if left:
            fetched = await consumer.getmany(*left, timeout_ms=1000, max_records=max_records)
        else:  # at the reported ends: drain what the last batches still hold
            drain_until = drain_until or time.monotonic() + drain_sec
            if time.monotonic() >= drain_until:
                return
            fetched = await consumer.getmany(*partitions, timeout_ms=200,
                                             max_records=max_records)
            if not any(fetched.values()):
                return
        read += sum(len(messages) for messages in fetched.values())
        if progress:
            progress(read, max(read, total))
        for item in fetched.items():
            yield item
        left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
