"""Publishing inputs and collecting outcomes on the real broker."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from streams import codec, records
from streams.broker import client_options
from streams.settings import Settings
from streams.topics import read_through


async def send(settings: Settings, topic: str, items: list[tuple[str, bytes]],
               headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def publish_books(settings: Settings, books: list[records.BookEnriched],
                        headers: list[tuple[str, bytes]] | None = None) -> None:
    await send(settings, settings.topic_book_enriched,
               [(b.book_id, codec.BOOK_ENRICHED.encode(b)) for b in books], headers)


async def read_all(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every message of ``topic`` so far (raw: key, value, headers, offsets)."""
    consumer = AIOKafkaConsumer(**client_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        async for _, messages in read_through(consumer, partitions):
            found.extend(messages)
    finally:
        await consumer.stop()
    return found


async def collect(settings: Settings, expected: int, timeout: float,
                  settle: float = 0.0) -> tuple[list[records.CoverProcessed],
                                                list[records.CoverDeadLetter]]:
    """Read both output topics from the start until ``expected`` outcomes arrived, then keep
    reading for ``settle`` seconds more (to catch outcomes that should not be there)."""
    consumer = AIOKafkaConsumer(settings.topic_cover_processed, settings.topic_dead_letter,
                                **client_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    processed: list[records.CoverProcessed] = []
    dead: list[records.CoverDeadLetter] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is None and len(processed) + len(dead) >= expected:
                settle_until = time.monotonic() + settle
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                for msg in messages:
                    if tp.topic == settings.topic_cover_processed:
                        processed.append(codec.COVER_PROCESSED.decode(msg.value))
                    else:
                        dead.append(codec.DEAD_LETTER.decode(msg.value))
    finally:
        await consumer.stop()
    return processed, dead
