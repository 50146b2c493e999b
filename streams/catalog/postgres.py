"""Postgres catalog through asyncpg: the production target. ``postgresql://user@host/db``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

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

# Errors after which the same write may succeed later: the database is down, restarting,
# unreachable or busy. Anything asyncpg raises is one of these or a PostgresError.
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def migrations(layout: Layout) -> list[tuple[int, str, str]]:
    """(version, description, SQL) in order; SQL never changes once released."""
    c = layout.column
    return [(1, f"create {layout.table}", f"""
CREATE TABLE IF NOT EXISTS {layout.table} (
    {c("book_id")}         text PRIMARY KEY,
    {c("cover_url")}       text NOT NULL,
    {c("thumbnail_url")}   text,
    {c("renditions")}      jsonb NOT NULL,   -- [{{name, url, key, width, height, format, bytes}}]
    {c("placeholder")}     jsonb,            -- {{dominant_color, lqip, blurhash}}
    {c("source_url")}      text NOT NULL,
    {c("source_sha256")}   text NOT NULL,
    {c("preset")}          text NOT NULL,
    {c("preset_version")}  text NOT NULL,
    {c("job_id")}          text NOT NULL,
    {c("version")}         bigint NOT NULL,  -- input event time (ms); newer wins
    {c("processed_at")}    timestamptz NOT NULL,  -- breaks ties
    {c("updated_at")}      timestamptz NOT NULL DEFAULT now()
)""")]


# JSON travels as text (asyncpg would read a list inside a list as a 2-D array) and is cast.
_TYPES = {"version": "bigint", "processed_at": "timestamptz"}


def upsert_sql(layout: Layout) -> str:
    """One statement for a whole batch (one array parameter per column, one book per row)."""
    c, t = layout.column, layout.table
    columns = ", ".join(c(name) for name in COLUMNS)
    arrays = ", ".join(f"${i}::{_TYPES.get(name, 'text')}[]"
                       for i, name in enumerate(COLUMNS, start=1))
    selected = ", ".join(f"u.{n}::jsonb" if n in JSON_COLUMNS else f"u.{n}" for n in COLUMNS)
    updates = ",\n    ".join(f"{c(n)} = EXCLUDED.{c(n)}" for n in COLUMNS if n != "book_id")
    return f"""
INSERT INTO {t} AS t ({columns})
SELECT {selected} FROM unnest({arrays}) AS u({", ".join(COLUMNS)})
ON CONFLICT ({c("book_id")}) DO UPDATE SET
    {updates},
    {c("updated_at")} = now()
WHERE (EXCLUDED.{c("version")}, EXCLUDED.{c("processed_at")})
    > (t.{c("version")}, t.{c("processed_at")})"""


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


class PostgresCatalog:
    def __init__(self, url: str, layout: Layout | None = None, pool_size: int = 4) -> None:
        self.url = url
        self.layout = layout or Layout()
        self.pool_size = pool_size
        self._upsert = upsert_sql(self.layout)
        self._pool: asyncpg.Pool | None = None

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=self.pool_size, init=_init,
                    command_timeout=30, timeout=10)
            except _UNAVAILABLE as exc:
                raise errors.TransientError(errors.CATALOG_UNAVAILABLE,
                                            f"cannot connect: {exc!r}") from exc
        return self._pool

    def migration_sql(self) -> str:
        return migration_script(migrations(self.layout))

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        pool = await self._connection_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                                   "table_name text, version int, description text, "
                                   "applied_at timestamptz DEFAULT now(), "
                                   "PRIMARY KEY (table_name, version))")
                # Two workers starting together must not both apply a migration.
                await conn.execute(f"LOCK TABLE {MIGRATIONS_TABLE} IN EXCLUSIVE MODE")
                done = {r["version"] for r in await conn.fetch(
                    f"SELECT version FROM {MIGRATIONS_TABLE} WHERE table_name = $1",
                    self.layout.table)}
                for version, description, sql in migrations(self.layout):
                    if version not in done:
                        await conn.execute(sql)
                        await conn.execute(
                            f"INSERT INTO {MIGRATIONS_TABLE} (table_name, version, description)"
                            " VALUES ($1, $2, $3)", self.layout.table, version, description)
                        applied.append(description)
        except _UNAVAILABLE as exc:
            raise errors.TransientError(errors.CATALOG_UNAVAILABLE, f"migrate: {exc!r}") from exc
        return applied

    async def check(self) -> None:
        try:
            pool = await self._connection_pool()
            rows = await pool.fetch(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = $1 AND table_schema = current_schema()", self.layout.table)
        except (errors.TransientError, *_UNAVAILABLE) as exc:
            raise ConfigError(f"CATALOG_URL: the catalog database is not reachable ({exc})"
                              ) from None
        problem = self.layout.column_problem({r["column_name"] for r in rows})
        if problem:
            raise ConfigError(problem)

    async def upsert_many(self, records: Sequence[dict[str, Any]]) -> int:
        latest = latest_per_book(records)  # one statement may not touch a row twice
        if not latest:
            return 0
        columns = [[_to_db(name, r[name]) for r in latest] for name in COLUMNS]
        try:
            pool = await self._connection_pool()
            status: str = await pool.execute(self._upsert, *columns)
            return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows changed>"
        except _UNAVAILABLE as exc:
            raise errors.TransientError(errors.CATALOG_UNAVAILABLE, f"upsert: {exc!r}") from exc

    async def get(self, book_id: str) -> dict[str, Any] | None:
        try:
            pool = await self._connection_pool()
            row = await pool.fetchrow(self.layout.select_book("$1"), book_id)
        except _UNAVAILABLE as exc:
            raise errors.TransientError(errors.CATALOG_UNAVAILABLE, f"get: {exc!r}") from exc
        if row is None:
            return None
        return {k: v.isoformat(timespec="milliseconds") if isinstance(v, datetime) else v
                for k, v in row.items()}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _to_db(name: str, value: Any) -> Any:
    if name == "processed_at" and isinstance(value, str):
        return datetime.fromisoformat(value)
    if name in JSON_COLUMNS:
        return None if value is None else json.dumps(value)
    return value
