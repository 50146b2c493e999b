"""Frozen specifications of what to render: renditions, their ops, presets and input limits.

Specs arrive as plain data (a preset file, an event's custom ``outputs``, a CLI option) and are
validated here, before any work, into immutable models. ``parse_preset`` and ``parse_outputs``
raise ``SpecError`` with a reason that names the offending field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

OUTPUT_FORMATS = {
    "jpeg": "image/jpeg", "webp": "image/webp", "avif": "image/avif", "png": "image/png"}
EXTENSIONS = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png"}
MAX_SIDE = 10_000  # pixels; no rendition may be larger on either side

Format = Literal["jpeg", "webp", "avif", "png"]
Fit = Literal["inside", "cover", "width", "height"]
Gravity = Literal["centre", "attention", "entropy"]
Position = Literal["north-west", "north", "north-east", "west", "centre", "east",
                   "south-west", "south", "south-east"]


class SpecError(ValueError):
    """A spec that cannot be rendered; the message says which field and why."""


def _colour(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 7 or text[0] != "#" or any(c not in "0123456789abcdef" for c in text[1:]):
        raise ValueError(f"colour {value!r} must look like #rrggbb")
    return text


def rgb(colour: str) -> list[float]:
    """``#rrggbb`` as three 0-255 values."""
    return [float(int(colour[i:i + 2], 16)) for i in (1, 3, 5)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- ops ---------------------------------------------------------------------------------
# Geometry ops (crop, rotate, flip) run before the fit, in source pixels after EXIF rotation;
# pixel ops (blur, sharpen, watermark) run after it, on the rendition itself.


class Crop(_Frozen):
    op: Literal["crop"] = "crop"
    left: int = Field(ge=0)
    top: int = Field(ge=0)
    width: int = Field(gt=0, le=100_000)
    height: int = Field(gt=0, le=100_000)


class Rotate(_Frozen):
    op: Literal["rotate"] = "rotate"
    angle: float = Field(ge=-360, le=360, description="degrees clockwise")
    background: str = "#ffffff"  # fills the corners an arbitrary angle uncovers

    _check_background = field_validator("background")(_colour)


class Flip(_Frozen):
    op: Literal["flip"] = "flip"
    direction: Literal["horizontal", "vertical"] = "horizontal"


class Blur(_Frozen):
    op: Literal["blur"] = "blur"
    sigma: float = Field(ge=0.3, le=50)


class Sharpen(_Frozen):
    op: Literal["sharpen"] = "sharpen"
    sigma: float = Field(default=1.0, ge=0.3, le=10)


class Watermark(_Frozen):
    """Text, or a logo image (preset files only), blended onto the rendition."""

    op: Literal["watermark"] = "watermark"
    text: str | None = Field(default=None, min_length=1, max_length=200)
    logo: bytes | None = Field(default=None, repr=False, exclude=True)
    font: str = Field(default="sans", max_length=100)
    size: float = Field(default=0.05, gt=0, le=1, description="height as a share of the width")
    colour: str = "#ffffff"
    opacity: float = Field(default=0.5, gt=0, le=1)
    position: Position = "south-east"
    margin: float = Field(default=0.02, ge=0, le=0.25, description="share of the width")

    _check_colour = field_validator("colour")(_colour)

    @model_validator(mode="after")
    def _one_kind(self) -> Watermark:
        if (self.text is None) == (self.logo is None):
            raise ValueError("a watermark needs exactly one of text or logo")
        return self


Op = Annotated[Crop | Rotate | Flip | Blur | Sharpen | Watermark, Field(discriminator="op")]
GEOMETRY_OPS = (Crop, Rotate, Flip)


# --- renditions and presets ----------------------------------------------------------------


class RenditionSpec(_Frozen):
    """One output. ``fit`` decides how ``width`` x ``height`` is met (see README); sizes are
    never enlarged unless ``enlarge`` says so."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
    width: int | None = Field(default=None, ge=1, le=MAX_SIDE)
    height: int | None = Field(default=None, ge=1, le=MAX_SIDE)
    fit: Fit = "inside"
    gravity: Gravity = "centre"
    enlarge: bool = False
    format: Format = "jpeg"
    quality: int = Field(default=80, ge=1, le=100)
    background: str = "#ffffff"  # what alpha is flattened onto for JPEG
    ops: tuple[Op, ...] = ()

    _check_background = field_validator("background")(_colour)

    @field_validator("gravity", mode="before")
    @classmethod
    def _british(cls, value: Any) -> Any:
        return "centre" if value == "center" else value

    @model_validator(mode="after")
    def _sizes_fit(self) -> RenditionSpec:
        need = {"inside": self.width or self.height, "width": self.width,
                "height": self.height, "cover": self.width and self.height}[self.fit]
        if not need:
            wanted = {"inside": "width or height", "width": "width", "height": "height",
                      "cover": "width and height"}[self.fit]
            raise ValueError(f"fit {self.fit!r} needs {wanted}")
        return self

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return OUTPUT_FORMATS[self.format]

    @property
    def geometry_ops(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if isinstance(op, GEOMETRY_OPS))

    @property
    def pixel_ops(self) -> tuple[Op, ...]:
        return tuple(op for op in self.ops if not isinstance(op, GEOMETRY_OPS))


class Preset(_Frozen):
    """A named, versioned set of renditions. Bump ``version`` whenever the output changes."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    version: str = Field(min_length=1, max_length=40)
    renditions: tuple[RenditionSpec, ...] = Field(min_length=1, max_length=12)
    description: str = ""

    @model_validator(mode="after")
    def _unique_names(self) -> Preset:
        names = [r.name for r in self.renditions]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate rendition names {names}")
        return self


@dataclass(frozen=True)
class Limits:
    """Caps applied from the image header, before any pixel is decoded."""

    max_pixels: int = 16_800_000  # width x height of one frame; imgproxy's default
    max_frames: int = 100  # pages or animation frames
    max_memory_mb: int = 256  # one frame fully decoded: width x height x bands x sample size


def rendition(name: str, width: int, format: Format, quality: int = 80,
              **more: Any) -> RenditionSpec:
    """Shorthand for code and tests: ``rendition("thumb", 200, "jpeg", 80)``."""
    return RenditionSpec(name=name, width=width, format=format, quality=quality, **more)


DEFAULT_PRESET = Preset(
    name="cover",
    version="1",
    description="Book covers: a list thumbnail, a page image and a zoomable large one.",
    renditions=(
        rendition("thumb", 200, "jpeg", 80),
        rendition("medium", 800, "webp", 80),
        rendition("large", 1600, "jpeg", 85),
    ),
)


def parse_preset(name: str, data: Any) -> Preset:
    """A preset from plain data (one table of a preset file)."""
    if not isinstance(data, dict):
        raise SpecError(f"preset {name!r}: expected a table, got {type(data).__name__}")
    try:
        return Preset.model_validate({"name": name, **data})
    except ValidationError as exc:
        raise SpecError(f"preset {name!r}: {_reason(exc)}") from None


def parse_outputs(data: Any) -> Preset:
    """Custom outputs from an event or request (a list of rendition specs, or its JSON text)
    as an ad-hoc preset whose version is the hash of the spec, so equal requests match."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise SpecError(f"outputs: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise SpecError("outputs: expected a list of rendition specs")
    specs = []
    for index, item in enumerate(data):
        ops = item.get("ops") if isinstance(item, dict) else None
        if isinstance(ops, list) and any(isinstance(op, dict) and "logo" in op for op in ops):
            raise SpecError(f"outputs.{index}: logo watermarks come from preset files only")
        try:
            specs.append(RenditionSpec.model_validate(item))
        except ValidationError as exc:
            raise SpecError(f"outputs.{index}: {_reason(exc)}") from None
    canonical = json.dumps([s.model_dump(mode="json") for s in specs], sort_keys=True)
    try:
        return Preset(name="custom", version=hashlib.sha256(canonical.encode()).hexdigest()[:16],
                      renditions=tuple(specs))
    except ValidationError as exc:
        raise SpecError(f"outputs: {_reason(exc)}") from None


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
