"""A cover-like corpus made from the photographs scikit-image ships (BSD/public domain).

The scikit-image wheel is downloaded once (not installed) and its sample photos are cut into
portrait mosaics of 2 x 3 tiles, so every cover has real photographic detail at full size.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pyvips

WHEEL = "scikit-image==0.26.0"
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
          "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
          "brick.png", "grass.png", "camera.png")
SIZES = ((1800, 2700),) * 12 + ((1000, 1500),) * 4  # most uploads large, some small


def photos(cache: Path) -> dict[str, bytes]:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scikit_image-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps",
                        "--only-binary=:all:", "--quiet", "--disable-pip-version-check",
                        "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("scikit_image-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return {name: wheel.read(f"skimage/data/{name}") for name in PHOTOS}


def build(cache: Path) -> list[Path]:
    """The corpus files (JPEG, quality 90), made once and kept in ``cache/corpus``."""
    out = cache / "corpus"
    files = [out / f"cover-{i:02d}.jpg" for i in range(len(SIZES))]
    if all(f.exists() for f in files):
        return files
    out.mkdir(parents=True, exist_ok=True)
    sources = [pyvips.Image.new_from_buffer(data, "") for data in photos(cache).values()]
    sources = [s.colourspace("srgb")[:3] if s.bands < 3 or s.interpretation != "srgb"
               else s[:3] for s in sources]
    for i, ((width, height), path) in enumerate(zip(SIZES, files, strict=True)):
        cell_w, cell_h = width // 2, height // 3
        tiles = [sources[(i * 5 + k) % len(sources)].thumbnail_image(
            cell_w, height=cell_h, crop="centre", size="both") for k in range(6)]
        mosaic = pyvips.Image.arrayjoin(tiles, across=2).cast("uchar")
        mosaic.copy(interpretation="srgb").jpegsave(str(path), Q=90)
    return files
