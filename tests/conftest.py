"""Real servers for integration tests: the broker, Redis and a moto S3 server are started once
per session; every test gets fresh topic names, app id, bucket and directories."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams import embedded
from streams.settings import Settings, load


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from what each test sets, never from the developer's shell."""
    for name in list(os.environ):
        if name.upper() in {f.upper() for f in Settings.model_fields}:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def broker(services_dir: Path) -> Iterator[embedded.Service]:
    service = embedded.broker(services_dir).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def redis_server(services_dir: Path) -> Iterator[embedded.Service]:
    service = embedded.redis(services_dir).start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def postgres_server(services_dir: Path) -> Iterator[embedded.Service]:
    workdir = services_dir / "postgres"
    workdir.mkdir()
    service = embedded.postgres(workdir).start()
    yield service
    service.stop()


@pytest.fixture
def postgres_url(postgres_server: embedded.Service) -> str:
    """A fresh database on the session's Postgres server."""
    import asyncio

    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(embedded.postgres_url(postgres_server))
        await conn.execute(f"CREATE DATABASE {name}")
        await conn.close()

    asyncio.run(create())
    return embedded.postgres_url(postgres_server, name)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = embedded.free_port()
    server = ThreadedMotoServer(ip_address=embedded.LOOPBACK, port=port, verbose=False)
    server.start()
    yield f"http://{embedded.LOOPBACK}:{port}"
    server.stop()


@dataclass
class Origin:
    """An HTTP server whose routes a test fills in: path -> (status, body, headers)."""

    base_url: str
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    scripts: dict[str, list[tuple[int, bytes, dict[str, str]]]] = field(default_factory=dict)
    hits: dict[str, list[float]] = field(default_factory=dict)  # path -> monotonic times

    def add(self, path: str, body: bytes, status: int = 200,
            content_type: str = "image/jpeg") -> str:
        self.routes[path] = (status, body, {"Content-Type": content_type})
        return self.base_url + path

    def script(self, path: str, answers: list[tuple[int, bytes, dict[str, str]]]) -> str:
        """Answer the n-th request of ``path`` with ``answers[n]`` (the last one repeats)."""
        self.scripts[path] = answers
        return self.base_url + path

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        times = self.hits.setdefault(path, [])
        times.append(time.monotonic())
        if path in self.scripts:
            return self.scripts[path][min(len(times), len(self.scripts[path])) - 1]
        return self.routes.get(path, (404, b"not found", {}))


@pytest.fixture(scope="session")
def origin() -> Iterator[Origin]:
    state = Origin("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = state.answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((embedded.LOOPBACK, 0), Handler)
    state.base_url = f"http://{embedded.LOOPBACK}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class Worker:
    """A ``covers worker`` process with its own environment."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def settings(self) -> Settings:
        return load(**{k.lower(): v for k, v in self.env.items()
                       if k.lower() in Settings.model_fields})

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"], env={**os.environ, **self.env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_entries(self, **match: object) -> list[dict[str, Any]]:
        """The worker's JSON log lines whose fields equal ``match``."""
        entries = [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]
        return [e for e in entries if all(e.get(k) == v for k, v in match.items())]

    def web_url(self, path: str) -> str:
        return f"http://{embedded.LOOPBACK}:{self.env['WORKER_WEB_PORT']}{path}"


@pytest.fixture
def worker_env(tmp_path: Path, broker: embedded.Service,
               redis_server: embedded.Service) -> dict[str, str]:
    """Environment of a worker on the file store; a fresh app id and topics per test."""
    tag = uuid.uuid4().hex[:8]
    return {
        "KAFKA_BROKERS": f"{embedded.LOOPBACK}:{broker.port}",
        "REDIS_URL": f"redis://{embedded.LOOPBACK}:{redis_server.port}/0",
        "STORAGE_URL": (tmp_path / "store").as_uri(),
        "CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "ALLOW_PRIVATE_SOURCES": "true",
        "APP_ID": f"covers-test-{tag}",
        "TOPIC_PARTITIONS": "2",
        "TOPIC_BOOK_ENRICHED": f"book_enriched-{tag}",
        "TOPIC_COVER_REQUESTED": f"cover_requested-{tag}",
        "TOPIC_COVER_PROCESSED": f"cover_processed-{tag}",
        "TOPIC_DEAD_LETTER": f"cover_dead_letter-{tag}",
        "TOPIC_RETRY_PREFIX": f"cover_retry-{tag}",
        "RETRY_DELAYS_SEC": "1,2",
        "WORKER_WEB_PORT": str(embedded.free_port()),
        "METRICS_PORT": str(embedded.free_port()),
        "METRICS_HOST": embedded.LOOPBACK,
        "WORKER_DATA_DIR": str(tmp_path / "faust"),
        "KAFKA_SESSION_TIMEOUT_SEC": "6",
        "LOG_LEVEL": "info",
    }


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[type[Worker]]:
    workers: list[Worker] = []

    class Tracked(Worker):
        def start(self) -> Worker:
            workers.append(self)
            return super().start()

    yield Tracked
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.stop(signal.SIGKILL)


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def scrape(worker: Worker) -> dict[str, float]:
    """The worker's Prometheus metrics: sample (with labels) -> value."""
    from urllib.request import urlopen

    url = f"http://{embedded.LOOPBACK}:{worker.env['METRICS_PORT']}/metrics"
    with urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {name: float(value) for name, _, value in
            (line.rpartition(" ") for line in text.splitlines() if line and line[0] != "#")}
