"""SQLite catalog: the embedded default. ``sqlite:///rel/path`` or ``sqlite:////abs/path``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from processors import errors

DDL = """
CREATE TABLE IF NOT EXISTS catalog (
    book_id         TEXT PRIMARY KEY,
    cover_url       TEXT NOT NULL,
    thumbnail_url   TEXT,
    renditions      TEXT NOT NULL,   -- JSON list of {name, url, key, width, height, format, bytes}
    placeholder     TEXT,            -- JSON {dominant_color, lqip, blurhash}
    source_url      TEXT NOT NULL,
    source_sha256   TEXT NOT NULL,
    preset          TEXT NOT NULL,
    preset_version  TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    processed_at    TEXT NOT NULL,   -- ISO 8601 UTC; newer wins
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""

UPSERT = """
INSERT INTO catalog (book_id, cover_url, thumbnail_url, renditions, placeholder, source_url,
                     source_sha256, preset, preset_version, job_id, processed_at)
VALUES (:book_id, :cover_url, :thumbnail_url, :renditions, :placeholder, :source_url,
        :source_sha256, :preset, :preset_version, :job_id, :processed_at)
ON CONFLICT (book_id) DO UPDATE SET
    cover_url = excluded.cover_url, thumbnail_url = excluded.thumbnail_url,
    renditions = excluded.renditions, placeholder = excluded.placeholder,
    source_url = excluded.source_url, source_sha256 = excluded.source_sha256,
    preset = excluded.preset, preset_version = excluded.preset_version,
    job_id = excluded.job_id, processed_at = excluded.processed_at,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE excluded.processed_at > catalog.processed_at
"""

_JSON_COLUMNS = ("renditions", "placeholder")


def sqlite_path(url: str) -> Path:
    return Path(urlsplit(url).path[1:])


class SqliteCatalog:
    def __init__(self, url: str) -> None:
        self.path = sqlite_path(url)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()  # one writer; sqlite3 connections are not shared
        with self._connect() as db:
            db.execute(DDL)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection in one transaction (committed on success), always closed."""
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    async def upsert(self, record: dict[str, Any]) -> bool:
        row = {k: json.dumps(record[k]) if k in _JSON_COLUMNS else record[k]
               for k in ("book_id", "cover_url", "thumbnail_url", "source_url", "source_sha256",
                         "preset", "preset_version", "job_id", "processed_at", *_JSON_COLUMNS)}
        async with self._lock:
            try:
                return await asyncio.to_thread(self._write, row)
            except sqlite3.OperationalError as exc:
                raise errors.TransientError(errors.CATALOG_UNAVAILABLE, str(exc)) from exc

    def _write(self, row: dict[str, Any]) -> bool:
        with self._connect() as db:
            return db.execute(UPSERT, row).rowcount > 0

    async def get(self, book_id: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._read, book_id)

    def _read(self, book_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM catalog WHERE book_id = ?", (book_id,)).fetchone()
        if row is None:
            return None
        return {k: json.loads(row[k]) if k in _JSON_COLUMNS and row[k] else row[k]
                for k in row.keys()}

    async def close(self) -> None:
        return None
