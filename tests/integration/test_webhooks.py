"""Webhook delivery against a real local receiver: retries, refusals, SSRF rules."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from streams import embedded
from streams.fetch import Fetcher
from streams.webhooks import SIGNATURE_HEADER, Webhooks, verify

pytestmark = pytest.mark.integration


@pytest.fixture
def flaky() -> Iterator[tuple[str, list[int], list[tuple[str, bytes]]]]:
    """A receiver answering the statuses in ``plan`` in turn (then 204); keeps what it got."""
    plan: list[int] = []
    got: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers.get(SIGNATURE_HEADER, ""), body))
            self.send_response(plan.pop(0) if plan else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((embedded.LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{embedded.LOOPBACK}:{server.server_address[1]}/hook", plan, got
    server.shutdown()
    server.server_close()


async def test_transient_failures_are_retried_until_delivered(
        flaky: tuple[str, list[int], list[tuple[str, bytes]]]) -> None:
    url, plan, got = flaky
    plan += [503, 500]
    fetcher = Fetcher(max_bytes=1000, timeout=5, allow_private=True)
    hooks = Webhooks(fetcher, "k", delays=(0.05, 0.05, 0.05))
    assert await hooks.notify(url, {"job_id": "j1", "state": "done"}) is True
    assert len(got) == 3  # 503, 500, then 204
    assert all(verify("k", signature, body) for signature, body in got)
    await hooks.close()
    await fetcher.close()


async def test_a_permanent_refusal_or_an_exhausted_budget_stops_delivery(
        flaky: tuple[str, list[int], list[tuple[str, bytes]]]) -> None:
    url, plan, got = flaky
    fetcher = Fetcher(max_bytes=1000, timeout=5, allow_private=True)
    hooks = Webhooks(fetcher, "", delays=(0.05,))
    plan += [410]
    assert await hooks.notify(url, {"job_id": "j2"}) is False
    assert len(got) == 1 and got[0][0] == ""  # no secret: unsigned
    plan += [503, 503, 503]
    assert await hooks.notify(url, {"job_id": "j3"}) is False
    assert len(got) == 3  # two attempts: the first and one retry
    await hooks.close()
    await fetcher.close()


async def test_callbacks_to_private_addresses_are_never_sent(
        flaky: tuple[str, list[int], list[tuple[str, bytes]]]) -> None:
    url, _, got = flaky
    fetcher = Fetcher(max_bytes=1000, timeout=5, allow_private=False)
    hooks = Webhooks(fetcher, "k")
    assert await hooks.notify(url, {"job_id": "j4"}) is False  # loopback: ssrf_denied
    assert got == []
    await hooks.close()
    await fetcher.close()
