"""Signed completion callbacks: when a job with a ``callback_url`` ends, its outcome is POSTed.

The body is the job's status JSON (as ``GET /v2/jobs/{id}`` shows it). The header
``X-Covers-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, "<t>." + body)>``
lets the receiver check it came from us and is fresh (see ``verify``, and the README's snippet).
Callback URLs obey the fetcher's SSRF rules; failures are retried with backoff in the
background, so a slow receiver never holds up the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from typing import Any

from processors import errors
from streams.fetch import Fetcher

log = logging.getLogger("covers.webhooks")

SIGNATURE_HEADER = "X-Covers-Signature"
RETRY_DELAYS = (1, 2, 5, 10, 30)  # seconds before attempts 2..6


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300,
           now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


class Webhooks:
    def __init__(self, fetcher: Fetcher, secret: str,
                 delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.fetcher = fetcher
        self.secret = secret
        self.delays = delays
        self._tasks: set[asyncio.Task[bool]] = set()

    def notify(self, url: str, payload: dict[str, Any]) -> asyncio.Task[bool]:
        """Deliver ``payload`` to ``url`` in the background (retrying); returns the task."""
        task = asyncio.create_task(self._deliver(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _deliver(self, url: str, payload: dict[str, Any]) -> bool:
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt, delay in enumerate((*self.delays, None), start=1):
            headers = {"Content-Type": "application/json"}
            if self.secret:
                headers[SIGNATURE_HEADER] = sign(self.secret, int(time.time()), body)
            try:
                await self.fetcher.post(url, body, headers)
                log.info("webhook delivered: job_id=%s attempt=%d", payload.get("job_id"),
                         attempt)
                return True
            except errors.TransientError as exc:
                if delay is None:
                    break
                log.warning("webhook failed, retrying in %ss: job_id=%s %s", delay,
                            payload.get("job_id"), exc.message)
                await asyncio.sleep(delay)
            except errors.PermanentError as exc:
                log.warning("webhook refused: job_id=%s %s: %s", payload.get("job_id"),
                            exc.code, exc.message)
                return False
        log.error("webhook given up after %d attempts: job_id=%s", len(self.delays) + 1,
                  payload.get("job_id"))
        return False

    async def close(self, grace: float = 10) -> None:
        """Give deliveries in flight ``grace`` seconds, then cancel them."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
