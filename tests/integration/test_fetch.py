"""The fetcher against real local HTTP servers, and its SSRF guard."""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest

from processors import errors
from streams.fetch import Fetcher, VettingResolver
from tests.conftest import Origin
from tests.images import encode, gradient

pytestmark = pytest.mark.integration


def fetcher(allow_private: bool = True, max_bytes: int = 1_000_000, **kw: Any) -> Fetcher:
    return Fetcher(max_bytes=max_bytes, timeout=5, allow_private=allow_private, **kw)


async def test_fetches_and_sniffs(origin: Origin) -> None:
    data = encode(gradient(50, 50), "png")
    url = origin.add(f"/{uuid.uuid4().hex}.bin", data, content_type="text/plain")
    f = fetcher()
    got = await f.fetch(url)
    await f.close()
    assert got.data == data and got.format == "png" and len(got.sha256) == 64


@pytest.mark.parametrize(("status", "kind", "code"), [
    (404, errors.PermanentError, errors.NOT_FOUND),
    (403, errors.PermanentError, errors.HTTP_ERROR),
    (500, errors.TransientError, errors.ORIGIN_UNAVAILABLE),
    (429, errors.TransientError, errors.ORIGIN_UNAVAILABLE),
])
async def test_status_policy(origin: Origin, status: int, kind: type[errors.CoverError],
                             code: str) -> None:
    url = origin.add(f"/{uuid.uuid4().hex}", b"nope", status=status)
    f = fetcher()
    with pytest.raises(kind) as err:
        await f.fetch(url)
    await f.close()
    assert err.value.code == code


async def test_byte_cap(origin: Origin) -> None:
    url = origin.add(f"/{uuid.uuid4().hex}.jpg", b"\xff\xd8\xff" + b"x" * 5000)
    f = fetcher(max_bytes=1000)
    with pytest.raises(errors.PermanentError) as err:
        await f.fetch(url)
    await f.close()
    assert err.value.code == errors.TOO_LARGE


async def _refusal(url: str) -> errors.PermanentError:
    """The error a production fetcher (private sources off) raises for ``url``."""
    f = fetcher(allow_private=False)
    try:
        with pytest.raises(errors.PermanentError) as err:
            await f.fetch(url)
    finally:
        await f.close()
    return err.value


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.jpg", "http://2130706433/x.jpg", "http://0177.0.0.1/x.jpg",
    "http://0x7f.1/x.jpg", "http://127.1/x.jpg", "http://[::1]/x.jpg",
    "http://[::ffff:127.0.0.1]/x.jpg", "http://169.254.169.254/latest/meta-data",
    "http://10.0.0.1/x.jpg", "http://192.168.1.1/x.jpg", "http://100.64.0.1/x.jpg",
    "http://0.0.0.0/x.jpg", "http://[fd00::1]/x.jpg", "http://[fe80::1]/x.jpg",
    "http://example.org:8080/x.jpg",
])
async def test_private_and_odd_addresses_are_denied(url: str) -> None:
    assert (await _refusal(url)).code == errors.SSRF_DENIED


@pytest.mark.parametrize("url", ["ftp://example.org/x.jpg", "file:///etc/passwd",
                                 "gopher://example.org/"])
async def test_other_schemes_are_refused(url: str) -> None:
    assert (await _refusal(url)).code == errors.UNSUPPORTED_SCHEME


async def test_public_name_resolving_to_loopback_is_denied(origin: Origin) -> None:
    """DNS answers are vetted too: a friendly name pointing at 127.0.0.1 gets nowhere."""
    port = int(origin.base_url.rsplit(":", 1)[1])
    path = origin.add(f"/{uuid.uuid4().hex}.png", encode(gradient(20, 20), "png")).split(
        str(port), 1)[1]

    async def rebinding_dns(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    f = Fetcher(max_bytes=10_000, timeout=5, allow_private=False,
                allowed_ports=frozenset({port}),
                resolver=VettingResolver(False, lookup=rebinding_dns))
    with pytest.raises(errors.PermanentError) as err:
        await f.fetch(f"http://covers.example.com:{port}{path}")
    await f.close()
    assert err.value.code == errors.SSRF_DENIED and "127.0.0.1" in err.value.message


async def test_the_same_name_is_fetched_when_dns_is_public(origin: Origin) -> None:
    """The control: the vetted address is the one connected to (here allowed as private)."""
    port = int(origin.base_url.rsplit(":", 1)[1])
    data = encode(gradient(20, 20), "png")
    path = origin.add(f"/{uuid.uuid4().hex}.png", data).split(str(port), 1)[1]

    async def dns(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    f = Fetcher(max_bytes=10_000, timeout=5, allow_private=True,
                resolver=VettingResolver(True, lookup=dns))
    got = await f.fetch(f"http://covers.example.com:{port}{path}")
    await f.close()
    assert got.data == data


async def test_redirect_to_a_private_address_is_denied(origin: Origin) -> None:
    path = f"/{uuid.uuid4().hex}"
    origin.routes[path] = (302, b"", {"Location": "http://169.254.169.254/latest/meta-data"})
    f = Fetcher(max_bytes=10_000, timeout=5, allow_private=False)
    # The origin itself is on loopback, so vet only the hop: allow the first URL by hand.
    f._check_url = _allow_first(f._check_url)  # type: ignore[method-assign]
    with pytest.raises(errors.PermanentError) as err:
        await f.fetch(origin.base_url + path)
    await f.close()
    assert err.value.code == errors.SSRF_DENIED and "169.254.169.254" in err.value.message


def _allow_first(check: Any) -> Any:
    calls = {"n": 0}

    def wrapped(url: str) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            check(url)

    return wrapped
