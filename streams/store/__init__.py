"""Object stores for renditions, picked by URL scheme: ``file:///dir`` or ``s3://bucket``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

from streams.settings import Settings

CACHE_CONTROL = "public, max-age=31536000, immutable"  # content-addressed keys never change


def object_key(book_id: str, source_sha256: str, preset: str, preset_version: str,
               rendition: str, extension: str) -> str:
    """Content-addressed key ``{book_id}/{digest}/{rendition}.{ext}``.

    The digest is a SHA-256 prefix over the source's SHA-256 and the preset's name and version:
    a replay of the same source writes the same objects, and a new preset version writes new
    ones (never a changed object behind an immutable URL a CDN has cached).
    """
    digest = hashlib.sha256(f"{source_sha256}\0{preset}\0{preset_version}".encode()).hexdigest()
    return f"{book_id}/{digest[:16]}/{rendition}.{extension}"


@dataclass(frozen=True)
class StoredObject:
    key: str
    url: str
    created: bool  # False when an identical object was already there
    expires_at: datetime | None = None  # when a presigned URL stops working


class ObjectStore(Protocol):
    """Where renditions live. Implementations translate their errors to ``TransientError``."""

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                  fresh: bool = False) -> StoredObject:
        """Store ``data`` under ``key`` unless an object of the same size is already there.
        ``fresh``: the caller expects no such object, so a store may skip the look (keys are
        content-addressed: writing the same bytes again changes nothing)."""
        ...

    async def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The bytes stored under ``key``; ``too_large`` past ``max_bytes``."""
        ...

    async def check(self) -> None:
        """At start-up: raise ``ConfigError`` when the store cannot be used as configured."""
        ...

    async def close(self) -> None: ...


def open_store(settings: Settings) -> ObjectStore:
    """The store named by ``STORAGE_URL``."""
    url = urlsplit(settings.resolved_storage_url)
    if url.scheme == "file":
        from streams.store.local import LocalStore

        return LocalStore(url.path, settings.public_base_url)
    from streams.store.s3 import S3Store

    return S3Store(settings, bucket=url.netloc or settings.image_storage_bucket)
