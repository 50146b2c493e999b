"""Object stores for renditions, picked by URL scheme: ``file:///dir`` or ``s3://bucket``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from streams.settings import Settings

CACHE_CONTROL = "public, max-age=31536000, immutable"  # content-addressed keys never change


def object_key(book_id: str, source_sha256: str, rendition: str, extension: str) -> str:
    """Content-addressed key: a replay of the same source writes the same objects."""
    return f"{book_id}/{source_sha256[:16]}/{rendition}.{extension}"


@dataclass(frozen=True)
class StoredObject:
    key: str
    url: str
    created: bool  # False when an identical object was already there


class ObjectStore(Protocol):
    """Where renditions live. Implementations translate their errors to ``TransientError``."""

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: dict[str, str]) -> StoredObject:
        """Store ``data`` under ``key`` unless an object of the same size is already there."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``."""
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
