"""The shim as users run it: `covers shim` and `covers worker` processes on the real broker,
Redis and catalog; jobs polled to done and failed; webhooks verified; the OpenAPI fuzzed."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from streams import embedded, webhooks
from streams.settings import Settings, load
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker, wait_until
from tests.images import encode, gradient

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"


@dataclass
class Receiver:
    """A local webhook receiver that keeps what it was sent."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((embedded.LOOPBACK, 0), Handler)
    state.url = f"http://{embedded.LOOPBACK}:{server.server_address[1]}/hook"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def shim_env(worker_env: dict[str, str]) -> dict[str, str]:
    worker_env.update({"SHIM_PORT": str(embedded.free_port()), "WEBHOOK_SECRET": SECRET})
    return worker_env


@pytest.fixture
def shim_url(shim_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    with (tmp_path / "shim.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "shim"],
                                env={**os.environ, **shim_env}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        embedded.wait_for_port(int(shim_env["SHIM_PORT"]), proc, "shim", timeout=30)
        yield f"http://{embedded.LOOPBACK}:{shim_env['SHIM_PORT']}"
    finally:
        proc.terminate()
        proc.wait(15)


def poll(http: httpx.Client, status_url: str, states: set[str],
         timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(status_url).json()
        if job["state"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def settings_of(env: dict[str, str]) -> Settings:
    return load(**{k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})


def test_jobs_submitted_on_v2_end_done_or_failed_with_webhooks(
        shim_env: dict[str, str], shim_url: str, origin: Origin, receiver: Receiver,
        make_worker: type[Worker], tmp_path: Path) -> None:
    worker = make_worker(shim_env, tmp_path / "worker.log").start()
    asyncio.run(ensure_topics(worker.settings))
    tag = uuid.uuid4().hex[:6]
    good = origin.add(f"/{tag}/good.png", encode(gradient(640, 960), "png"),
                      content_type="image/png")
    with httpx.Client(base_url=shim_url, timeout=10) as http:
        done_job = http.post("/v2/process", json={
            "book_id": f"ok-{tag}", "image_url": good, "callback_url": receiver.url}).json()
        failed_job = http.post("/v2/process", json={
            "book_id": f"gone-{tag}", "image_url": f"{origin.base_url}/{tag}/missing.jpg",
            "callback_url": receiver.url}).json()

        done = poll(http, done_job["status_url"], {"done", "failed"})
        assert done["state"] == "done", (done, worker.log()[-2000:])
        assert [(o["name"], o["width"], o["format"]) for o in done["outputs"]] == [
            ("thumb", 200, "jpeg"), ("medium", 640, "webp"), ("large", 640, "jpeg")]
        assert all(o["url"] and o["bytes"] > 0 for o in done["outputs"])
        assert done["placeholder"]["blurhash"] and done["error"] is None

        failed = poll(http, failed_job["status_url"], {"done", "failed"})
        assert failed["state"] == "failed"
        assert failed["error"]["code"] == "not_found" and "404" in failed["error"]["message"]

        def cover_ready() -> bool:
            return http.get(f"/v2/books/ok-{tag}/cover").status_code == 200

        wait_until(cover_ready, 30, "the catalog row behind /v2/books/{id}/cover")
        cover = http.get(f"/v2/books/ok-{tag}/cover").json()
        assert cover["job_id"] == done_job["job_id"]
        assert cover["cover_url"] == done["outputs"][-1]["url"]

    wait_until(lambda: len(receiver.received) >= 2, 30, "both webhooks")
    by_job: dict[str, Any] = {}
    for headers, body in receiver.received:
        assert webhooks.verify(SECRET, headers[webhooks.SIGNATURE_HEADER], body)
        assert not webhooks.verify("another secret", headers[webhooks.SIGNATURE_HEADER], body)
        assert not webhooks.verify(SECRET, headers[webhooks.SIGNATURE_HEADER], body + b" ")
        payload = httpx.Response(200, content=body).json()
        by_job[payload["job_id"]] = payload
    assert by_job[done_job["job_id"]]["state"] == "done"
    assert by_job[done_job["job_id"]]["outputs"] == done["outputs"]
    assert by_job[failed_job["job_id"]]["error"]["code"] == "not_found"
    assert worker.stop() == 0


def test_no_generated_request_gets_a_server_error(shim_env: dict[str, str],
                                                  shim_url: str) -> None:
    """schemathesis generates requests for every operation of the shim's OpenAPI (valid and
    invalid bodies, odd path values): none may get a 5xx."""
    asyncio.run(ensure_topics(settings_of(shim_env)))
    schema = schemathesis.openapi.from_url(f"{shim_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    statuses: list[int] = []
    assert {op.path for op in operations} >= {"/health", "/process", "/v2/process",
                                              "/v2/jobs/{job_id}", "/v2/books/{book_id}/cover"}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: Any) -> None:
            statuses.append(case.call_and_validate(checks=[not_a_server_error]).status_code)

        no_server_error()
    # Both sides were reached: accepted submissions and refusals, 404s, the frozen routes.
    assert {200, 202, 404, 422} <= set(statuses), sorted(set(statuses))
