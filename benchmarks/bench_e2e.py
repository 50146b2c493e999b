"""``make bench``: the whole pipeline on this machine's real parts, against the core alone.

Real broker (embedded), real Redis, moto's S3 server in its own process, a local HTTP origin
and a SQLite (or Postgres) catalog. For 1 and 2 ``covers worker`` processes it publishes a
burst of ``--events`` covers (the benchmark corpus, each made unique with a JPEG comment so
every one is fetched, rendered and uploaded for real) and measures covers/s, publish-to-
``cover_processed`` latency (Kafka timestamps), peak RSS and CPU per worker, and where the
time goes per stage (the workers' own metrics). The processing core alone is ``covers
render`` on the same files with the same cores. One 1-worker run is sampled by py-spy to
split the worker's CPU between rendering and everything else. Raw results go to
``benchmarks/results/e2e-*.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import pyvips
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from benchmarks import corpus
from streams import codec, embedded, records
from streams.broker import client_options
from streams.settings import Settings, load
from streams.topics import ensure_topics

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
console = Console(width=130)
CORES = os.cpu_count() or 1


def unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a JPEG comment naming ``n``: a distinct source hash, so nothing
    is deduplicated away."""
    comment = f"bench cover {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


@contextmanager
def origin(files: dict[str, bytes]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((embedded.LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{embedded.LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 in a process of its own, so its CPU is not the benchmark's."""
    port = embedded.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", embedded.LOOPBACK,
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        embedded.wait_for_port(port, proc, "moto")
        yield f"http://{embedded.LOOPBACK}:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def core(files: list[Path], out: Path) -> dict[str, float]:
    """``covers render`` on the files, one render per core, as a user would run it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "streams.cli", "render", *map(str, files), "-o",
                    str(out), "--no-contact-sheet", "--jobs", str(CORES)], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    return {"covers": len(files), "seconds": seconds, "covers_per_s": len(files) / seconds}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    return kb / 1024


def _ready(port: str) -> bool:
    try:
        with urlopen(f"http://{embedded.LOOPBACK}:{port}/readyz", timeout=2) as resp:
            return bool(json.loads(resp.read())["ready"])
    except (URLError, OSError, ValueError):
        return False


def _stages(port: str) -> dict[str, tuple[float, float]]:
    with urlopen(f"http://{embedded.LOOPBACK}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    stages: dict[str, list[float]] = {}
    for line in text.splitlines():
        if line.startswith(("cover_stage_duration_seconds_sum",
                            "cover_stage_duration_seconds_count")):
            name, value = line.rsplit(" ", 1)
            stage = name.split('stage="')[1].split('"')[0]
            kind = "sum" if "_sum{" in name else "count"
            stages.setdefault(stage, [0.0, 0.0])[kind == "count"] += float(value)
    return {k: (v[0], v[1]) for k, v in stages.items()}


async def publish(settings: Settings, events: list[records.BookEnriched]) -> dict[str, float]:
    """Send every event; returns each book's Kafka timestamp (ms)."""
    producer = AIOKafkaProducer(**client_options(settings), acks="all",
                                linger_ms=5)
    await producer.start()
    try:
        futures = [(e.book_id, await producer.send(
            settings.topic_book_enriched, codec.BOOK_ENRICHED.encode(e), key=e.book_id.encode()))
            for e in events]
        return {book: float((await f).timestamp) for book, f in futures}
    finally:
        await producer.stop()


async def outcomes(settings: Settings, expected: int, timeout: float,
                   progress: Progress) -> tuple[dict[str, float], int]:
    """Each processed book's ``cover_processed`` timestamp (ms), and the dead-letter count."""
    consumer = AIOKafkaConsumer(settings.topic_cover_processed, settings.topic_dead_letter,
                                **client_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    done: dict[str, float] = {}
    dead = 0
    task = progress.add_task("covers processed", total=expected)
    deadline = time.monotonic() + timeout
    try:
        while len(done) + dead < expected and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for msg in messages:
                    if tp.topic == settings.topic_dead_letter:
                        dead += 1
                    else:
                        done.setdefault((msg.key or b"").decode(), float(msg.timestamp))
            progress.update(task, completed=len(done) + dead)
    finally:
        await consumer.stop()
    return done, dead


def run(workers: int, events: int, sources: list[bytes], base_env: dict[str, str],
        work: Path, profile: bool) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    env = {**base_env, "APP_ID": f"bench-{tag}", "TOPIC_PARTITIONS": "4",
           "TOPIC_BOOK_ENRICHED": f"book_enriched-{tag}",
           "TOPIC_COVER_REQUESTED": f"cover_requested-{tag}",
           "TOPIC_COVER_PROCESSED": f"cover_processed-{tag}",
           "TOPIC_DEAD_LETTER": f"cover_dead_letter-{tag}",
           "TOPIC_RETRY_PREFIX": f"cover_retry-{tag}",
           "STORAGE_URL": f"s3://bench-{tag}", "WORKER_DATA_DIR": str(work / tag / "faust"),
           "CATALOG_URL": base_env.get("CATALOG_URL") or f"sqlite:///{work / tag}.db"}
    settings = load(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})
    asyncio.run(ensure_topics(settings))
    procs = []
    for n in range(workers):
        ports = {"WORKER_WEB_PORT": str(embedded.free_port()),
                 "METRICS_PORT": str(embedded.free_port())}
        log = (work / f"{tag}-worker-{n}.log").open("wb")
        procs.append((subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                       env={**os.environ, **env, **ports}, stdout=log,
                                       stderr=subprocess.STDOUT), ports))
    deadline = time.monotonic() + 90
    while not all(_ready(p["WORKER_WEB_PORT"]) for _, p in procs):
        if time.monotonic() > deadline or any(p.poll() is not None for p, _ in procs):
            raise SystemExit(f"workers did not become ready; logs in {work}")
        time.sleep(0.5)
    url = base_env["BENCH_ORIGIN"]
    books = [records.BookEnriched(f"bench-{tag}-{i}", f"{url}/{i % len(sources)}.jpg")
             for i in range(events)]
    spy = None
    if profile:
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                                "--pid", str(procs[0][0].pid), "--rate", "100", "--format",
                                "raw", "--output", str(work / f"{tag}.pyspy"), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    cpu_before = [_cpu_seconds(p.pid) for p, _ in procs]

    async def burst() -> tuple[dict[str, float], dict[str, float], int]:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
            watcher = asyncio.create_task(outcomes(settings, events, 900, progress))
            sent = await publish(settings, books)
            done, dead = await watcher
        return sent, done, dead

    sent, done, dead = asyncio.run(burst())
    cpu = [_cpu_seconds(p.pid) - before for (p, _), before in zip(procs, cpu_before, strict=True)]
    rss = [_peak_rss_mb(p.pid) for p, _ in procs]
    stages: dict[str, list[float]] = {}
    for _, ports in procs:
        for stage, (total, count) in _stages(ports["METRICS_PORT"]).items():
            stages.setdefault(stage, [0.0, 0.0])
            stages[stage][0] += total
            stages[stage][1] += count
    split = None
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        split = cpu_split(work / f"{tag}.pyspy")
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
    for proc, _ in procs:
        proc.wait(60)
    if dead or len(done) < events:
        raise SystemExit(f"{dead} dead letters, {events - len(done) - dead} missing; logs in "
                         f"{work}")
    latencies = sorted(done[b] - sent[b] for b in done)
    seconds = (max(done.values()) - min(sent.values())) / 1000
    return {
        "workers": workers, "covers": events, "seconds": seconds,
        "covers_per_s": events / seconds,
        "latency_ms": {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95),
                       "p99": _pct(latencies, 99), "max": latencies[-1]},
        "peak_rss_mb": rss, "cpu_seconds": cpu,
        "stages_ms": {k: 1000 * total / count for k, (total, count) in stages.items()
                      if count},
        "cpu_split": split,
    }


def _pct(values: list[float], pct: float) -> float:
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def cpu_split(path: Path) -> dict[str, Any]:
    """Shares of the worker's sampled CPU: rendering (libvips and processors/) and the rest
    by what it is in (the event loop's own work, Kafka, S3, HTTP, JSON logs...), and the
    functions the "other" share was spent in."""
    buckets = {"render": 0, "kafka": 0, "s3": 0, "fetch": 0, "logging": 0, "other": 0}
    leaves: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        if "processors/" in stack or "pyvips" in stack:
            buckets["render"] += n
        elif "aiokafka" in stack or "faust" in stack:
            buckets["kafka"] += n
        elif "botocore" in stack or "aiobotocore" in stack:
            buckets["s3"] += n
        elif "streams/fetch.py" in stack or "aiohttp" in stack:
            buckets["fetch"] += n
        elif "logging" in stack or "streams/logs.py" in stack:
            buckets["logging"] += n
        else:
            buckets["other"] += n
            leaf = stack.rsplit(";", 1)[-1]
            leaves[leaf] = leaves.get(leaf, 0) + n
    total = sum(buckets.values()) or 1
    top = sorted(leaves.items(), key=lambda item: -item[1])[:8]
    return {**{k: v / total for k, v in buckets.items()},
            "other_top": {leaf: n / total for leaf, n in top}}


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": str(CORES), "python": platform.python_version(),
            "libvips": ".".join(str(pyvips.version(i)) for i in range(3))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--workers", default="1,2", help="worker process counts to run")
    parser.add_argument("--catalog", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy sample")
    args = parser.parse_args()
    files = corpus.build(CACHE)
    base = [f.read_bytes() for f in files]
    sources = [unique(base[i % len(base)], i) for i in range(args.events)]
    with tempfile.TemporaryDirectory(prefix="covers-bench-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        paths = []
        for i, data in enumerate(sources):
            paths.append(work / "in" / f"cover-{i:04d}.jpg")
            paths[-1].write_bytes(data)
        console.print(f"[bold]core[/]: covers render of {len(paths)} covers, {CORES} at once")
        core_result = core(paths, work / "out")
        console.print(f"  {core_result['covers_per_s']:.2f} covers/s")
        with services(work, args.catalog) as env, origin(
                {f"/{i}.jpg": data for i, data in enumerate(sources)}) as url:
            env["BENCH_ORIGIN"] = url
            runs = []
            for workers in (int(w) for w in args.workers.split(",")):
                console.print(f"[bold]pipeline[/]: {args.events} covers, {workers} worker(s)")
                runs.append(run(workers, args.events, sources, env, work, profile=False))
            split = None
            if not args.no_profile:  # apart: py-spy's own CPU would slow the measured runs
                events = max(30, args.events // 3)
                console.print(f"[bold]profile[/]: {events} covers, 1 worker, py-spy at 100 Hz")
                split = run(1, events, sources[:events], env, work, profile=True)["cpu_split"]
    report(core_result, runs, split, args)


@contextmanager
def services(work: Path, catalog: str) -> Iterator[dict[str, str]]:
    """Broker, Redis, moto S3 and (if asked) Postgres, and the environment naming them."""
    broker = embedded.broker(work).start()
    redis = embedded.redis(work).start()
    postgres = None
    try:
        with moto_server() as s3:
            env = {"KAFKA_BROKERS": f"{embedded.LOOPBACK}:{broker.port}",
                   "REDIS_URL": f"redis://{embedded.LOOPBACK}:{redis.port}/0",
                   "S3_ENDPOINT": s3, "S3_ACCESS_KEY_ID": "bench",
                   "S3_SECRET_ACCESS_KEY": "bench", "S3_CREATE_BUCKET": "true",
                   "ALLOW_PRIVATE_SOURCES": "true", "LOG_LEVEL": "warn",
                   "KAFKA_SESSION_TIMEOUT_SEC": "10"}
            if catalog == "postgres":
                (work / "pg").mkdir()
                postgres = embedded.postgres(work / "pg").start()
                env["CATALOG_URL"] = embedded.postgres_url(postgres)
            yield env
    finally:
        if postgres is not None:
            postgres.stop()
        redis.stop()
        broker.stop()


def report(core_result: dict[str, float], runs: list[dict[str, Any]],
           split: dict[str, Any] | None, args: argparse.Namespace) -> None:
    table = Table("mode", "covers/s", "vs core", "p50 ms", "p95 ms", "p99 ms", "max ms",
                  "peak RSS MB / worker", "CPU s / cover",
                  title=f"{args.events} covers, {CORES} cores, catalog {args.catalog}")
    table.add_row("core (covers render)", f"{core_result['covers_per_s']:.2f}", "1.00",
                  "", "", "", "", "", "")
    for r in runs:
        lat = r["latency_ms"]
        table.add_row(f"pipeline, {r['workers']} worker(s)", f"{r['covers_per_s']:.2f}",
                      f"{r['covers_per_s'] / core_result['covers_per_s']:.2f}",
                      *(f"{lat[k]:.0f}" for k in ("p50", "p95", "p99", "max")),
                      " / ".join(f"{m:.0f}" for m in r["peak_rss_mb"]),
                      f"{sum(r['cpu_seconds']) / r['covers']:.3f}")
    console.print(table)
    stages = Table("stage", *(f"{r['workers']} worker(s): ms per job" for r in runs),
                   title="where the time goes (workers' cover_stage_duration_seconds)")
    for stage in ("fetch", "decode", "render", "encode", "store", "sink"):
        stages.add_row(stage, *(f"{r['stages_ms'].get(stage, 0):.1f}" for r in runs))
    console.print(stages)
    if split:
        console.print("worker CPU (py-spy, 1 worker): " + ", ".join(
            f"{k} {v:.0%}" for k, v in split.items() if k != "other_top"))
        console.print("  'other' is mostly: " + ", ".join(
            f"{leaf} {share:.1%}" for leaf, share in split["other_top"].items()))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"e2e-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"machine": machine(), "args": vars(args), "core": core_result,
                                "runs": runs, "cpu_split": split}, indent=2))
    console.print(f"raw results: {path.relative_to(HERE.parent)}")
    best = max(r["covers_per_s"] for r in runs) / core_result["covers_per_s"]
    console.print(f"best pipeline / core: {best:.2f} (target 0.85); "
                  f"median latency {statistics.median(r['latency_ms']['p50'] for r in runs):.0f}"
                  " ms for a burst")


if __name__ == "__main__":
    main()
