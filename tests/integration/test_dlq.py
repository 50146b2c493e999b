"""`covers dlq list|show|replay` against the real broker, and replays that heal and repeat."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streams import records
from streams.demo import catalog_rows
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, wait_until
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books, read_all, send

pytestmark = pytest.mark.integration


async def _covers(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL)


def _objects(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


async def test_inspect_fix_and_replay_twice(worker_env: dict[str, str], origin: Origin,
                                            make_worker: type[Worker], tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    jpegs = {i: encode(gradient(200 + 20 * i, 300), "jpg") for i in range(6)}
    broken = [records.BookEnriched(f"late-{i}-{tag}", f"{origin.base_url}/{tag}/{i}.jpg")
              for i in range(6)]  # 404 until the origin is "fixed"
    good = records.BookEnriched(f"good-{tag}", origin.add(f"/{tag}/good.jpg", jpegs[0]))
    worker = make_worker(worker_env, tmp_path / "worker.log").start()
    settings = worker.settings
    env = worker.env
    await ensure_topics(settings)
    await publish_books(settings, [good, *broken], headers=[("trace-id", b"t-1")])
    await send(settings, settings.topic_book_enriched, [(f"poison-{tag}", b"\x01garbage")])
    processed, dead = await collect(settings, expected=8, timeout=60, settle=1)
    assert [p.book_id for p in processed] == [good.book_id] and len(dead) == 7

    listing = await _covers(env, "dlq", "list")
    assert listing.returncode == 0, listing.stderr
    assert "not_found: 6, undecodable_event: 1" in listing.stdout
    for book in broken:
        assert book.book_id in listing.stdout
    only_poison = await _covers(env, "dlq", "list", "--reason", "undecodable_event")
    assert f"poison-{tag}" in only_poison.stdout and broken[0].book_id not in only_poison.stdout

    letter = next(d for d in dead if d.book_id == broken[2].book_id)
    raw = next(m for m in await read_all(settings, settings.topic_dead_letter)
               if m.key == broken[2].book_id.encode())
    shown = await _covers(env, "dlq", "show", f"{raw.partition}:{raw.offset}")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["reason_code"] == "not_found" and detail["book_id"] == broken[2].book_id
    assert detail["event"]["cover_image_url"] == broken[2].cover_image_url
    assert detail["original_headers"] == {"trace-id": "t-1"}
    assert detail["headers"]["kafka_dlt-original-offset"] == letter.source_offset
    assert (await _covers(env, "dlq", "show", "9:99999")).returncode == 1
    assert (await _covers(env, "dlq", "replay")).returncode == 2  # nothing named

    # The cause is fixed; a dry run sends nothing.
    for i in range(6):
        origin.add(f"/{tag}/{i}.jpg", jpegs[i])
    inputs_before = len(await read_all(settings, settings.topic_book_enriched))
    dry = await _covers(env, "dlq", "replay", "--all", "--dry-run")
    assert dry.returncode == 0 and "dry run: 6 letter(s) would be replayed" in dry.stdout
    assert len(await read_all(settings, settings.topic_book_enriched)) == inputs_before

    # First replay: every broken book heals (the poison pill is left out).
    first = await _covers(env, "dlq", "replay", "--all")
    assert first.returncode == 0 and "replayed 6 letter(s)" in first.stdout, first.stdout
    processed, dead = await collect(settings, expected=14, timeout=60, settle=1)
    assert sorted(p.book_id for p in processed) == sorted(
        b.book_id for b in [good, *broken])
    assert len(dead) == 7  # no new dead letters
    ids = {b.book_id for b in [good, *broken]}
    rows = await catalog_rows(settings, ids)
    assert set(rows) == ids
    for letter in dead:  # a replayed cover keeps its original event time as its version
        if letter.book_id in ids and letter.original_timestamp is not None:
            assert rows[letter.book_id]["version"] == int(
                letter.original_timestamp.timestamp() * 1000)
    objects = _objects(tmp_path / "store")

    # Second replay of the whole topic: recognised as done; nothing new anywhere.
    second = await _covers(env, "dlq", "replay", "--all")
    assert "replayed 6 letter(s)" in second.stdout
    wait_until(lambda: {e["book_id"] for e in worker.log_entries(stage="duplicate")}
               >= {b.book_id for b in broken}, 30, "the replays to be seen as done")
    processed_again, dead_again = await collect(settings, expected=14, timeout=10, settle=2)
    assert len(processed_again) == 7 and len(dead_again) == 7
    assert _objects(tmp_path / "store") == objects  # not even rewritten
    assert await catalog_rows(settings, ids) == rows
    assert worker.stop() == 0
