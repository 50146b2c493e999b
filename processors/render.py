"""Turn one source image into the renditions of a preset, plus its placeholders.

The algorithm on one screen::

    SOURCE_STEPS    = (guard_type, guard_header)     # magic bytes, then header-only limits
    plan            : each rendition's scale from the source size, its fit and its ops
    decode          : once, shrink-on-load to the largest scale any rendition needs,
                      EXIF auto-rotate, first frame only, fail on truncation
    NORMALISE_STEPS = (to_srgb,)                     # once, for every rendition
    per rendition, largest first:
        geometry ops (crop, rotate, flip)            # processors.ops.GEOMETRY
        scale                                        # plain renditions start from the last
        crop_to_box (fit = cover, with gravity)      # plain one: smaller from larger, in memory
        pixel ops (blur, sharpen, watermark)         # processors.ops.PIXELS
        flatten_alpha (JPEG), encode (metadata stripped)
    placeholder     : dominant colour, LQIP and blurhash from the smallest plain image

libvips work is synchronous and CPU-bound: callers run ``render`` off the event loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyvips

from processors import errors
from processors.ops import GEOMETRY, PIXELS, size_after
from processors.placeholder import Placeholder, make_placeholder
from processors.sniff import JPEG, sniff
from processors.spec import Limits, Preset, RenditionSpec, rgb

# Only the loaders of the formats accepted as input stay on; the rest (SVG, CSV, matrix, raw,
# .v files, and the untrusted ImageMagick/PDF delegates) fail as if absent.
ALLOWED_LOADERS = ("VipsForeignLoadJpeg", "VipsForeignLoadPng", "VipsForeignLoadWebp",
                   "VipsForeignLoadNsgif", "VipsForeignLoadHeif", "VipsForeignLoadTiff")
pyvips.block_untrusted_set(True)
pyvips.operation_block_set("VipsForeignLoad", True)
for _loader in ALLOWED_LOADERS:
    pyvips.operation_block_set(_loader, False)

_UNBOUNDED = 10_000_000  # a box this tall means "fit the width only"
_SAMPLE_BYTES = {"uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4,
                 "float": 4, "double": 8, "complex": 8, "dpcomplex": 16}


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
class RenderResult:
    source_format: str
    source_width: int
    source_height: int
    renditions: tuple[Rendered, ...]
    placeholder: Placeholder
    # ms per stage: "decode" (decode, colour conversion and resizes: one libvips pipeline,
    # run when the scaled pixels are first needed), "encode", "render" (the rest: guards,
    # crops, ops, placeholder)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A rendition's geometry, worked out from the source size before anything is decoded."""

    spec: RenditionSpec
    scale: float  # output pixels per source pixel
    size: tuple[int, int]  # after scaling
    box: tuple[int, int]  # after the cover crop (== size for the other fits)


def configure(threads: int = 1) -> None:
    """Set libvips' worker threads per render and switch its operation cache off: every source
    is new, so cached results only hold memory. Call once per process."""
    pyvips.concurrency_set(max(1, threads))
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)


# --- steps before decoding ----------------------------------------------------------------


def guard_type(data: bytes) -> str:
    """The real type from magic bytes; anything else is ``unsupported_type``."""
    fmt = sniff(data[:16])
    if fmt is None:
        raise errors.PermanentError(errors.UNSUPPORTED_TYPE, "data is not a supported image type")
    return fmt


def guard_header(data: bytes, limits: Limits) -> pyvips.Image:
    """Open the header only and refuse pixel bombs, frame floods and memory hogs."""
    try:
        header = pyvips.Image.new_from_buffer(data, "", access="sequential")
    except pyvips.Error as exc:
        raise errors.PermanentError(
            errors.CORRUPT_IMAGE, f"unreadable header: {_first_line(exc)}") from None
    pixels = header.width * header.height
    if pixels > limits.max_pixels:
        raise errors.PermanentError(
            errors.TOO_MANY_PIXELS,
            f"{header.width}x{header.height} is {pixels} pixels, limit {limits.max_pixels}")
    frames = header.get("n-pages") if header.get_typeof("n-pages") else 1
    if frames > limits.max_frames:
        raise errors.PermanentError(
            errors.TOO_MANY_FRAMES, f"{frames} frames, limit {limits.max_frames}")
    decoded = pixels * header.bands * _SAMPLE_BYTES.get(header.format, 8)
    if decoded > limits.max_memory_mb * 1024 * 1024:
        raise errors.PermanentError(
            errors.TOO_MUCH_MEMORY, f"one decoded frame needs {decoded // 2**20} MiB, "
            f"limit {limits.max_memory_mb} MiB")
    return header


def plan(spec: RenditionSpec, width: int, height: int) -> Plan:
    """Scale and sizes of one rendition of a ``width`` x ``height`` source (EXIF-rotated)."""
    w, h = float(width), float(height)
    for op in spec.geometry_ops:
        w, h = size_after(w, h, op)
    w, h = max(w, 1.0), max(h, 1.0)
    box_w = spec.width or _UNBOUNDED
    box_h = spec.height or _UNBOUNDED
    scale = {"inside": min(box_w / w, box_h / h), "cover": max(box_w / w, box_h / h),
             "width": box_w / w, "height": box_h / h}[spec.fit]
    if not spec.enlarge:
        scale = min(scale, 1.0)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = (min(size[0], box_w), min(size[1], box_h)) if spec.fit == "cover" else size
    return Plan(spec, scale, size, box)


def decode(data: bytes, width: int) -> pyvips.Image:
    """Decode once, shrinking on load to ``width`` (never enlarging) and applying EXIF rotation.

    Only the first page or frame is read. ``fail_on=truncated`` goes in the option string:
    ``thumbnail_buffer`` ignores the keyword form (libvips #5195) and would fill a truncated
    image with grey instead.
    """
    image = pyvips.Image.thumbnail_buffer(
        data, width, height=_UNBOUNDED, size="down", option_string="fail_on=truncated")
    return image.copy_memory()  # decode now, so corrupt data fails here and only once


# --- normalisation, once per source ---------------------------------------------------------


def to_srgb(image: pyvips.Image) -> pyvips.Image:
    """CMYK, greyscale and 16-bit inputs all leave as 8-bit sRGB (alpha kept)."""
    if image.interpretation != "srgb" or image.format != "uchar":
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


NORMALISE_STEPS = (to_srgb,)


# --- per-rendition steps ------------------------------------------------------------------


def scale_to(image: pyvips.Image, size: tuple[int, int]) -> pyvips.Image:
    if (image.width, image.height) == size:
        return image
    return image.thumbnail_image(size[0], height=size[1], size="force")


def crop_to_box(image: pyvips.Image, plan: Plan) -> pyvips.Image:
    """The ``cover`` fit: cut the box out of the scaled image, where ``gravity`` says."""
    width, height = plan.box
    if (image.width, image.height) == (width, height):
        return image
    if plan.spec.gravity == "centre":
        return image.crop((image.width - width) // 2, (image.height - height) // 2,
                          width, height)
    return image.smartcrop(width, height, interesting=plan.spec.gravity)


def flatten_alpha(image: pyvips.Image, spec: RenditionSpec) -> pyvips.Image:
    if spec.format != JPEG or not image.hasalpha():
        return image
    return image.flatten(background=rgb(spec.background))


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


# --- the whole thing ----------------------------------------------------------------------


def render(data: bytes, preset: Preset, limits: Limits | None = None) -> RenderResult:
    """Render every rendition of ``preset`` from the encoded image ``data``.

    Raises ``PermanentError`` with a stable code for anything that is not a safe, intact image
    or a spec that cannot apply to it.
    """
    limits = limits or Limits()
    clock = _Clock()
    source_format = guard_type(data)
    header = guard_header(data, limits)
    width, height = _oriented_size(header)
    plans = sorted((plan(spec, width, height) for spec in preset.renditions),
                   key=lambda p: p.scale, reverse=True)
    decode_width = math.ceil(width * min(1.0, plans[0].scale))
    try:
        base = decode(data, max(1, decode_width))
        for normalise in NORMALISE_STEPS:
            base = normalise(base)
        shrunk = base.width / width  # decoded pixels per source pixel
        carry = base  # the last plainly scaled image: plain renditions start from it
        outputs: dict[str, Rendered] = {}
        for p in plans:
            outputs[p.spec.name], scaled = _rendition(base, carry, shrunk, p, clock)
            if not p.spec.geometry_ops:
                carry = scaled
        placeholder = make_placeholder(carry)
    except pyvips.Error as exc:
        raise errors.PermanentError(errors.CORRUPT_IMAGE, _first_line(exc)) from None
    return RenderResult(
        source_format=source_format, source_width=width, source_height=height,
        renditions=tuple(outputs[r.name] for r in preset.renditions), placeholder=placeholder,
        timings_ms=clock.split())


def _rendition(base: pyvips.Image, carry: pyvips.Image, shrunk: float,
               p: Plan, clock: _Clock) -> tuple[Rendered, pyvips.Image]:
    """One rendition, and its scaled image before the crop (for smaller ones to start from)."""
    spec = p.spec
    image = base
    for op in spec.geometry_ops:
        image = GEOMETRY[type(op)](image, op, shrunk)
    if not spec.geometry_ops and carry.width >= p.size[0]:
        image = carry
    # Kept in memory: the encoder and the next, smaller rendition both read it.
    with clock.stage("decode"):
        scaled = scale_to(image, p.size).copy_memory()
    image = crop_to_box(scaled, p) if spec.fit == "cover" else scaled
    for op in spec.pixel_ops:
        image = PIXELS[type(op)](image, op)
    image = flatten_alpha(image, spec)
    with clock.stage("encode"):
        data = encode(image, spec)
    rendered = Rendered(name=spec.name, data=data, width=image.width,
                        height=image.height, format=spec.format,
                        content_type=spec.content_type, extension=spec.extension)
    return rendered, scaled


class _Clock:
    """Wall time per stage of one render; what no stage claims is "render"."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {"decode": 0.0, "encode": 0.0}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def split(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        rest = max(0.0, total - sum(self.seconds.values()))
        stages = {**self.seconds, "render": rest}
        return {name: round(seconds * 1000, 2) for name, seconds in stages.items()}


def _oriented_size(header: pyvips.Image) -> tuple[int, int]:
    """Width and height as displayed, after EXIF orientation 5-8 swaps the axes."""
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation in (5, 6, 7, 8):
        return header.height, header.width
    return header.width, header.height


def _first_line(exc: pyvips.Error) -> str:
    detail = (exc.detail or exc.message or "").strip().splitlines()
    return detail[0] if detail else "libvips error"
