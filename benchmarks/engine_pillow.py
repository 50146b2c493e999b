"""A plain Pillow implementation of the same renditions: open once, resize with Lanczos from
the full image for each rendition, save progressive optimised JPEG and WebP method 4."""

from __future__ import annotations

import io

from PIL import Image

from benchmarks.harness import run
from processors.spec import DEFAULT_PRESET


def render(data: bytes) -> list[tuple[str, str, bytes]]:
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    outputs = []
    for spec in DEFAULT_PRESET.renditions:
        assert spec.width is not None
        width = min(spec.width, image.width)
        height = round(image.height * width / image.width)
        resized = image.resize((width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if spec.format == "jpeg":
            resized.save(buffer, "JPEG", quality=spec.quality, optimize=True, progressive=True)
        else:
            resized.save(buffer, "WEBP", quality=spec.quality, method=4)
        outputs.append((spec.name, spec.extension, buffer.getvalue()))
    return outputs


if __name__ == "__main__":
    run(render)
