"""This project's processing core on one core: ``python -m benchmarks.engine_ours IN OUT N``."""

from __future__ import annotations

from benchmarks.harness import run
from processors import render
from processors.spec import DEFAULT_PRESET


def render_cover(data: bytes) -> list[tuple[str, str, bytes]]:
    result = render.render(data, DEFAULT_PRESET)
    return [(r.name, r.extension, r.data) for r in result.renditions]


if __name__ == "__main__":
    render.configure(threads=1)
    run(render_cover)
