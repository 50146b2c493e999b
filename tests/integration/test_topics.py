"""Reading a topic to its end on the real broker, whose reported end can fall short of it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams import embedded
from streams.topics import read_through

pytestmark = pytest.mark.integration


async def _topic(servers: str) -> str:
    name = f"read-through-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


async def _read(servers: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        return [m.value or b"" async for _, messages in read_through(
            consumer, [TopicPartition(topic, 0)], max_records=2) for m in messages]
    finally:
        await consumer.stop()


async def test_records_batched_by_the_producer_are_all_read(broker: embedded.Service) -> None:
    servers = f"127.0.0.1:{broker.port}"
    topic = await _topic(servers)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=200)
    await producer.start()
    try:  # one batch of one, then one of five (the worker's sends batch the same way)
        await producer.send_and_wait(topic, b"0")
        sent = [await producer.send(topic, str(i).encode()) for i in range(1, 6)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    assert await _read(servers, topic) == [str(i).encode() for i in range(6)]


async def test_a_busy_topic_still_ends_the_read(broker: embedded.Service) -> None:
    servers = f"127.0.0.1:{broker.port}"
    topic = await _topic(servers)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    stop = asyncio.Event()

    async def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            await producer.send_and_wait(topic, str(n).encode())
            n += 1
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(keep_writing())
    try:
        await asyncio.sleep(0.5)
        values = await _read(servers, topic)  # a read that never ended would hit the timeout
        assert values[:5] == [str(i).encode() for i in range(5)]
        assert values == [str(i).encode() for i in range(len(values))]  # in order, no gaps
    finally:
        stop.set()
        await writer
        await producer.stop()
