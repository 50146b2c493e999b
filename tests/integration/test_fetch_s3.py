"""``s3://bucket/key`` sources (uploaded originals) through the S3 store on a moto server."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiobotocore.session import get_session

from processors import errors
from streams.fetch import Fetcher
from streams.settings import load
from streams.store.s3 import S3Store
from tests.images import encode, gradient

pytestmark = pytest.mark.integration


@dataclass
class Buckets:
    store: str  # the worker's own bucket
    uploads: str  # an allowed source bucket
    private: str  # a bucket the worker's credentials reach, but sources may not name
    fetcher: Fetcher


@pytest.fixture
async def buckets(moto_endpoint: str) -> AsyncIterator[Buckets]:
    tag = uuid.uuid4().hex[:8]
    own, uploads, private = f"covers-{tag}", f"uploads-{tag}", f"private-{tag}"
    async with get_session().create_client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        for bucket in (uploads, private):
            await client.create_bucket(Bucket=bucket)
            await client.put_object(Bucket=bucket, Key="originals/a.png",
                                    Body=encode(gradient(60, 90), "png"))
        await client.put_object(Bucket=uploads, Key="notes.txt", Body=b"just text")
        await client.put_object(Bucket=uploads, Key="huge.png",
                                Body=b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000)
    settings = load(storage_url=f"s3://{own}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test", s3_create_bucket=True)
    store = S3Store(settings, bucket=own)
    await store.put("originals/own.jpg", encode(gradient(40, 40), "jpg"), "image/jpeg", {})
    fetcher = Fetcher(max_bytes=200_000, timeout=5, allow_private=False, blobs=store,
                      source_buckets=frozenset({uploads}))
    yield Buckets(own, uploads, private, fetcher)
    await fetcher.close()
    await store.close()


async def test_reads_originals_from_the_store_and_allowed_buckets(buckets: Buckets) -> None:
    upload = await buckets.fetcher.fetch(f"s3://{buckets.uploads}/originals/a.png")
    assert upload.format == "png"
    assert upload.sha256 == hashlib.sha256(upload.data).hexdigest()
    own = await buckets.fetcher.fetch(f"s3://{buckets.store}/originals/own.jpg")
    assert own.format == "jpeg" and own.final_url == f"s3://{buckets.store}/originals/own.jpg"


@pytest.mark.parametrize(("path", "code"), [
    ("{private}/originals/a.png", errors.SSRF_DENIED),  # reachable, but not a source bucket
    ("{uploads}/originals/missing.png", errors.NOT_FOUND),
    ("{uploads}/notes.txt", errors.UNSUPPORTED_TYPE),
    ("{uploads}/huge.png", errors.TOO_LARGE),
    ("{uploads}", errors.INVALID_EVENT),  # no key
    ("/just-a-key.png", errors.INVALID_EVENT),  # no bucket
])
async def test_bad_s3_sources_are_permanent_with_their_reason(buckets: Buckets, path: str,
                                                              code: str) -> None:
    url = "s3://" + path.format(private=buckets.private, uploads=buckets.uploads)
    with pytest.raises(errors.PermanentError) as err:
        await buckets.fetcher.fetch(url)
    assert err.value.code == code, err.value.message


async def test_without_s3_storage_s3_sources_are_unsupported() -> None:
    fetcher = Fetcher(max_bytes=1000, timeout=5, allow_private=False)
    with pytest.raises(errors.PermanentError) as err:
        await fetcher.fetch("s3://anything/key.png")
    assert err.value.code == errors.UNSUPPORTED_SCHEME
    await fetcher.close()
