"""SQLite catalog: the embedded default. ``sqlite:///rel/path`` or ``sqlite:////abs/path``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from processors import errors
from streams.catalog import (
    COLUMNS,
    JSON_COLUMNS,
    MIGRATIONS_TABLE,
    Layout,
    latest_per_book,
    migration_script,
)
from streams.settings import ConfigError

T = TypeVar("T")


def sqlite_path(url: str) -> Path:
    return Path(urlsplit(url).path[1:])


def migrations(layout: Layout) -> list[tuple[int, str, str]]:
    """(version, description, SQL) in order; SQL never changes once released."""
    c = layout.column
    return [(1, f"create {layout.table}", f"""
CREATE TABLE IF NOT EXISTS {layout.table} (
    {c("book_id")}         TEXT PRIMARY KEY,
    {c("cover_url")}       TEXT NOT NULL,
    {c("thumbnail_url")}   TEXT,
    {c("renditions")}      TEXT NOT NULL,   -- JSON [{{name, url, key, width, height, ...}}]
    {c("placeholder")}     TEXT,            -- JSON {{dominant_color, lqip, blurhash}}
    {c("source_url")}      TEXT NOT NULL,
    {c("source_sha256")}   TEXT NOT NULL,
    {c("preset")}          TEXT NOT NULL,
    {c("preset_version")}  TEXT NOT NULL,
    {c("job_id")}          TEXT NOT NULL,
    {c("version")}         INTEGER NOT NULL, -- input event time (ms); newer wins
    {c("processed_at")}    TEXT NOT NULL,    -- ISO 8601 UTC; breaks ties
    {c("updated_at")}      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)""")]


def upsert_sql(layout: Layout) -> str:
    c, t = layout.column, layout.table
    columns = ", ".join(c(name) for name in COLUMNS)
    values = ", ".join(f":{name}" for name in COLUMNS)
    updates = ",\n    ".join(f"{c(n)} = excluded.{c(n)}" for n in COLUMNS if n != "book_id")
    return f"""
INSERT INTO {t} ({columns}) VALUES ({values})
ON CONFLICT ({c("book_id")}) DO UPDATE SET
    {updates},
    {c("updated_at")} = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE (excluded.{c("version")}, excluded.{c("processed_at")})
    > ({t}.{c("version")}, {t}.{c("processed_at")})"""


class SqliteCatalog:
    def __init__(self, url: str, layout: Layout | None = None) -> None:
        self.path = sqlite_path(url)
        self.layout = layout or Layout()
        self._upsert = upsert_sql(self.layout)
        self._lock = asyncio.Lock()  # one writer; sqlite3 connections are not shared

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection in one transaction (committed on success), always closed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def migration_sql(self) -> str:
        return migration_script(migrations(self.layout))

    async def migrate(self) -> list[str]:
        return await self._run(self._migrate)

    def _migrate(self) -> list[str]:
        applied: list[str] = []
        with self._connect() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (table_name TEXT, "
                       "version INTEGER, description TEXT, applied_at TEXT DEFAULT "
                       "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), "
                       "PRIMARY KEY (table_name, version))")
            done = {row[0] for row in db.execute(
                f"SELECT version FROM {MIGRATIONS_TABLE} WHERE table_name = ?",
                (self.layout.table,))}
            for version, description, sql in migrations(self.layout):
                if version not in done:
                    db.execute(sql)
                    db.execute(f"INSERT INTO {MIGRATIONS_TABLE} (table_name, version, "
                               "description) VALUES (?, ?, ?)",
                               (self.layout.table, version, description))
                    applied.append(description)
        return applied

    async def check(self) -> None:
        problem = self.layout.column_problem(await self._run(self._columns))
        if problem:
            raise ConfigError(problem)

    def _columns(self) -> set[str]:
        with self._connect() as db:
            return {row[1] for row in db.execute(f"PRAGMA table_info({self.layout.table})")}

    async def upsert_many(self, records: Sequence[dict[str, Any]]) -> int:
        rows = [{k: json.dumps(r[k]) if k in JSON_COLUMNS else r[k] for k in COLUMNS}
                for r in latest_per_book(records)]
        async with self._lock:
            return await self._run(self._write, rows)

    def _write(self, rows: list[dict[str, Any]]) -> int:
        with self._connect() as db:
            return db.executemany(self._upsert, rows).rowcount

    async def get(self, book_id: str) -> dict[str, Any] | None:
        return await self._run(self._read, book_id)

    def _read(self, book_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute(self.layout.select_book("?"), (book_id,)).fetchone()
        if row is None:
            return None
        return {k: json.loads(row[k]) if k in JSON_COLUMNS and row[k] else row[k]
                for k in row.keys()}

    @staticmethod
    async def _run(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.to_thread(fn, *args)
        except sqlite3.OperationalError as exc:
            raise errors.TransientError(errors.CATALOG_UNAVAILABLE, str(exc)) from exc

    async def close(self) -> None:
        return None
