"""`covers healthcheck`, the image's HEALTHCHECK, against a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from streams import embedded
from streams.cli import cli


class _Probe(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer((embedded.LOOPBACK, 0), _Probe)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://{embedded.LOOPBACK}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_healthy_unhealthy_and_down(server: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["healthcheck", "--url", f"{server}/healthz"]).exit_code == 0
    assert runner.invoke(cli, ["healthcheck", "--url", f"{server}/readyz"]).exit_code == 1
    closed = f"http://{embedded.LOOPBACK}:{embedded.free_port()}/healthz"
    result = runner.invoke(cli, ["healthcheck", "--url", closed])
    assert result.exit_code == 1 and "refused" in result.output.lower()


def test_default_is_the_worker_web_port(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_WEB_PORT", server.rsplit(":", 1)[1])
    assert CliRunner().invoke(cli, ["healthcheck"]).exit_code == 0
