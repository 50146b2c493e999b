"""This project's processing core on one core: ``python -m benchmarks.engine_ours IN OUT N``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from processors import render
from processors.spec import DEFAULT_PRESET


def peak_rss_kb() -> int:
    """VmHWM: unlike ru_maxrss, it starts afresh at exec (not at the parent's peak)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def main() -> None:
    corpus, out, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    render.configure(threads=1)
    files = sorted(corpus.glob("*.jpg"))
    data = [f.read_bytes() for f in files]
    render.render(data[0], DEFAULT_PRESET)  # warm up: load libraries, fill caches
    started = time.perf_counter()
    for _ in range(rounds):
        results = [render.render(d, DEFAULT_PRESET) for d in data]
    seconds = time.perf_counter() - started
    for f, result in zip(files, results, strict=True):
        for r in result.renditions:
            (out / f"{f.stem}.{r.name}.{r.extension}").write_bytes(r.data)
    print(json.dumps({"images": len(data) * rounds, "seconds": seconds,
                      "max_rss_kb": peak_rss_kb()}))


if __name__ == "__main__":
    main()
