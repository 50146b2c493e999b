"""The fetcher against a raw TCP server that misbehaves on purpose."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from processors import errors
from streams.fetch import Fetcher
from tests.images import encode, gradient

pytestmark = pytest.mark.integration

JPEG = encode(gradient(40, 40), "jpg")
Behaviour = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def lie_short(w: asyncio.StreamWriter, hit: int) -> None:
    """Says 100 bytes, sends a megabyte."""
    w.write(head(Content_Length="100") + JPEG[:100] + b"\0" * 1_000_000)


async def lie_long(w: asyncio.StreamWriter, hit: int) -> None:
    """Says 5000 bytes, sends 300 and hangs up."""
    w.write(head(Content_Length="5000") + JPEG[:300])


async def endless_chunked(w: asyncio.StreamWriter, hit: int) -> None:
    w.write(head(Transfer_Encoding="chunked") + b"3\r\n\xff\xd8\xff\r\n")
    for _ in range(10_000):
        w.write(b"4000\r\n" + b"\0" * 0x4000 + b"\r\n")
        await w.drain()


async def endless_unsized(w: asyncio.StreamWriter, hit: int) -> None:
    w.write(head() + b"\xff\xd8\xff")
    for _ in range(10_000):
        w.write(b"\0" * 65536)
        await w.drain()


async def drip(w: asyncio.StreamWriter, hit: int) -> None:
    """A byte every 0.3 s: never idle for long, never done."""
    w.write(head(Content_Length=str(len(JPEG))))
    for byte in JPEG:
        w.write(bytes([byte]))
        await w.drain()
        await asyncio.sleep(0.3)


async def stall(w: asyncio.StreamWriter, hit: int) -> None:
    """Headers and half the body, then silence."""
    w.write(head(Content_Length=str(len(JPEG))) + JPEG[: len(JPEG) // 2])
    await w.drain()
    await asyncio.sleep(30)


async def flaky(w: asyncio.StreamWriter, hit: int) -> None:
    """500 the first time, the image after that."""
    if hit == 1:
        w.write(head("500 Internal Server Error", Content_Length="4") + b"oops")
    else:
        w.write(head(Content_Length=str(len(JPEG)), Content_Type="image/jpeg") + JPEG)


async def busy_seconds(w: asyncio.StreamWriter, hit: int) -> None:
    w.write(head("429 Too Many Requests", Retry_After="7", Content_Length="0"))


async def busy_date(w: asyncio.StreamWriter, hit: int) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    w.write(head("503 Service Unavailable", Retry_After=when, Content_Length="0"))


async def html_page(w: asyncio.StreamWriter, hit: int) -> None:
    page = b"<!doctype html><title>cover</title>"
    w.write(head(Content_Type="image/jpeg", Content_Length=str(len(page))) + page)


async def huge_header(w: asyncio.StreamWriter, hit: int) -> None:
    w.write(head(X_Padding="a" * 100_000, Content_Length=str(len(JPEG))) + JPEG)


BEHAVIOURS: dict[str, Behaviour] = {f.__name__: f for f in (
    lie_short, lie_long, endless_chunked, endless_unsized, drip, stall, flaky, busy_seconds,
    busy_date, html_page, huge_header)}


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    hits: dict[str, int] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].decode().strip("/")
            hits[path] = hits.get(path, 0) + 1
            await BEHAVIOURS[path](writer, hits[path])
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the fetcher hung up on us, as it should
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()


def fetcher(**kw: float) -> Fetcher:
    options = {"max_bytes": 100_000, "timeout": 3.0, "idle_timeout": 1.0, **kw}
    return Fetcher(allow_private=True, **options)  # type: ignore[arg-type]


async def failure(url: str, **kw: float) -> errors.CoverError:
    f = fetcher(**kw)
    try:
        await f.fetch(url)
    except errors.CoverError as exc:
        return exc
    finally:
        await f.close()
    raise AssertionError(f"{url} was fetched")


async def test_an_understated_content_length_is_refused(hostile: str) -> None:
    # aiohttp will not take bytes after the declared body on a closing connection (the shape
    # of response smuggling), so the megabyte behind the claimed 100 bytes is never read.
    exc = await failure(f"{hostile}/lie_short")
    assert exc.code == errors.FETCH_FAILED and "Data after" in exc.message


async def test_an_overstated_content_length_is_a_transient_failure(hostile: str) -> None:
    exc = await failure(f"{hostile}/lie_long")
    assert exc.code == errors.FETCH_FAILED and exc.transient


@pytest.mark.parametrize("path", ["endless_chunked", "endless_unsized"])
async def test_endless_bodies_stop_at_the_byte_cap(hostile: str, path: str) -> None:
    exc = await failure(f"{hostile}/{path}")
    assert exc.code == errors.TOO_LARGE and not exc.transient


async def test_a_slow_drip_hits_the_total_deadline(hostile: str) -> None:
    exc = await failure(f"{hostile}/drip", timeout=2.0)  # never idle for 1 s, never done
    assert exc.code == errors.TIMEOUT and exc.transient
    assert "within 2 s" in exc.message


async def test_a_stalled_body_hits_the_idle_timeout_first(hostile: str) -> None:
    exc = await failure(f"{hostile}/stall", timeout=20.0, idle_timeout=1.0)
    assert exc.code == errors.TIMEOUT and "idle limit 1 s" in exc.message


async def test_500_then_200_succeeds_on_the_retry(hostile: str) -> None:
    f = fetcher()
    try:
        with pytest.raises(errors.TransientError) as err:
            await f.fetch(f"{hostile}/flaky")
        assert err.value.code == errors.ORIGIN_UNAVAILABLE
        got = await f.fetch(f"{hostile}/flaky")
    finally:
        await f.close()
    assert got.data == JPEG and got.format == "jpeg"


async def test_retry_after_in_seconds_and_as_a_date(hostile: str) -> None:
    seconds = await failure(f"{hostile}/busy_seconds")
    assert isinstance(seconds, errors.TransientError) and seconds.retry_after == 7
    dated = await failure(f"{hostile}/busy_date")
    assert isinstance(dated, errors.TransientError) and dated.retry_after is not None
    assert 100 < dated.retry_after <= 120


async def test_html_with_200_is_not_an_image(hostile: str) -> None:
    exc = await failure(f"{hostile}/html_page")
    assert exc.code == errors.UNSUPPORTED_TYPE and not exc.transient


async def test_an_oversized_header_is_refused(hostile: str) -> None:
    exc = await failure(f"{hostile}/huge_header")
    assert exc.code == errors.FETCH_FAILED


async def test_the_host_allow_list(hostile: str) -> None:
    f = Fetcher(max_bytes=100_000, timeout=3, allow_private=True,
                allowed_hosts=frozenset({"covers.example.com", "*.cdn.example.org"}))
    try:
        for url in (f"{hostile}/flaky", "https://evil.example.com/a.jpg",
                    "https://cdn.example.org.evil.net/a.jpg", "https://example.org/a.jpg"):
            with pytest.raises(errors.PermanentError) as err:
                await f.fetch(url)
            assert err.value.code == errors.SSRF_DENIED and "allow-list" in err.value.message
    finally:
        await f.close()
    assert f.allowed_hosts and _allowed("img.cdn.example.org") and _allowed("covers.example.com")


def _allowed(host: str) -> bool:
    from streams.fetch import _host_allowed

    return _host_allowed(host, frozenset({"covers.example.com", "*.cdn.example.org"}))
