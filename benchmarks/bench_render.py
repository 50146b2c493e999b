"""``make bench-render``: the default preset, single core, this project vs Pillow vs sharp.

Every engine runs in its own process pinned to one CPU (``taskset -c 0``; libvips, sharp and
libuv limited to one thread), renders the whole corpus ``--rounds`` times, and reports
images/s and its peak RSS. Then every output is compared with a reference rendition (the
source resized in one step by libvips, in float) for SSIM, and sizes are summed, so speed is
never bought with quality or bytes unnoticed. Raw results go to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyvips
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from benchmarks import corpus

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SHARP = "sharp@0.35.5"
FLOOR = "encoders alone"  # a bound, not an engine: see engine_floor.py
TARGETS = {"Pillow": 2.5, "sharp": 2.0}  # issue 3: this project's images/s over theirs
console = Console(width=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = corpus.build(CACHE)
    node_prefix = install_sharp()
    engines = {
        "covers (this project)": [sys.executable, "-m", "benchmarks.engine_ours"],
        "Pillow": [sys.executable, "-m", "benchmarks.engine_pillow"],
        "sharp": ["node", str(HERE / "engine_sharp.mjs")],
        FLOOR: [sys.executable, "-m", "benchmarks.engine_floor"],
    }
    env = {**os.environ, "VIPS_CONCURRENCY": "1", "UV_THREADPOOL_SIZE": "1",
           "OMP_NUM_THREADS": "1", "SHARP_PREFIX": str(node_prefix)}
    runs: dict[str, dict[str, float]] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("engines", total=len(engines) * 2)
        for name, command in engines.items():
            out = CACHE / "out" / name.split()[0].lower()
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            done = subprocess.run(["taskset", "-c", "0", *command, str(files[0].parent),
                                   str(out), str(args.rounds)], env=env, cwd=HERE.parent,
                                  check=True, capture_output=True, text=True)
            runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
            progress.advance(task)
            runs[name].update(quality(files, out))
            progress.advance(task)
    report(runs, files, args.rounds)


def install_sharp() -> Path:
    prefix = CACHE / "node"
    if not (prefix / "node_modules" / "sharp").exists():
        console.print(f"installing {SHARP} into {prefix} (once)")
        subprocess.run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                        "--loglevel=error", SHARP], check=True)
    return prefix


def quality(files: list[Path], out: Path) -> dict[str, float]:
    scores, sizes = [], 0
    for source_file in files:
        source = pyvips.Image.new_from_file(str(source_file)).cast("float")
        for output in sorted(out.glob(f"{source_file.stem}.*")):
            image = pyvips.Image.new_from_file(str(output))
            sizes += output.stat().st_size
            reference = source.resize(image.width / source.width,
                                      vscale=image.height / source.height)
            scores.append(ssim(image, reference))
    return {"ssim_mean": float(np.mean(scores)), "ssim_min": float(np.min(scores)),
            "bytes": sizes, "outputs": len(scores)}


def ssim(a: pyvips.Image, b: pyvips.Image, block: int = 8) -> float:
    """Mean SSIM of luma over 8 x 8 blocks."""
    def luma(image: pyvips.Image) -> np.ndarray:
        y = image[:3].cast("float").bandmean()
        data = np.ndarray(buffer=y.write_to_memory(), dtype=np.float32,
                          shape=(y.height, y.width)).astype(np.float64)
        h, w = (data.shape[0] // block) * block, (data.shape[1] // block) * block
        return data[:h, :w].reshape(h // block, block, w // block, block).swapaxes(1, 2)

    x, y = luma(a), luma(b)
    mx, my = x.mean(axis=(2, 3)), y.mean(axis=(2, 3))
    vx, vy = x.var(axis=(2, 3)), y.var(axis=(2, 3))
    cov = ((x - mx[..., None, None]) * (y - my[..., None, None])).mean(axis=(2, 3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(((2 * mx * my + c1) * (2 * cov + c2) /
                  ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def report(runs: dict[str, dict[str, float]], files: list[Path], rounds: int) -> None:
    ours = runs["covers (this project)"]
    ours_rate = ours["images"] / ours["seconds"]
    table = Table("engine", "images/s", "this project is", "peak RSS MB", "SSIM mean",
                  "SSIM min", "output KB", "bytes vs this project",
                  title=f"default preset (thumb 200 JPEG, medium 800 WebP, large 1600 JPEG), "
                        f"{len(files)} covers x {rounds} rounds, one core")
    for name, run in runs.items():
        rate = run["images"] / run["seconds"]
        label = f"{name} (a bound; RSS holds the decoded corpus)" if name == FLOOR else name
        table.add_row(label, f"{rate:.2f}", "-" if run is ours else f"{ours_rate / rate:.2f}x",
                      f"{run['max_rss_kb'] / 1024:.0f}", f"{run['ssim_mean']:.4f}",
                      f"{run['ssim_min']:.4f}", f"{run['bytes'] / 1024:.0f}",
                      f"{run['bytes'] / ours['bytes']:.2f}")
    console.print(table)
    floor_rate = runs[FLOOR]["images"] / runs[FLOOR]["seconds"]
    console.print(f"No engine making these outputs passes {floor_rate:.2f} images/s on this "
                  f"core (the encoders alone; this project reaches "
                  f"{ours_rate / floor_rate:.0%} of that).")
    for peer, target in TARGETS.items():
        peer_rate = runs[peer]["images"] / runs[peer]["seconds"]
        console.print(f"  vs {peer}: target {target}x, measured {ours_rate / peer_rate:.2f}x, "
                      f"bound {floor_rate / peer_rate:.2f}x")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"render-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "rounds": rounds,
                                "corpus": [f.name for f in files], "runs": runs}, indent=2))
    console.print(f"raw results: {path.relative_to(HERE.parent)}")


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    from PIL import __version__ as pillow

    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "libvips": ".".join(str(pyvips.version(i)) for i in range(3)), "pillow": pillow,
            "node": node, "sharp": SHARP}


if __name__ == "__main__":
    main()
