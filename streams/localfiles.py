"""``covers render``: the processing core on local files, and a contact sheet to look at.

Files render side by side on a thread pool (libvips releases the GIL), one libvips thread
each, as in the worker. Each input gets a folder of renditions; a failure is a row with its
reason code, never an abort.
"""

from __future__ import annotations

import base64
import html
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyvips

from processors import errors, render
from processors.spec import Limits, Preset, SpecError, parse_outputs

ROW_HEIGHT = 240  # pixels of each contact-sheet row
GAP = 16


@dataclass(frozen=True)
class FileResult:
    path: Path
    result: render.RenderResult | None
    error: errors.CoverError | None
    seconds: float
    written: tuple[Path, ...] = ()


def parse_output_option(text: str) -> dict[str, object]:
    """One ``--output``: a JSON object, or ``name=thumb,width=200,fit=cover,format=webp``."""
    if text.lstrip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise SpecError("--output: expected a JSON object")
        return value
    spec: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep:
            raise SpecError(f"--output: {part!r} is not key=value")
        spec[key.strip()] = int(raw) if raw.strip().isdigit() else raw.strip()
    return spec


def custom_preset(options: list[str]) -> Preset:
    return parse_outputs([parse_output_option(o) for o in options])


def render_files(paths: Iterable[Path], preset: Preset, out_dir: Path, limits: Limits,
                 jobs: int = 0, done: Callable[[FileResult], None] | None = None
                 ) -> list[FileResult]:
    """Render every file into ``out_dir/<stem>/<rendition>.<ext>``, in input order."""
    render.configure(threads=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = list(paths)
    stems = [p.stem for p in paths]
    # cover.jpg alone renders into cover/; cover.jpg beside cover.png into cover.jpg/, cover.png/
    folders = {p: p.stem if stems.count(p.stem) == 1 else p.name for p in paths}

    def one(path: Path) -> FileResult:
        started = time.perf_counter()
        try:
            result = render.render(path.read_bytes(), preset, limits)
        except errors.CoverError as exc:
            outcome = FileResult(path, None, exc, time.perf_counter() - started)
        except OSError as exc:
            outcome = FileResult(path, None, errors.PermanentError(
                errors.NOT_FOUND, f"{path}: {exc.strerror}"), time.perf_counter() - started)
        else:
            folder = out_dir / folders[path]
            folder.mkdir(exist_ok=True)
            written = []
            for rendition in result.renditions:
                target = folder / f"{rendition.name}.{rendition.extension}"
                target.write_bytes(rendition.data)
                written.append(target)
            outcome = FileResult(path, result, None, time.perf_counter() - started,
                                 tuple(written))
        if done is not None:
            done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(one, paths))


def contact_sheet(results: list[FileResult], out_dir: Path) -> tuple[Path, Path]:
    """``contact-sheet.png`` (each input beside its renditions and placeholders) and an
    ``index.html`` with the same rows and every number."""
    rows = [_sheet_row(r) for r in results if r.result is not None]
    png = out_dir / "contact-sheet.png"
    if rows:
        width = max(row.width for row in rows)
        padded = [row.gravity("west", width, row.height, extend="white") for row in rows]
        sheet = pyvips.Image.arrayjoin(padded, across=1, shim=GAP, background=[255, 255, 255])
        sheet.pngsave(str(png), compression=6)
    page = out_dir / "index.html"
    page.write_text(_page(results, out_dir), encoding="utf-8")
    return png, page


def _sheet_row(item: FileResult) -> pyvips.Image:
    assert item.result is not None
    result = item.result
    tiles = [_tile(_at_row_height(str(item.path)), f"{item.path.name}\n"
                   f"{result.source_width}x{result.source_height} {result.source_format}")]
    for rendition, path in zip(result.renditions, item.written, strict=True):
        tiles.append(_tile(_at_row_height(str(path)), f"{rendition.name}\n"
                           f"{rendition.width}x{rendition.height} {rendition.format} "
                           f"{len(rendition.data) / 1024:.1f} KB"))
    placeholder = result.placeholder
    preview = base64.b64decode(placeholder.lqip.split(",")[1])
    tiles.append(_tile(_at_row_height(preview), f"LQIP {len(placeholder.lqip)} B\n"
                       f"{placeholder.blurhash[:14]}…"))
    colour = [int(placeholder.dominant_color[i:i + 2], 16) for i in (1, 3, 5)]
    swatch = pyvips.Image.black(ROW_HEIGHT // 2, ROW_HEIGHT).new_from_image(colour)
    tiles.append(_tile(swatch.cast("uchar").copy(interpretation="srgb"),
                       f"dominant\n{placeholder.dominant_color}"))
    return pyvips.Image.arrayjoin(tiles, shim=GAP, background=[255, 255, 255], valign="high")


def _at_row_height(source: str | bytes) -> pyvips.Image:
    """A file or encoded image scaled to the row height, up or down (EXIF-rotated, sRGB)."""
    make = pyvips.Image.thumbnail if isinstance(source, str) else pyvips.Image.thumbnail_buffer
    image = make(source, ROW_HEIGHT * 3, height=ROW_HEIGHT, size="both")
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.interpretation != "srgb" or image.format != "uchar" or image.bands != 3:
        image = image.colourspace("srgb").cast("uchar")
    return image


def _tile(image: pyvips.Image, label: str) -> pyvips.Image:
    """The image over a two-line caption."""
    caption = pyvips.Image.text(html.escape(label), font="sans 12", dpi=72)
    ink = (255 - caption).cast("uchar")
    caption = ink.bandjoin([ink, ink]).copy(interpretation="srgb")
    width = max(image.width, caption.width)
    return image.gravity("north-west", width, image.height, extend="white").join(
        caption.gravity("north-west", width, caption.height + 4, extend="white"), "vertical")


def _page(results: list[FileResult], out_dir: Path) -> str:
    rows = []
    for item in results:
        name = html.escape(item.path.name)
        if item.result is None:
            assert item.error is not None
            rows.append(f"<tr><th>{name}</th><td colspan=9 class=err>{item.error.code}: "
                        f"{html.escape(item.error.message)}</td></tr>")
            continue
        cells = []
        for rendition, path in zip(item.result.renditions, item.written, strict=True):
            src = html.escape(path.relative_to(out_dir).as_posix())
            cells.append(f"<td><img src='{src}' loading=lazy><br>{rendition.name} "
                         f"{rendition.width}&times;{rendition.height} {rendition.format} "
                         f"{len(rendition.data):,} B</td>")
        p = item.result.placeholder
        cells.append(f"<td><img class=lqip src='{p.lqip}'><br><code>{p.blurhash}</code></td>"
                     f"<td><div class=swatch style='background:{p.dominant_color}'></div>"
                     f"{p.dominant_color}</td>")
        rows.append(f"<tr><th>{name}<br>{item.result.source_width}&times;"
                    f"{item.result.source_height} {item.result.source_format}<br>"
                    f"{item.seconds * 1000:.0f} ms</th>{''.join(cells)}</tr>")
    return (
        "<!doctype html><meta charset=utf-8><title>Cover renditions</title><style>"
        "body{font:14px sans-serif}td,th{vertical-align:top;padding:8px;text-align:left}"
        "img{max-height:240px;max-width:360px}img.lqip{width:120px;image-rendering:auto}"
        ".swatch{width:60px;height:120px}.err{color:#b00}</style>"
        f"<table>{''.join(rows)}</table>")
