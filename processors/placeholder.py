"""What a page shows before the real image arrives: dominant colour, a tiny preview, a blurhash.

The blurhash follows the reference algorithm (github.com/woltapp/blurhash): DCT components of
the linear-light image, quantised and written in base 83.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np
import pyvips

_LQIP_WIDTH = 16  # pixels; a 16 px WebP at q30 stays far below 1 KB
_HASH_SIZE = 32  # pixels; more adds nothing a 4x3 hash can carry
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


@dataclass(frozen=True)
class Placeholder:
    dominant_color: str  # "#rrggbb"
    lqip: str  # data: URI, well under 1 KB
    blurhash: str


def make_placeholder(image: pyvips.Image) -> Placeholder:
    """All three placeholders from an 8-bit sRGB image (ideally an already small one)."""
    flat = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
    small = flat.thumbnail_image(_HASH_SIZE, height=_HASH_SIZE).copy_memory()
    pixels = np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8,
                        shape=(small.height, small.width, small.bands))
    r, g, b = (round(float(v)) for v in pixels.reshape(-1, small.bands).mean(axis=0)[:3])
    tiny = small.thumbnail_image(_LQIP_WIDTH, height=10_000_000)
    preview = bytes(tiny.webpsave_buffer(Q=30, keep="none"))
    portrait = small.height > small.width
    return Placeholder(
        dominant_color=f"#{r:02x}{g:02x}{b:02x}",
        lqip="data:image/webp;base64," + base64.b64encode(preview).decode("ascii"),
        blurhash=blurhash(pixels, 3 if portrait else 4, 4 if portrait else 3),
    )


def blurhash(pixels: np.ndarray, x_components: int = 4, y_components: int = 3) -> str:
    """The blurhash of an (height, width, 3) uint8 sRGB array."""
    height, width = pixels.shape[:2]
    value = pixels[:, :, :3].astype(np.float64) / 255
    linear = np.where(value <= 0.04045, value / 12.92, ((value + 0.055) / 1.055) ** 2.4)
    ys = np.cos(np.pi * np.outer(np.arange(y_components), np.arange(height)) / height)
    xs = np.cos(np.pi * np.outer(np.arange(x_components), np.arange(width)) / width)
    # factors[j, i, c] = sum over pixels of cos_y(j) * cos_x(i) * linear[c], normalised
    factors = np.einsum("jy,ix,yxc->jic", ys, xs, linear) / (width * height)
    factors[1:, :, :] *= 2
    factors[0, 1:, :] *= 2
    flat = factors.reshape(-1, 3)
    dc, ac = flat[0], flat[1:]
    out = _b83((x_components - 1) + (y_components - 1) * 9, 1)
    if len(ac):
        quantised = max(0, min(82, math.floor(float(np.abs(ac).max()) * 166 - 0.5)))
        maximum = (quantised + 1) / 166
        out += _b83(quantised, 1)
    else:
        maximum = 1.0
        out += _b83(0, 1)
    out += _b83((_to_srgb(dc[0]) << 16) + (_to_srgb(dc[1]) << 8) + _to_srgb(dc[2]), 4)
    for r, g, b in ac:
        out += _b83(_quant(r, maximum) * 361 + _quant(g, maximum) * 19 + _quant(b, maximum), 2)
    return out


def _to_srgb(value: float) -> int:
    v = min(1.0, max(0.0, float(value)))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _quant(value: float, maximum: float) -> int:
    scaled = value / maximum
    signed = math.copysign(abs(scaled) ** 0.5, scaled)
    return max(0, min(18, math.floor(signed * 9 + 9.5)))


def _b83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - i - 1)) % 83] for i in range(length))
