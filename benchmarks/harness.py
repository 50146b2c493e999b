"""What every Python engine shares: ``python -m benchmarks.engine_X IN OUT ROUNDS``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# One cover in (its bytes, or what ``prepare`` made of them), its renditions out as
# (name, extension, encoded bytes).
Render = Callable[[Any], list[tuple[str, str, bytes]]]


def peak_rss_kb() -> int:
    """VmHWM: unlike ru_maxrss, it starts afresh at exec (not at the parent's peak)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def run(render: Render, prepare: Callable[[bytes], Any] | None = None) -> None:
    """Warm up on one cover, time ``ROUNDS`` passes over the corpus, write the last pass's
    outputs to ``OUT`` (untimed) and print images, seconds and peak RSS as JSON. ``prepare``
    turns each file's bytes into ``render``'s input before the clock starts."""
    corpus, out, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    files = sorted(corpus.glob("*.jpg"))
    data = [(prepare or bytes)(f.read_bytes()) for f in files]
    render(data[0])  # load libraries, fill caches
    started = time.perf_counter()
    for _ in range(rounds):
        results = [render(d) for d in data]
    seconds = time.perf_counter() - started
    for f, result in zip(files, results, strict=True):
        for name, extension, encoded in result:
            (out / f"{f.stem}.{name}.{extension}").write_bytes(encoded)
    print(json.dumps({"images": len(data) * rounds, "seconds": seconds,
                      "max_rss_kb": peak_rss_kb()}))
