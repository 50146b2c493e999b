"""One contract, every object-store backend (local directory, S3 on a moto server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from processors import errors
from streams.settings import load
from streams.store import CACHE_CONTROL, ObjectStore, object_key, open_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "file":
        settings = load(storage_url=(tmp_path / "objects").as_uri())
    else:
        settings = load(storage_url=f"s3://contract-{uuid.uuid4().hex[:8]}",
                        s3_endpoint=request.getfixturevalue("moto_endpoint"),
                        s3_access_key_id="test", s3_secret_access_key="test",
                        s3_create_bucket=True)
    backend = open_store(settings)
    yield backend
    await backend.close()


async def test_put_then_get_round_trips(store: ObjectStore) -> None:
    key = object_key("B1", "ab" * 32, "thumb", "jpg")
    assert key == "B1/abababababababab/thumb.jpg"
    stored = await store.put(key, b"\xff\xd8\xffdata", "image/jpeg", {"book-id": "B1"})
    assert stored.created and stored.key == key and stored.url
    assert await store.get(key) == b"\xff\xd8\xffdata"


async def test_replaying_a_put_does_not_write_again(store: ObjectStore) -> None:
    key = object_key("B2", "cd" * 32, "large", "webp")
    first = await store.put(key, b"RIFFxxxxWEBP", "image/webp", {})
    second = await store.put(key, b"RIFFxxxxWEBP", "image/webp", {})
    assert first.created and not second.created
    assert first.key == second.key


async def test_missing_object_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(errors.PermanentError) as err:
        await store.get("nobody/nothing/none.jpg")
    assert err.value.code == errors.NOT_FOUND


async def test_s3_objects_carry_type_cache_control_and_metadata(moto_endpoint: str) -> None:
    bucket = f"meta-{uuid.uuid4().hex[:8]}"
    settings = load(storage_url=f"s3://{bucket}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test", s3_create_bucket=True)
    store = open_store(settings)
    await store.put("B3/ef/thumb.jpg", b"\xff\xd8\xff", "image/jpeg", {"book-id": "B3"})
    await store.close()
    async with get_session().create_client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        head = await client.head_object(Bucket=bucket, Key="B3/ef/thumb.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == CACHE_CONTROL
    assert head["Metadata"] == {"book-id": "B3"}


async def test_missing_bucket_is_a_clear_error(moto_endpoint: str) -> None:
    settings = load(storage_url="s3://no-such-bucket-here", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test")
    store = open_store(settings)
    with pytest.raises(errors.TransientError, match="S3_CREATE_BUCKET"):
        await store.put("k", b"x", "image/png", {})
    await store.close()
