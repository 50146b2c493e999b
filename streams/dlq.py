"""The dead-letter topic for operators: read it, pick letters, replay them to their input topic.

A replay re-publishes the original key, value and headers, bytes unchanged, plus a
``covers-replayed-from`` header naming the letter and the original event time (the catalog
orders a book's covers by it, so a replayed old cover never replaces a newer one). Replays
are idempotent downstream: a cover that is already done is recognised as a duplicate, so
replaying the same letters twice writes nothing new the second time.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from processors import errors
from streams import codec, records, retry
from streams.broker import client_options
from streams.settings import Settings
from streams.topics import read_through

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Letter:
    partition: int
    offset: int
    record: records.CoverDeadLetter
    headers: retry.Headers

    @property
    def ref(self) -> str:
        """How operators name a letter: ``partition:offset`` of the dead-letter topic."""
        return f"{self.partition}:{self.offset}"


async def read_letters(settings: Settings, progress: Progress | None = None
                       ) -> tuple[list[Letter], int]:
    """Every dead letter up to now, oldest first per partition, and how many could not be
    decoded (those are counted, never dropped silently)."""
    consumer = AIOKafkaConsumer(**client_options(settings),
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    letters: list[Letter] = []
    unreadable = 0
    try:
        found = await consumer.topics()
        if settings.topic_dead_letter not in found:
            return [], 0
        numbers = consumer.partitions_for_topic(settings.topic_dead_letter) or set()
        partitions = [TopicPartition(settings.topic_dead_letter, p) for p in sorted(numbers)]
        async for tp, messages in read_through(consumer, partitions, progress=progress):
            for msg in messages:
                try:
                    record = codec.DEAD_LETTER.decode(msg.value or b"")
                except codec.DecodeError:
                    unreadable += 1
                    continue
                letters.append(Letter(tp.partition, msg.offset, record,
                                      retry.normalize(msg.headers)))
    finally:
        await consumer.stop()
    letters.sort(key=lambda letter: (letter.partition, letter.offset))
    return letters, unreadable


def select(letters: Iterable[Letter], refs: Iterable[str] = (), reasons: Iterable[str] = (),
           books: Iterable[str] = (), include_undecodable: bool = False) -> list[Letter]:
    """The letters named by ``refs`` (``partition:offset``), or else all matching the reason
    and book filters. Poison pills (``undecodable_event``) are left out unless asked for or
    named: replaying them only dead-letters them again."""
    wanted, reasons, books = set(refs), set(reasons), set(books)
    chosen = []
    for letter in letters:
        record = letter.record
        if wanted:
            if letter.ref in wanted:
                chosen.append(letter)
            continue
        if reasons and record.reason_code not in reasons:
            continue
        if books and record.book_id not in books:
            continue
        if record.reason_code == errors.UNDECODABLE_EVENT and not (
                include_undecodable or errors.UNDECODABLE_EVENT in reasons):
            continue
        chosen.append(letter)
    return chosen


def replay_problem(letter: Letter, settings: Settings) -> str | None:
    """Why a letter cannot be replayed, or None."""
    inputs = (settings.topic_book_enriched, settings.topic_cover_requested)
    if letter.record.source_topic not in inputs:
        return f"its source topic {letter.record.source_topic!r} is not an input topic"
    if letter.record.original_value is None:
        return "it carries no original event"
    return None


async def replay(settings: Settings, letters: list[Letter],
                 progress: Progress | None = None) -> int:
    """Publish each letter's original event to its input topic; returns how many were sent
    (every send acknowledged by the broker). Letters with a ``replay_problem`` are skipped."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    sent = 0
    try:
        for done, letter in enumerate(letters, 1):
            if replay_problem(letter, settings) is None:
                record = letter.record
                headers = [(h.key, h.value or b"") for h in record.original_headers]
                headers.append((retry.REPLAYED_FROM, letter.ref.encode()))
                if record.original_timestamp is not None:  # the catalog orders by it
                    headers.append((retry.ORIGINAL_TIMESTAMP, str(int(
                        record.original_timestamp.timestamp() * 1000)).encode()))
                await producer.send_and_wait(record.source_topic, record.original_value,
                                             key=record.original_key, headers=headers)
                sent += 1
            if progress:
                progress(done, len(letters))
    finally:
        await producer.stop()
    return sent


def describe(letter: Letter, settings: Settings) -> dict[str, Any]:
    """A letter as JSON-ready data, with its original event decoded when possible."""
    record = letter.record
    event: Any = None
    source_codec: codec.RecordCodec[Any] = (
        codec.COVER_REQUESTED if record.source_topic == settings.topic_cover_requested
        else codec.BOOK_ENRICHED)
    if record.original_value is not None:
        try:
            decoded = source_codec.decode(record.original_value)
            event = {k: v for k, v in vars(decoded).items() if v not in (None, (), {}, "")}
        except codec.DecodeError as exc:
            event = {"undecodable": str(exc),
                     "bytes": record.original_value[:200].decode("latin-1")}
    return {
        "ref": letter.ref, "job_id": record.job_id, "book_id": record.book_id,
        "reason_code": record.reason_code, "error_class": record.error_class,
        "message": record.message, "transient": record.transient, "attempts": record.attempts,
        "first_failure_at": record.first_failure_at.isoformat(),
        "last_failure_at": record.last_failure_at.isoformat(),
        "source": f"{record.source_topic}/{record.source_partition}@{record.source_offset}",
        "original_key": record.original_key.decode(errors="replace")
        if record.original_key else None,
        "original_headers": {h.key: (h.value or b"").decode(errors="replace")
                             for h in record.original_headers},
        "original_timestamp": record.original_timestamp.isoformat()
        if record.original_timestamp else None,
        "worker_version": record.worker_version,
        "event": event,
        "headers": {k: _header_value(k, v) for k, v in letter.headers},
    }


def _header_value(key: str, value: bytes) -> Any:
    """Spring Kafka's binary headers as numbers, every other header as text."""
    if key == "kafka_dlt-original-partition" and len(value) == 4:
        return struct.unpack(">i", value)[0]
    if key in ("kafka_dlt-original-offset", "kafka_dlt-original-timestamp") and len(value) == 8:
        return struct.unpack(">q", value)[0]
    return value.decode(errors="replace")
