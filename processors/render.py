"""Turn one source image into the renditions of a preset, plus a placeholder.

The algorithm on one screen::

    SOURCE_STEPS    = (guard_type, guard_header)              # before any pixel is decoded
    decode          : shrink-on-load to the widest rendition, auto-rotate, fail on truncation
    NORMALISE_STEPS = (to_srgb,)                              # once, for every rendition
    per rendition   : fit_width, then RENDITION_STEPS = (flatten_alpha,), then encode;
                      widest first, each smaller one derived from the one before, in memory
    placeholder     : dominant colour and a tiny data-URI preview from the smallest rendition

libvips work is synchronous and CPU-bound: callers run ``render`` off the event loop.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import pyvips

from processors import errors
from processors.sniff import JPEG, sniff
from processors.spec import Limits, Preset, RenditionSpec

# Loaders of formats that can run arbitrary delegates (ImageMagick, PDF, SVG scripts) stay off.
pyvips.block_untrusted_set(True)

# Image.thumbnail takes a box; a huge height means "fit the width only".
_UNBOUNDED = 10_000_000
_LQIP_WIDTH = 16


@dataclass(frozen=True)
class Rendered:
    """One encoded rendition."""

    name: str
    data: bytes
    width: int
    height: int
    format: str
    content_type: str
    extension: str


@dataclass(frozen=True)
class Placeholder:
    """What a page shows before the real image arrives."""

    dominant_color: str  # "#rrggbb"
    lqip: str  # data: URI, well under 1 KB


@dataclass(frozen=True)
class RenderResult:
    source_format: str
    source_width: int
    source_height: int
    renditions: tuple[Rendered, ...]
    placeholder: Placeholder


# --- steps before decoding ----------------------------------------------------------------


def guard_type(data: bytes) -> str:
    """The real type from magic bytes; anything else is ``unsupported_type``."""
    fmt = sniff(data[:16])
    if fmt is None:
        raise errors.PermanentError(errors.UNSUPPORTED_TYPE, "data is not a supported image type")
    return fmt


def guard_header(data: bytes, limits: Limits) -> pyvips.Image:
    """Open the header only and refuse pixel bombs and frame floods before decoding."""
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error as exc:
        raise errors.PermanentError(
            errors.CORRUPT_IMAGE, f"unreadable header: {_first_line(exc)}") from None
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise errors.PermanentError(
            errors.TOO_MANY_PIXELS,
            f"{header.width}x{header.height} is {pixels} pixels, limit {limits.max_pixels}",
        )
    frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
    if frames > limits.max_frames:
        raise errors.PermanentError(
            errors.TOO_MANY_FRAMES, f"{frames} frames, limit {limits.max_frames}"
        )
    return header


def decode(data: bytes, width: int) -> pyvips.Image:
    """Decode once, shrinking on load to ``width`` (never enlarging) and applying EXIF rotation.

    ``fail_on=truncated`` goes in the option string: ``thumbnail_buffer`` ignores the keyword
    form (libvips #5195) and would fill a truncated image with grey instead.
    """
    image = pyvips.Image.thumbnail_buffer(
        data, width, height=_UNBOUNDED, size="down", option_string="fail_on=truncated"
    )
    return image.copy_memory()  # decode now, so corrupt data fails here and only once


# --- normalisation, once per source ---------------------------------------------------------


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    """CMYK, greyscale and 16-bit inputs all leave as 8-bit sRGB (alpha kept)."""
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


NORMALISE_STEPS: tuple[Callable[[pyvips.Image], pyvips.Image], ...] = (to_srgb,)


# --- per-rendition steps ------------------------------------------------------------------


def fit_width(image: pyvips.Image, spec: RenditionSpec) -> pyvips.Image:
    if image.width <= spec.width:
        return image
    return image.thumbnail_image(spec.width, height=_UNBOUNDED, size="down")


def flatten_alpha(image: pyvips.Image, spec: RenditionSpec) -> pyvips.Image:
    if spec.format != JPEG or not image.hasalpha():
        return image
    return image.flatten(background=[255, 255, 255])


# Shaping for one rendition's encoder only; the resized image itself is carried forward.
RENDITION_STEPS: tuple[Callable[[pyvips.Image, RenditionSpec], pyvips.Image], ...] = (
    flatten_alpha,
)


def encode(image: pyvips.Image, spec: RenditionSpec) -> bytes:
    """Encode with metadata stripped (``keep="none"``: no EXIF, XMP, IPTC or GPS)."""
    q = spec.quality
    if spec.format == "jpeg":
        out = image.jpegsave_buffer(Q=q, optimize_coding=True, interlace=True, keep="none")
    elif spec.format == "webp":
        out = image.webpsave_buffer(Q=q, effort=4, keep="none")
    elif spec.format == "avif":
        out = image.heifsave_buffer(Q=q, compression="av1", effort=2, keep="none")
    else:
        out = image.pngsave_buffer(compression=6, keep="none")
    return bytes(out)


# --- placeholder --------------------------------------------------------------------------


def make_placeholder(image: pyvips.Image) -> Placeholder:
    flat = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
    r, g, b = (round(v) for v in flat.resize(1 / flat.width, vscale=1 / flat.height)(0, 0)[:3])
    tiny = flat.thumbnail_image(_LQIP_WIDTH, height=_UNBOUNDED)
    preview = bytes(tiny.webpsave_buffer(Q=30, keep="none"))
    return Placeholder(
        dominant_color=f"#{r:02x}{g:02x}{b:02x}",
        lqip="data:image/webp;base64," + base64.b64encode(preview).decode("ascii"),
    )


# --- the whole thing ----------------------------------------------------------------------


def render(data: bytes, preset: Preset, limits: Limits | None = None) -> RenderResult:
    """Render every rendition of ``preset`` from the encoded image ``data``.

    Raises ``PermanentError`` with a stable code for anything that is not a safe, intact image.
    """
    limits = limits or Limits()
    source_format = guard_type(data)
    header = guard_header(data, limits)
    specs = sorted(preset.renditions, key=lambda s: s.width, reverse=True)
    try:
        image = decode(data, specs[0].width)
        for normalise in NORMALISE_STEPS:
            image = normalise(image)
        outputs: dict[str, Rendered] = {}
        for spec in specs:  # widest first: each smaller one is derived from the one before
            image = fit_width(image, spec)
            shaped = image
            for step in RENDITION_STEPS:
                shaped = step(shaped, spec)
            outputs[spec.name] = Rendered(
                name=spec.name,
                data=encode(shaped, spec),
                width=shaped.width,
                height=shaped.height,
                format=spec.format,
                content_type=spec.content_type,
                extension=spec.extension,
            )
        placeholder = make_placeholder(image)
    except pyvips.Error as exc:
        raise errors.PermanentError(errors.CORRUPT_IMAGE, _first_line(exc)) from None
    width, height = _oriented_size(header)
    return RenderResult(
        source_format=source_format,
        source_width=width,
        source_height=height,
        renditions=tuple(outputs[r.name] for r in preset.renditions),
        placeholder=placeholder,
    )


def _oriented_size(header: pyvips.Image) -> tuple[int, int]:
    """Width and height as displayed, after EXIF orientation 5-8 swaps the axes."""
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def _first_line(exc: pyvips.Error) -> str:
    detail = (exc.detail or exc.message or "").strip().splitlines()
    return detail[0] if detail else "libvips error"
