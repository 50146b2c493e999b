"""Typed records for every event; the Avro schemas in ``schemas/`` are their source of truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BookEnriched:
    book_id: str
    cover_image_url: str | None = None
    title: str | None = None
    authors: tuple[str, ...] = ()
    isbn: str | None = None
    preset: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    outputs: str | None = None  # JSON array of rendition specs; replaces the preset
    force: bool = False  # process again even if this URL and preset version are done


@dataclass(frozen=True)
class CoverRequested:
    job_id: str
    book_id: str
    image_url: str
    preset: str | None = None
    callback_url: str | None = None
    requested_at: datetime | None = None
    outputs: str | None = None  # JSON array of rendition specs; replaces the preset
    force: bool = False


@dataclass(frozen=True)
class Rendition:
    name: str
    url: str
    key: str
    width: int
    height: int
    format: str
    bytes: int


@dataclass(frozen=True)
class Placeholder:
    dominant_color: str
    lqip: str | None = None
    blurhash: str | None = None


@dataclass(frozen=True)
class CoverProcessed:
    job_id: str
    book_id: str
    source_url: str
    source_sha256: str
    source_format: str
    source_width: int
    source_height: int
    source_bytes: int
    preset: str
    preset_version: str
    renditions: tuple[Rendition, ...]
    placeholder: Placeholder | None
    processed_at: datetime
    timings_ms: dict[str, float] = field(default_factory=dict)
    attempts: int = 1
    urls_expire_at: datetime | None = None  # presigned URLs stop working then; None = public


@dataclass(frozen=True)
class CoverDeadLetter:
    reason_code: str
    error_class: str
    message: str
    first_failure_at: datetime
    last_failure_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
    job_id: str | None = None
    book_id: str | None = None
    transient: bool = False
    attempts: int = 1
    original_key: bytes | None = None
    original_value: bytes | None = None
    worker_version: str = ""
    original_headers: tuple[Header, ...] = ()
    original_timestamp: datetime | None = None


@dataclass(frozen=True)
class Header:
    key: str
    value: bytes | None = None


@dataclass(frozen=True)
class Undecodable:
    """An input event that could not be decoded: a poison pill, routed to the dead letters."""

    reason: str


@dataclass(frozen=True)
class CoverJob:
    """One unit of work, whichever input topic it came from."""

    job_id: str
    book_id: str
    image_url: str
    preset: str | None = None
    callback_url: str | None = None
    outputs: str | None = None
    force: bool = False
