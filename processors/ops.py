"""The optional steps of a rendition, one small function each.

Geometry ops run before the fit on the decoded (already shrunk) source, so their pixel
arguments are scaled by ``scale``, the decoded size over the source size. Pixel ops run after
the fit, on the rendition. Every function returns a new image; none touches its input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyvips

from processors import errors
from processors.spec import Blur, Crop, Flip, Rotate, Sharpen, Watermark, rgb

# --- geometry (before the fit) -------------------------------------------------------------


def crop(image: pyvips.Image, op: Crop, scale: float) -> pyvips.Image:
    """Cut the box (source pixels) out of the image; a box reaching outside is clipped."""
    left, top = round(op.left * scale), round(op.top * scale)
    right = min(image.width, round((op.left + op.width) * scale))
    bottom = min(image.height, round((op.top + op.height) * scale))
    if left >= image.width or top >= image.height or right <= left or bottom <= top:
        raise errors.PermanentError(
            errors.INVALID_SPEC, f"crop box {op.left},{op.top} {op.width}x{op.height} lies "
            f"outside the {round(image.width / scale)}x{round(image.height / scale)} image")
    return image.crop(left, top, right - left, bottom - top)


def rotate(image: pyvips.Image, op: Rotate, scale: float) -> pyvips.Image:
    """Clockwise; right angles are exact, any other angle fills the corners with background."""
    angle = op.angle % 360
    if angle == 0:
        return image
    if angle in (90, 180, 270):
        return {90: image.rot90, 180: image.rot180, 270: image.rot270}[int(angle)]()
    background = rgb(op.background) + ([0.0] if image.hasalpha() else [])
    return image.rotate(angle, background=background)


def flip(image: pyvips.Image, op: Flip, scale: float) -> pyvips.Image:
    return image.fliphor() if op.direction == "horizontal" else image.flipver()


def size_after(width: float, height: float, op: Any) -> tuple[float, float]:
    """The size a geometry op turns ``width`` x ``height`` (source pixels) into."""
    if isinstance(op, Crop):
        return (max(0.0, min(width - op.left, op.width)), max(0.0, min(height - op.top,
                                                                          op.height)))
    if isinstance(op, Rotate):
        rad = math.radians(op.angle % 360)
        cos, sin = abs(math.cos(rad)), abs(math.sin(rad))
        return width * cos + height * sin, width * sin + height * cos
    return width, height


# --- pixels (after the fit) ----------------------------------------------------------------


def blur(image: pyvips.Image, op: Blur) -> pyvips.Image:
    return image.gaussblur(op.sigma)


def sharpen(image: pyvips.Image, op: Sharpen) -> pyvips.Image:
    return image.sharpen(sigma=op.sigma)


def watermark(image: pyvips.Image, op: Watermark) -> pyvips.Image:
    """Blend text or a logo at one of nine positions, ``opacity`` of the way in."""
    mark = _logo(op, image.width) if op.logo is not None else _text(op, image.width)
    margin = round(op.margin * image.width)
    room_w, room_h = max(1, image.width - 2 * margin), max(1, image.height - 2 * margin)
    if mark.width > room_w or mark.height > room_h:  # never larger than the image itself
        mark = mark.resize(min(room_w / mark.width, room_h / mark.height))
    x, y = _place(op.position, image.width, image.height, mark.width, mark.height, margin)
    out = image.composite2(mark, "over", x=x, y=y)
    if not image.hasalpha():
        out = out.extract_band(0, n=image.bands)
    return out.cast(image.format)


def _text(op: Watermark, width: int) -> pyvips.Image:
    height = max(6, round(op.size * width))
    assert op.text is not None
    # At 72 dpi a point is a pixel; pango sizes the em box, so this is close to the cap height.
    mask = pyvips.Image.text(_escape(op.text), font=f"{op.font} {height}", dpi=72)
    ink = (pyvips.Image.black(mask.width, mask.height) + rgb(op.colour)).cast("uchar")
    alpha = (mask * op.opacity).cast("uchar")
    return ink.bandjoin(alpha).copy(interpretation="srgb")


def _logo(op: Watermark, width: int) -> pyvips.Image:
    assert op.logo is not None
    try:
        logo = pyvips.Image.new_from_buffer(op.logo, "")
    except pyvips.Error:
        raise errors.PermanentError(errors.INVALID_SPEC, "watermark logo is not an image") from None
    logo = logo.colourspace("srgb").cast("uchar") if logo.interpretation != "srgb" else logo
    if not logo.hasalpha():
        logo = logo.bandjoin(255)
    logo = logo.thumbnail_image(max(1, round(op.size * width)), height=10_000_000)
    return logo[:3].bandjoin((logo[3] * op.opacity).cast("uchar")).copy(interpretation="srgb")


def _place(position: str, width: int, height: int, mark_w: int, mark_h: int,
           margin: int) -> tuple[int, int]:
    xs = {"west": margin, "centre": (width - mark_w) // 2, "east": width - mark_w - margin}
    ys = {"north": margin, "centre": (height - mark_h) // 2, "south": height - mark_h - margin}
    vertical, _, horizontal = position.partition("-")
    if not horizontal:  # "north", "east", "centre": the other axis is centred
        vertical, horizontal = ((vertical, "centre") if vertical in ys else
                                ("centre", vertical))
    return xs[horizontal], ys[vertical]


def _escape(text: str) -> str:
    """``Image.text`` reads Pango markup: a user's ``<`` or ``&`` must stay literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


GEOMETRY: dict[type, Callable[[pyvips.Image, Any, float], pyvips.Image]] = {
    Crop: crop, Rotate: rotate, Flip: flip}
PIXELS: dict[type, Callable[[pyvips.Image, Any], pyvips.Image]] = {
    Blur: blur, Sharpen: sharpen, Watermark: watermark}
