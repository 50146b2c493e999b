"""Frozen specifications of what to render: renditions, presets and input limits."""

from __future__ import annotations

from dataclasses import dataclass

OUTPUT_FORMATS = {
    "jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif", "png": "image/png"}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}


@dataclass(frozen=True)
class RenditionSpec:
    """One output: ``width`` in pixels (never enlarged), ``format`` and ``quality`` (1-100)."""

    name: str
    width: int
    format: str
    quality: int = 80

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"rendition name {self.name!r} must be a simple identifier")
        if not 1 <= self.width <= 10_000:
            raise ValueError(f"rendition {self.name}: width {self.width} outside 1..10000")
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"rendition {self.name}: format {self.format!r} not one of "
                             f"{sorted(OUTPUT_FORMATS)}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"rendition {self.name}: quality {self.quality} outside 1..100")

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return OUTPUT_FORMATS[self.format]


@dataclass(frozen=True)
class Preset:
    """A named, versioned set of renditions. Bump ``version`` whenever the output changes."""

    name: str
    version: str
    renditions: tuple[RenditionSpec, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.renditions]
        if not names:
            raise ValueError(f"preset {self.name}: no renditions")
        if len(set(names)) != len(names):
            raise ValueError(f"preset {self.name}: duplicate rendition names {names}")


@dataclass(frozen=True)
class Limits:
    """Caps applied from the image header, before any pixel is decoded."""

    max_pixels: int = 16_800_000  # width x height of one frame; imgproxy's default
    max_frames: int = 100


DEFAULT_PRESET = Preset(
    name="cover",
    version="1",
    renditions=(
        RenditionSpec("thumb", 200, "jpeg", 80),
        RenditionSpec("medium", 800, "webp", 80),
        RenditionSpec("large", 1600, "jpeg", 85),
    ),
)

PRESETS: dict[str, Preset] = {DEFAULT_PRESET.name: DEFAULT_PRESET}
