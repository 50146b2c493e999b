"""What ``make run`` shows: sample covers served locally, published, processed, tabulated."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams import codec, records
from streams.broker import client_options
from streams.catalog import open_catalog
from streams.embedded import LOOPBACK, free_port
from streams.settings import Settings

# (name, width, height, top colour, bottom colour, format, title): small but varied covers.
SAMPLES = (
    ("moby-dick", 1800, 2700, (20, 40, 90), (200, 220, 240), "jpg", "MOBY DICK"),
    ("middlemarch", 1200, 1800, (120, 30, 40), (240, 200, 120), "png", "MIDDLEMARCH"),
    ("walden", 600, 900, (30, 90, 40), (230, 240, 200), "webp", "WALDEN"),
    ("dracula", 1000, 1500, (10, 10, 10), (160, 20, 30), "jpg", "DRACULA"),
)


def make_samples(directory: Path) -> list[Path]:
    """Write the sample covers (gradient, border, title) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, width, height, top, bottom, ext, title in SAMPLES:
        path = directory / f"{name}.{ext}"
        if not path.exists():
            cover_image(width, height, top, bottom, title).write_to_file(str(path))
        paths.append(path)
    return paths


def cover_image(width: int, height: int, top: tuple[int, int, int],
                bottom: tuple[int, int, int], title: str) -> pyvips.Image:
    ramp = pyvips.Image.xyz(width, height)[1] / max(1, height - 1)  # 0 at the top, 1 at the foot
    bands = [ramp * (b - t) + t for t, b in zip(top, bottom, strict=True)]
    image = bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")
    margin = width // 12
    image = image.draw_rect([255, 255, 255], margin, margin, width - 2 * margin,
                            height - 2 * margin, fill=False)
    text = pyvips.Image.text(title, width=width - 4 * margin, dpi=max(72, width // 4))
    x, y = (width - text.width) // 2, height // 3
    ink = pyvips.Image.black(text.width, text.height).new_from_image([250, 250, 250])
    overlay = ink.bandjoin(text).copy(interpretation="srgb")
    return image.composite2(overlay, "over", x=x, y=y).flatten().cast("uchar")


@contextlib.asynccontextmanager
async def serve_directory(directory: Path) -> AsyncIterator[str]:
    """Serve ``directory`` over HTTP on a free loopback port; yields the base URL."""
    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port).start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


async def publish(settings: Settings, events: Iterable[records.BookEnriched]) -> None:
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(settings.topic_book_enriched,
                                         codec.BOOK_ENRICHED.encode(event),
                                         key=event.book_id.encode())
    finally:
        await producer.stop()


@dataclass
class Outcomes:
    processed: dict[str, records.CoverProcessed]
    failed: dict[str, records.CoverDeadLetter]

    def done(self, book_ids: set[str]) -> bool:
        return book_ids <= set(self.processed) | set(self.failed)


async def watch(settings: Settings, book_ids: set[str], timeout: float,
                console: Console) -> Outcomes:
    """Follow the output topics until every book in ``book_ids`` has an outcome (or timeout)."""
    consumer = AIOKafkaConsumer(settings.topic_cover_processed, settings.topic_dead_letter,
                                **client_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    outcomes = Outcomes({}, {})
    deadline = time.monotonic() + timeout
    columns = (TextColumn("[bold]covers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("covers", total=len(book_ids))
            while not outcomes.done(book_ids) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for tp, messages in batches.items():
                    for msg in messages:
                        if tp.topic == settings.topic_cover_processed:
                            rec = codec.COVER_PROCESSED.decode(msg.value)
                            outcomes.processed[rec.book_id] = rec
                        else:
                            dead = codec.DEAD_LETTER.decode(msg.value)
                            if dead.book_id:
                                outcomes.failed[dead.book_id] = dead
                progress.update(bar, completed=len(book_ids & (set(outcomes.processed) |
                                                               set(outcomes.failed))))
    finally:
        await consumer.stop()
    return outcomes


async def catalog_rows(settings: Settings, book_ids: set[str],
                       timeout: float = 15) -> dict[str, dict[str, Any]]:
    """The catalog database's rows of ``book_ids``, waiting a little for the sink to write."""
    catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    try:
        while True:
            for book_id in book_ids - set(rows):
                if (row := await catalog.get(book_id)) is not None:
                    rows[book_id] = row
            if set(rows) == book_ids or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(0.2)
    finally:
        await catalog.close()


async def results_table(settings: Settings, outcomes: Outcomes) -> Table:
    rows = await catalog_rows(settings, set(outcomes.processed))
    table = Table(title="Covers", show_lines=True)
    for column in ("book", "source", "renditions (stored as key)", "catalog row"):
        table.add_column(column, overflow="fold")
    for book_id, rec in sorted(outcomes.processed.items()):
        row = rows.get(book_id)
        source = f"{rec.source_format} {rec.source_width}x{rec.source_height}\n" \
                 f"{rec.source_bytes:,} B"
        renditions = "\n".join(f"{r.name}: {r.width}x{r.height} {r.format} {r.bytes:,} B\n"
                               f"  {r.key}" for r in rec.renditions)
        summary = (f"cover: {Path(row['cover_url']).name}\nat {row['processed_at'][:19]}"
                   if row else "[red](missing)")
        table.add_row(book_id, source, renditions, summary)
    for book_id, dead in sorted(outcomes.failed.items()):
        table.add_row(book_id, f"[red]dead letter: {dead.reason_code}", dead.message, "")
    if outcomes.processed:
        first = next(iter(outcomes.processed.values())).renditions[0]
        table.caption = f"stored under {first.url.removesuffix(first.key)}"
    return table


def sample_events(base_url: str, paths: list[Path]) -> list[records.BookEnriched]:
    return [records.BookEnriched(book_id=f"sample-{p.stem}", title=p.stem.replace("-", " "),
                                 cover_image_url=f"{base_url}/{p.name}") for p in paths]


async def run_demo(settings: Settings, sample_dir: Path, timeout: float,
                   console: Console) -> Outcomes:
    """Serve, publish and watch the samples; returns the outcomes."""
    paths = await asyncio.to_thread(make_samples, sample_dir)
    async with serve_directory(sample_dir) as base_url:
        events = sample_events(base_url, paths)
        console.print(f"publishing {len(events)} book_enriched events for covers on {base_url}")
        await publish(settings, events)
        outcomes = await watch(settings, {e.book_id for e in events}, timeout, console)
    console.print(await results_table(settings, outcomes))
    return outcomes
