"""The catalog database the rest of the book system reads cover URLs from.

Backends are picked by URL scheme: ``postgresql://`` (asyncpg, production) or ``sqlite:///path``
(the embedded default). Both take the same ``Layout`` (table and column names, to fit an
existing catalog), apply the same numbered migrations, and write batches of cover records as
upserts guarded by the record's version: a replayed or out-of-order older record never
overwrites a newer one, and writing the same record twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

# The record's fields, in column order; each may be renamed by the layout.
COLUMNS = ("book_id", "cover_url", "thumbnail_url", "renditions", "placeholder", "source_url",
           "source_sha256", "preset", "preset_version", "job_id", "version", "processed_at")
JSON_COLUMNS = ("renditions", "placeholder")
MIGRATIONS_TABLE = "covers_catalog_migrations"


@dataclass(frozen=True)
class Layout:
    """Where cover records go: ``CATALOG_TABLE`` and ``CATALOG_COLUMNS`` (``field=column,...``,
    for the fields whose column has another name; ``updated_at`` may be renamed too)."""

    table: str = "catalog"
    renames: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str:
        return self.renames.get(name, name)

    def select_book(self, parameter: str) -> str:
        """The query of one book's row, every column named by its field (``image_url AS
        cover_url``); ``parameter`` is the driver's placeholder (``?``, ``$1``)."""
        columns = ", ".join(f"{self.column(n)} AS {n}" for n in (*COLUMNS, "updated_at"))
        return f"SELECT {columns} FROM {self.table} WHERE {self.column('book_id')} = {parameter}"

    def column_problem(self, present: set[str]) -> str | None:
        """What start-up should say when a table with ``present`` columns does not fit."""
        missing = [self.column(n) for n in (*COLUMNS, "updated_at")
                   if self.column(n) not in present]
        if not missing:
            return None
        return (f"CATALOG_URL: table {self.table!r} lacks columns {', '.join(missing)} (run "
                "`covers catalog migrate`, or map them with CATALOG_COLUMNS)")

    @classmethod
    def parse(cls, table: str, columns: str) -> Layout:
        renames: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in columns.split(","))):
            name, sep, column = (part.strip() for part in pair.partition("="))
            if not sep or name not in (*COLUMNS, "updated_at") or not _identifier(column):
                raise ValueError(f"{pair!r} is not field=column for a catalog field")
            renames[name] = column
        if not _identifier(table):
            raise ValueError(f"{table!r} is not a table name")
        return cls(table, renames)


def _identifier(name: str) -> bool:
    return bool(name) and name.replace("_", "a").isalnum() and not name[0].isdigit()


def migration_script(migrations: list[tuple[int, str, str]]) -> str:
    """Numbered migrations as one SQL script, for a DBA to read or apply by hand."""
    return "\n".join(f"-- {version}: {description}\n{sql};"
                     for version, description, sql in migrations)


def version_of(record: dict[str, Any]) -> tuple[int, str]:
    """Order of cover records of one book: the input event's time, then processing time."""
    return int(record.get("version") or 0), str(record.get("processed_at") or "")


def latest_per_book(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest record of each book in ``records`` (first-seen order of books)."""
    newest: dict[str, dict[str, Any]] = {}
    for record in records:
        current = newest.get(record["book_id"])
        if current is None or version_of(record) >= version_of(current):
            newest[record["book_id"]] = record
    return list(newest.values())


class CatalogSink(Protocol):
    """One catalog database. Implementations raise ``TransientError`` (``catalog_unavailable``)
    when the database cannot be reached."""

    async def migrate(self) -> list[str]:
        """Apply the migrations not applied yet; returns their descriptions."""
        ...

    def migration_sql(self) -> str:
        """Every migration as SQL, for a DBA to read or apply by hand."""
        ...

    async def check(self) -> None:
        """At start-up: raise ``ConfigError`` when the table lacks a column of the layout."""
        ...

    async def upsert_many(self, records: Sequence[dict[str, Any]]) -> int:
        """Write cover records in one transaction; returns how many rows changed (older or
        identical versions change nothing)."""
        ...

    async def get(self, book_id: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


def open_catalog(url: str, layout: Layout | None = None) -> CatalogSink:
    layout = layout or Layout()
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from streams.catalog.sqlite import SqliteCatalog

        return SqliteCatalog(url, layout)
    if scheme in ("postgresql", "postgres"):
        from streams.catalog.postgres import PostgresCatalog

        return PostgresCatalog(url, layout)
    raise ValueError(f"CATALOG_URL scheme {scheme!r} is not supported")
