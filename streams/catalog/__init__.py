"""The catalog database the rest of the book system reads cover URLs from.

Backends are picked by URL scheme (``sqlite:///path``). Upserts are idempotent and guarded by
``processed_at``, so a replayed or older result never overwrites a newer one.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit


class CatalogSink(Protocol):
    async def upsert(self, record: dict[str, Any]) -> bool:
        """Write the cover record of ``record["book_id"]``; False if a newer one was there."""
        ...

    async def get(self, book_id: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


def open_catalog(url: str) -> CatalogSink:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from streams.catalog.sqlite import SqliteCatalog

        return SqliteCatalog(url)
    raise ValueError(f"CATALOG_URL scheme {scheme!r} is not supported yet")
