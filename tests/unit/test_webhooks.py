"""Webhook signatures: what a receiver checks."""

from __future__ import annotations

import time

from streams.webhooks import sign, verify


def test_a_signature_verifies_only_with_its_secret_body_and_time() -> None:
    body = b'{"job_id":"req-1","state":"done"}'
    now = int(time.time())
    header = sign("k", now, body)
    assert header.startswith(f"t={now},v1=") and len(header.split("v1=")[1]) == 64
    assert verify("k", header, body)
    assert not verify("other", header, body)
    assert not verify("k", header, body.replace(b"done", b"fail"))
    assert not verify("k", header.replace(f"t={now}", f"t={now + 1}"), body)  # time is signed


def test_stale_or_malformed_signatures_are_refused() -> None:
    body = b"{}"
    old = int(time.time()) - 600
    assert not verify("k", sign("k", old, body), body)  # replayed ten minutes later
    assert verify("k", sign("k", old, body), body, tolerance=900)
    for header in ("", "v1=abc", "t=notanumber,v1=abc", "t=1", "garbage"):
        assert not verify("k", header, body)
