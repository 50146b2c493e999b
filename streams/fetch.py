"""Fetch a source image: ``http(s)://`` with aiohttp, or ``s3://bucket/key`` from the store.

Safety first: a scheme allow-list, every address vetted (IP literals here, names in the
resolver, so the connection goes to the very address that was checked), redirects followed by
hand and re-vetted, the body streamed under a hard byte cap and the whole fetch under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from processors import errors
from processors.sniff import sniff
from streams import __version__, netguard
from streams.settings import Settings

USER_AGENT = f"book-covers/{__version__} (+cover fetcher)"
MAX_REDIRECTS = 5
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    data: bytes
    sha256: str
    format: str
    final_url: str


class BlobSource(Protocol):
    """Where ``s3://bucket/key`` sources are read from (the S3 store's client)."""

    bucket: str

    async def get(self, key: str, max_bytes: int | None = None,
                  bucket: str | None = None) -> bytes: ...


# getaddrinfo's shape: (host, port, family=, type=) -> [(family, type, proto, name, sockaddr)]
Lookup = Callable[..., Awaitable[list[tuple[Any, ...]]]]


class VettingResolver(AbstractResolver):
    """Resolves once and hands aiohttp only addresses that passed the SSRF check."""

    def __init__(self, allow_private: bool, lookup: Lookup | None = None) -> None:
        self.allow_private = allow_private
        self._lookup = lookup or asyncio.get_running_loop().getaddrinfo

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            infos = await self._lookup(host, port, family=socket.AF_UNSPEC,
                                       type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise errors.TransientError(
                errors.FETCH_FAILED, f"cannot resolve {host}: {exc}") from None
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            address = netguard.literal_address(str(sockaddr[0]))
            assert address is not None
            netguard.vet(address, self.allow_private)  # one bad answer spoils the lookup
            results.append({"hostname": host, "host": str(address), "port": int(sockaddr[1]),
                            "family": fam, "proto": proto, "flags": socket.AI_NUMERICHOST})
        return results

    async def close(self) -> None:
        return None


class Fetcher:
    """``timeout`` bounds a whole fetch (redirects included); ``idle_timeout`` bounds each
    wait for the next bytes, so a server dripping a byte at a time fails early. A non-empty
    ``allowed_hosts`` ("covers.example.com", "*.example.org") refuses every other host.
    ``s3://`` sources are read through ``blobs`` from its own bucket or ``source_buckets``."""

    def __init__(self, *, max_bytes: int, timeout: float, allow_private: bool,
                 idle_timeout: float | None = None,
                 allowed_ports: frozenset[int] = frozenset({80, 443}),
                 allowed_hosts: frozenset[str] = frozenset(),
                 blobs: BlobSource | None = None,
                 source_buckets: frozenset[str] = frozenset(),
                 resolver: AbstractResolver | None = None) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.idle_timeout = min(idle_timeout or timeout, timeout)
        self.allow_private = allow_private
        self.allowed_ports = allowed_ports
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.blobs = blobs
        self.source_buckets = source_buckets | ({blobs.bucket} if blobs else set())
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver or VettingResolver(self.allow_private),
                limit=100, limit_per_host=8, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, headers={"User-Agent": USER_AGENT},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                              sock_read=self.idle_timeout),
                max_line_size=8190, max_field_size=8190)
        return self._session

    async def fetch(self, url: str) -> Fetched:
        """The image bytes behind ``url``; raises TransientError or PermanentError."""
        try:
            async with asyncio.timeout(self.timeout):
                if urlsplit(url).scheme == "s3":
                    data, final = await self._fetch_s3(url), url
                else:
                    data, final = await self._fetch_http(url)
        except aiohttp.ServerTimeoutError as exc:  # connect or read-idle (a TimeoutError too)
            raise errors.TransientError(
                errors.TIMEOUT, f"{exc} (idle limit {self.idle_timeout:g} s)") from None
        except TimeoutError:
            raise errors.TransientError(
                errors.TIMEOUT, f"no complete response within {self.timeout:g} s") from None
        fmt = sniff(data[:16])
        if fmt is None:
            raise errors.PermanentError(errors.UNSUPPORTED_TYPE,
                                        f"{final} did not return a supported image")
        return Fetched(data=data, sha256=hashlib.sha256(data).hexdigest(), format=fmt,
                       final_url=final)

    async def vet(self, url: str) -> None:
        """Refuse ``url`` now, as a fetch would: scheme, host and port rules, and every address
        its host resolves to. A failed lookup is no verdict (the fetch will retry it)."""
        parts = urlsplit(url)
        if parts.scheme == "s3":
            self._check_s3(parts)
            return
        self._check_url(url)
        assert parts.hostname is not None
        if netguard.literal_address(parts.hostname) is None:
            resolver = self._resolver or VettingResolver(self.allow_private)
            with contextlib.suppress(errors.TransientError):
                await resolver.resolve(parts.hostname, parts.port or 0)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url`` under the same rules as a fetch (no redirects followed);
        returns the status; TransientError for 408/429/5xx and network trouble."""
        self._check_url(url)
        try:
            async with asyncio.timeout(self.timeout), self._http().post(
                    url, data=body, headers=headers, allow_redirects=False) as resp:
                await resp.read()
                _raise_for_status(resp, url)
                return resp.status
        except errors.CoverError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise errors.TransientError(errors.FETCH_FAILED, f"{url}: {exc!r}") from exc

    def _check_s3(self, parts: SplitResult) -> tuple[str, str]:
        if not self.source_buckets:
            raise errors.PermanentError(errors.UNSUPPORTED_SCHEME, "s3:// sources need S3 storage")
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key or parts.query or parts.fragment:
            raise errors.PermanentError(errors.INVALID_EVENT,
                                        f"{parts.geturl()!r} is not s3://bucket/key")
        if bucket not in self.source_buckets:  # the worker's credentials reach further
            raise errors.PermanentError(
                errors.SSRF_DENIED, f"bucket {bucket!r} is not a source bucket "
                "(the store's bucket or ALLOWED_SOURCE_BUCKETS)")
        return bucket, key

    async def _fetch_s3(self, url: str) -> bytes:
        if self.blobs is None:
            raise errors.PermanentError(errors.UNSUPPORTED_SCHEME, "s3:// sources need S3 storage")
        bucket, key = self._check_s3(urlsplit(url))
        return await self.blobs.get(key, max_bytes=self.max_bytes, bucket=bucket)

    async def _fetch_http(self, url: str) -> tuple[bytes, str]:
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            try:
                async with self._http().get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    _raise_for_status(resp, url)
                    return await self._read_capped(resp), url
            except (errors.CoverError, aiohttp.ServerTimeoutError):
                raise
            except (aiohttp.ClientError, OSError) as exc:
                raise errors.TransientError(errors.FETCH_FAILED, f"{url}: {exc!r}") from exc
        raise errors.PermanentError(errors.FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects")

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise errors.PermanentError(errors.UNSUPPORTED_SCHEME,
                                        f"scheme {parts.scheme!r} is not allowed")
        if not parts.hostname:
            raise errors.PermanentError(errors.INVALID_EVENT, f"no host in {url!r}")
        if parts.username or parts.password:
            raise errors.PermanentError(errors.SSRF_DENIED, "credentials in URLs are not allowed")
        if self.allowed_hosts and not _host_allowed(parts.hostname.lower(), self.allowed_hosts):
            raise errors.PermanentError(errors.SSRF_DENIED,
                                        f"host {parts.hostname} is not in the allow-list")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if not self.allow_private and port not in self.allowed_ports:
            raise errors.PermanentError(errors.SSRF_DENIED, f"port {port} is not allowed")
        # aiohttp never asks the resolver about IP literals, so they are vetted here.
        address = netguard.literal_address(parts.hostname)
        if address is not None:
            netguard.vet(address, self.allow_private)

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > self.max_bytes:
            raise errors.PermanentError(errors.TOO_LARGE,
                                        f"Content-Length {declared} over {self.max_bytes} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > self.max_bytes:  # holds when Content-Length lies or is absent
                raise errors.PermanentError(errors.TOO_LARGE,
                                            f"body over {self.max_bytes} bytes")
        return bytes(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _raise_for_status(resp: aiohttp.ClientResponse, url: str) -> None:
    status = resp.status
    if status < 400:
        return
    message = f"{url} answered {status}"
    if status == 404 or status == 410:
        raise errors.PermanentError(errors.NOT_FOUND, message)
    if status in (408, 429) or status >= 500:
        raise errors.TransientError(errors.ORIGIN_UNAVAILABLE, message,
                                    retry_after=_retry_after(resp.headers))
    raise errors.PermanentError(errors.HTTP_ERROR, message)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``Retry-After``: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = headers.get("Retry-After", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    return host in allowed or any(
        pattern.startswith("*.") and host.endswith(pattern[1:]) for pattern in allowed)


def make_fetcher(settings: Settings, blobs: BlobSource | None = None) -> Fetcher:
    """The fetcher the settings describe (also used by the shim to vet URLs up front)."""
    return Fetcher(max_bytes=settings.max_image_bytes, timeout=settings.process_timeout_sec,
                   idle_timeout=settings.fetch_idle_timeout_sec,
                   allowed_hosts=_names(settings.allowed_source_hosts),
                   allow_private=settings.allow_private_sources, blobs=blobs,
                   source_buckets=source_buckets(settings))


def source_buckets(settings: Settings) -> frozenset[str]:
    """Buckets ``s3://`` sources may name: the S3 store's own and ALLOWED_SOURCE_BUCKETS."""
    url = urlsplit(settings.resolved_storage_url)
    own = {url.netloc} if url.scheme == "s3" and url.netloc else set()
    return frozenset(own) | _names(settings.allowed_source_buckets)


def _names(value: str) -> frozenset[str]:
    """A comma-separated setting as a set of names."""
    return frozenset(name.strip() for name in value.split(",") if name.strip())
