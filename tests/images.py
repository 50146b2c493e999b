"""Test images made on the fly, and perceptual comparisons (no byte snapshots)."""

from __future__ import annotations

import numpy as np
import pyvips


def gradient(width: int, height: int, alpha: bool = False) -> pyvips.Image:
    """A smooth colour image with a distinct top-left marker (for orientation checks)."""
    xyz = pyvips.Image.xyz(width, height)
    red = (xyz[0] * 255 / max(1, width - 1)).cast("uchar")
    green = (xyz[1] * 255 / max(1, height - 1)).cast("uchar")
    blue = pyvips.Image.black(width, height) + 60
    image = red.bandjoin([green, blue.cast("uchar")]).copy(interpretation="srgb")
    image = image.draw_rect([255, 255, 255], 0, 0, width // 4, height // 4, fill=True)
    if alpha:
        image = image.bandjoin((pyvips.Image.black(width, height) + 128).cast("uchar"))
    return image


def encode(image: pyvips.Image, fmt: str, **options: object) -> bytes:
    return bytes(image.write_to_buffer(f".{fmt}", **options))


def to_array(image: pyvips.Image) -> np.ndarray:
    flat = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
    if flat.interpretation != "srgb":
        flat = flat.colourspace("srgb")
    return np.ndarray(buffer=flat.write_to_memory(), dtype=np.uint8,
                      shape=[flat.height, flat.width, flat.bands])[:, :, :3].astype(float)


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """Global SSIM of two images after resizing ``b`` to ``a``'s size (luma only)."""
    if (a.width, a.height) != (b.width, b.height):
        b = b.resize(a.width / b.width, vscale=a.height / b.height)
    x = to_array(a).mean(axis=2)
    y = to_array(b).mean(axis=2)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(((2 * mx * my + c1) * (2 * cov + c2)) /
                 ((mx**2 + my**2 + c1) * (x.var() + y.var() + c2)))


def solid(width: int, height: int, colour: list[int]) -> pyvips.Image:
    """One flat sRGB colour."""
    return pyvips.Image.black(width, height).new_from_image(colour).cast("uchar").copy(
        interpretation="srgb")
