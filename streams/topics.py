"""Creating the project's topics up front, so producers never auto-create them with the wrong
partition count (the ``catalog`` table needs its input and changelog topics co-partitioned)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


def topic_names(settings: Settings) -> list[str]:
    return [settings.topic_book_enriched, settings.topic_cover_requested,
            settings.topic_cover_processed, settings.topic_dead_letter, *settings.retry_topics]


async def ensure_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_brokers)
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
