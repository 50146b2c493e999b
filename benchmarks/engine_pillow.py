"""A plain Pillow implementation of the same renditions: open once, resize with Lanczos from
the full image for each rendition, save progressive optimised JPEG and WebP method 4."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from PIL import Image

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


def peak_rss_kb() -> int:
    """VmHWM: unlike ru_maxrss, it starts afresh at exec (not at the parent's peak)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def main() -> None:
    corpus, out, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    files = sorted(corpus.glob("*.jpg"))
    data = [f.read_bytes() for f in files]
    render(data[0])
    started = time.perf_counter()
    for _ in range(rounds):
        results = [render(d) for d in data]
    seconds = time.perf_counter() - started
    for f, result in zip(files, results, strict=True):
        for name, extension, encoded in result:
            (out / f"{f.stem}.{name}.{extension}").write_bytes(encoded)
    print(json.dumps({"images": len(data) * rounds, "seconds": seconds,
                      "max_rss_kb": peak_rss_kb()}))


if __name__ == "__main__":
    main()
