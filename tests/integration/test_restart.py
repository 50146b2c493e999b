"""Stopping and restarting the worker: the catalog table comes back from its changelog and work
already done is not done again."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from urllib.request import urlopen

import pytest

from streams import records
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, wait_until
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books

pytestmark = pytest.mark.integration


def _catalog_view(worker: Worker, book_id: str) -> dict[str, object] | None:
    try:
        with urlopen(worker.web_url(f"/catalog/{book_id}/"), timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return None


async def test_restart_recovers_table_and_skips_done_work(
        worker_env: dict[str, str], origin: Origin, make_worker: type[Worker],
        tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    first = [records.BookEnriched(f"r{i}-{tag}", origin.add(f"/{tag}/{i}.jpg",
                                                            encode(gradient(700, 1000), "jpg")))
             for i in range(3)]
    worker = make_worker(worker_env, tmp_path / "worker-1.log").start()
    settings = worker.settings
    await ensure_topics(settings)
    await publish_books(settings, first)
    processed, dead = await collect(settings, expected=3, timeout=60)
    assert len(processed) == 3 and dead == []
    objects_before = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert worker.stop() == 0

    restarted = make_worker(worker_env, tmp_path / "worker-2.log").start()
    # The table was rebuilt from the changelog: the web view serves the recorded covers.
    wait_until(lambda: _catalog_view(restarted, first[0].book_id) is not None, 60,
               "the restarted worker's catalog view")
    view = _catalog_view(restarted, first[0].book_id)
    assert view is not None
    assert view["job_id"] == next(p.job_id for p in processed if p.book_id == first[0].book_id)

    # Re-sent inputs are recognised as done; a new book is processed as usual.
    fresh = records.BookEnriched(f"new-{tag}", origin.add(f"/{tag}/new.jpg",
                                                          encode(gradient(500, 800), "jpg")))
    await publish_books(settings, [*first, fresh])
    processed_after, dead_after = await collect(settings, expected=4, timeout=60, settle=3)
    assert dead_after == []
    assert sorted(p.book_id for p in processed_after) == sorted(
        [b.book_id for b in first] + [fresh.book_id])  # the three old ones once each
    wait_until(lambda: len(restarted.log_entries(stage="duplicate")) >= 3, 20,
               "the duplicates to be logged as already done")
    objects_after = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert len(objects_after) == len(objects_before) + 6  # 3 renditions + 3 sidecars, new book

    # `force` processes a done cover again: a new outcome, the same content-addressed objects.
    forced = dataclasses.replace(first[1], force=True)
    await publish_books(settings, [forced])
    processed_forced, _ = await collect(settings, expected=5, timeout=60, settle=2)
    again = [p for p in processed_forced if p.book_id == forced.book_id]
    assert len(again) == 2 and again[0].renditions == again[1].renditions
    assert again[1].processed_at > again[0].processed_at
    assert sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file()) == (
        objects_after)
    view = _catalog_view(restarted, forced.book_id)
    assert view is not None and view["processed_at"] == again[1].processed_at.isoformat(
        timespec="milliseconds")
    assert restarted.stop() == 0
