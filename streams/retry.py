"""Retry tiers and the history an event carries through them, in Kafka headers.

A transiently failed input is re-published, bytes unchanged, to the retry topic of its tier
(``cover_retry_1`` = the first of ``RETRY_DELAYS_SEC``...) with headers saying how many attempts
were made, when the first failed, when the next is due and where the event first came from.
After the last tier it becomes a dead letter. Dead letters also carry the ``kafka_dlt-*``
headers that Spring Kafka's tooling reads.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

Headers = tuple[tuple[str, bytes], ...]
AnyHeaders = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None  # as clients give them

PREFIX = "covers-"
ATTEMPTS = "covers-attempts"  # attempts made so far (all failed)
FIRST_FAILURE = "covers-first-failure-ms"
DUE = "covers-due-ms"  # epoch ms when the next attempt may start
REASON = "covers-last-reason"
ORIGINAL_TOPIC = "covers-original-topic"
ORIGINAL_PARTITION = "covers-original-partition"
ORIGINAL_OFFSET = "covers-original-offset"
ORIGINAL_TIMESTAMP = "covers-original-timestamp-ms"
REPLAYED_FROM = "covers-replayed-from"  # dead-letter partition:offset of a replayed event


def normalize(headers: AnyHeaders) -> Headers:
    """Headers as (key, value) pairs, whether they came as a list or a mapping."""
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return tuple(headers.items())
    return tuple(headers)


@dataclass(frozen=True)
class History:
    """What is known of an input's earlier attempts; an event from an input topic has none."""

    attempts: int  # failed attempts before this one
    first_failure: datetime | None
    topic: str  # the input topic the event was first published to
    partition: int
    offset: int
    timestamp: float | None  # seconds, the original event's Kafka timestamp
    due: float | None = None  # seconds; when this attempt may start


def history(headers: Iterable[tuple[str, bytes]], topic: str, partition: int, offset: int,
            timestamp: float | None) -> History:
    """The history in ``headers``; the event's own position when it has none."""
    found = {k: v for k, v in headers if k.startswith(PREFIX)}
    if ATTEMPTS not in found or ORIGINAL_TOPIC not in found:
        # A replayed dead letter starts afresh but keeps its original time (its cover must
        # not pass a newer one of the same book).
        stamp = found.get(ORIGINAL_TIMESTAMP, b"")
        if stamp.isdigit():
            timestamp = int(stamp) / 1000
        return History(0, None, topic, partition, offset, timestamp)
    try:
        return History(
            attempts=int(found[ATTEMPTS]),
            first_failure=datetime.fromtimestamp(int(found[FIRST_FAILURE]) / 1000, UTC),
            topic=found[ORIGINAL_TOPIC].decode(),
            partition=int(found[ORIGINAL_PARTITION]),
            offset=int(found[ORIGINAL_OFFSET]),
            timestamp=(int(found[ORIGINAL_TIMESTAMP]) / 1000
                       if found.get(ORIGINAL_TIMESTAMP) else None),
            due=int(found[DUE]) / 1000 if DUE in found else None)
    except (KeyError, ValueError, UnicodeDecodeError):  # mangled headers: start afresh
        return History(0, None, topic, partition, offset, timestamp)


def original_topic(headers: AnyHeaders, topic: str) -> str:
    """The input topic whose schema decodes this event (a retry carries it in a header)."""
    for key, value in normalize(headers):
        if key == ORIGINAL_TOPIC:
            return value.decode(errors="replace")
    return topic


def user_headers(headers: Iterable[tuple[str, bytes]]) -> Headers:
    """The event's own headers, without this project's bookkeeping."""
    return tuple((k, v) for k, v in headers if not k.startswith(PREFIX))


def retry_headers(past: History, attempts: int, first_failure: datetime, due: float,
                  reason: str, own: Headers) -> Headers:
    """The headers of a retry: the event's own headers plus its updated history."""
    def ms(seconds: float) -> bytes:
        return str(int(seconds * 1000)).encode()

    return (
        *own,
        (ATTEMPTS, str(attempts).encode()),
        (FIRST_FAILURE, ms(first_failure.timestamp())),
        (DUE, ms(due)),
        (REASON, reason.encode()),
        (ORIGINAL_TOPIC, past.topic.encode()),
        (ORIGINAL_PARTITION, str(past.partition).encode()),
        (ORIGINAL_OFFSET, str(past.offset).encode()),
        (ORIGINAL_TIMESTAMP, ms(past.timestamp) if past.timestamp is not None else b""),
    )


def dlt_headers(past: History, error_class: str, message: str, group: str) -> Headers:
    """Spring Kafka's dead-letter headers (big-endian ints and longs, UTF-8 strings)."""
    stamp = int((past.timestamp or 0) * 1000)
    return (
        ("kafka_dlt-original-topic", past.topic.encode()),
        ("kafka_dlt-original-partition", struct.pack(">i", past.partition)),
        ("kafka_dlt-original-offset", struct.pack(">q", past.offset)),
        ("kafka_dlt-original-timestamp", struct.pack(">q", stamp)),
        ("kafka_dlt-original-timestamp-type", b"CreateTime"),
        ("kafka_dlt-original-consumer-group", group.encode()),
        ("kafka_dlt-exception-fqcn", error_class.encode()),
        ("kafka_dlt-exception-message", message.encode()[:4000]),
    )


def tier_topics(prefix: str, delays: Sequence[float]) -> list[str]:
    return [f"{prefix}_{n}" for n in range(1, len(delays) + 1)]


def parse_delays(text: str) -> tuple[float, ...]:
    """``"10,60,600"`` -> seconds of each tier; empty = no retries."""
    delays = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    if any(d <= 0 for d in delays):
        raise ValueError("every delay must be above 0 s")
    if list(delays) != sorted(delays):
        raise ValueError("delays must not decrease")
    return delays
