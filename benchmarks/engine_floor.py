"""The encoders alone: a lower bound on any engine's time for the default preset's outputs.

Before the clock starts, every cover is decoded and resized to its three renditions' sizes
(into memory, by libvips). The timed part only encodes those pixels with the settings every
engine here uses: progressive optimised JPEG q80/q85 and WebP q80 effort 4, all through the
same libjpeg-turbo and libwebp. An engine that makes these outputs also has to decode and
resize, so none can be faster than this one: its images/s bounds every ratio.
"""

from __future__ import annotations

import pyvips

from benchmarks.harness import run
from processors import render
from processors.spec import DEFAULT_PRESET, RenditionSpec

Prepared = list[tuple[RenditionSpec, pyvips.Image]]


def prepare(data: bytes) -> Prepared:
    """Each rendition's pixels, decoded and resized, in memory (untimed)."""
    prepared = []
    for spec in DEFAULT_PRESET.renditions:
        assert spec.width is not None
        image = pyvips.Image.thumbnail_buffer(data, spec.width, height=10_000_000, size="down")
        prepared.append((spec, image.copy_memory()))
    return prepared


def encode_all(prepared: Prepared) -> list[tuple[str, str, bytes]]:
    return [(spec.name, spec.extension, render.encode(image, spec))
            for spec, image in prepared]


if __name__ == "__main__":
    render.configure(threads=1)
    run(encode_all, prepare)
