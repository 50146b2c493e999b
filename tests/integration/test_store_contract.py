"""One contract, every object-store backend (local directory, S3 on a moto server)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from processors import errors
from streams.settings import ConfigError, load
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
    key = object_key("B1", "ab" * 32, "cover", "1", "thumb", "jpg")
    assert key.startswith("B1/") and key.endswith("/thumb.jpg")
    stored = await store.put(key, b"\xff\xd8\xffdata", "image/jpeg", {"book-id": "B1"})
    assert stored.created and stored.key == key and stored.url
    assert await store.get(key) == b"\xff\xd8\xffdata"


async def test_replaying_a_put_does_not_write_again(store: ObjectStore) -> None:
    key = object_key("B2", "cd" * 32, "cover", "1", "large", "webp")
    first = await store.put(key, b"RIFFxxxxWEBP", "image/webp", {})
    second = await store.put(key, b"RIFFxxxxWEBP", "image/webp", {})
    assert first.created and not second.created
    assert first.key == second.key


async def test_concurrent_first_puts_share_one_connection(store: ObjectStore) -> None:
    # A job's renditions upload side by side on a fresh store. Each extra client opened by the
    # race would be left unclosed: a ResourceWarning, which this suite turns into a failure.
    keys = [object_key("B5", "ef" * 32, "cover", "1", name, "jpg") for name in "abcd"]
    stored = await asyncio.gather(*(store.put(k, b"\xff\xd8\xff" + k.encode(), "image/jpeg", {})
                                    for k in keys))
    assert [s.key for s in stored] == keys
    assert [await store.get(k) for k in keys] == [b"\xff\xd8\xff" + k.encode() for k in keys]
    gc.collect()


async def test_a_fresh_put_writes_without_looking_first(store: ObjectStore) -> None:
    key = object_key("B6", "01" * 32, "cover", "1", "large", "jpg")
    stored = await store.put(key, b"\xff\xd8\xfffresh", "image/jpeg", {}, fresh=True)
    assert stored.created and await store.get(key) == b"\xff\xd8\xfffresh"
    again = await store.put(key, b"\xff\xd8\xfffresh", "image/jpeg", {}, fresh=True)
    assert again.key == key and await store.get(key) == b"\xff\xd8\xfffresh"


async def test_a_killed_writers_leftovers_are_removed(tmp_path: Path) -> None:
    store = open_store(load(storage_url=(tmp_path / "objects").as_uri()))
    key = object_key("B7", "02" * 32, "cover", "1", "large", "jpg")
    finished = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True)
    gone = finished.stdout.strip()
    folder = tmp_path / "objects" / key.rsplit("/", 1)[0]
    folder.mkdir(parents=True)
    leftover = folder / f".large.jpg.{gone}.0badc0de.tmp"  # its writer was killed mid-write
    leftover.write_bytes(b"\xff\xd8 half")
    alive = folder / f".large.jpg.{os.getpid()}.0000beef.tmp"  # a live writer's: kept
    alive.write_bytes(b"\xff\xd8 in progress")
    await store.put(key, b"\xff\xd8\xffwhole", "image/jpeg", {})
    assert not leftover.exists() and alive.exists()
    assert await store.get(key) == b"\xff\xd8\xffwhole"


async def test_missing_object_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(errors.PermanentError) as err:
        await store.get("nobody/nothing/none.jpg")
    assert err.value.code == errors.NOT_FOUND


async def test_reading_past_a_byte_cap_is_too_large(store: ObjectStore) -> None:
    await store.put("B4/big/original.png", b"\x89PNG" + b"\0" * 5000, "image/png", {})
    assert len(await store.get("B4/big/original.png", max_bytes=6000)) == 5004
    with pytest.raises(errors.PermanentError) as err:
        await store.get("B4/big/original.png", max_bytes=1000)
    assert err.value.code == errors.TOO_LARGE


def test_keys_change_with_the_source_and_the_preset_version_only() -> None:
    key = object_key("B5", "ab" * 32, "cover", "1", "thumb", "jpg")
    assert key == object_key("B5", "ab" * 32, "cover", "1", "thumb", "jpg")  # replays match
    others = {object_key("B5", "ac" * 32, "cover", "1", "thumb", "jpg"),
              object_key("B5", "ab" * 32, "cover", "2", "thumb", "jpg"),
              object_key("B5", "ab" * 32, "social", "1", "thumb", "jpg")}
    assert len(others) == 3 and key not in others
    book, digest, name = key.split("/")
    assert (book, len(digest), name) == ("B5", 16, "thumb.jpg")


async def test_s3_objects_carry_type_cache_control_and_metadata(moto_endpoint: str) -> None:
    bucket = f"meta-{uuid.uuid4().hex[:8]}"
    settings = load(storage_url=f"s3://{bucket}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test", s3_create_bucket=True)
    store = open_store(settings)
    before = datetime.now(UTC)
    stored = await store.put("B3/ef/thumb.jpg", b"\xff\xd8\xff", "image/jpeg",
                             {"book-id": "B3"})
    await store.close()
    # No public base URL: a presigned GET, valid for PRESIGN_EXPIRY_SEC, and it says so.
    assert "X-Amz-Expires=604800" in stored.url or "Expires=" in stored.url
    assert stored.expires_at is not None
    assert timedelta(days=7) <= stored.expires_at - before <= timedelta(days=7, minutes=1)
    async with get_session().create_client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        head = await client.head_object(Bucket=bucket, Key="B3/ef/thumb.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["CacheControl"] == CACHE_CONTROL
    assert head["Metadata"] == {"book-id": "B3"}
    async with get_session().create_client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        acl = await client.get_object_acl(Bucket=bucket, Key="B3/ef/thumb.jpg")
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL"]  # private: owner only


async def test_public_base_url_gives_plain_urls_without_expiry(moto_endpoint: str) -> None:
    settings = load(storage_url=f"s3://pub-{uuid.uuid4().hex[:8]}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test", s3_create_bucket=True,
                    public_base_url="https://cdn.example.com/covers/")
    store = open_store(settings)
    stored = await store.put("B6/aa/thumb.jpg", b"\xff\xd8\xff", "image/jpeg", {})
    await store.close()
    assert stored.url == "https://cdn.example.com/covers/B6/aa/thumb.jpg"
    assert stored.expires_at is None


async def test_missing_bucket_is_a_clear_error(moto_endpoint: str) -> None:
    settings = load(storage_url="s3://no-such-bucket-here", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test")
    store = open_store(settings)
    with pytest.raises(errors.TransientError, match="S3_CREATE_BUCKET"):
        await store.put("k", b"x", "image/png", {})
    await store.close()


async def test_worker_start_stops_on_a_missing_bucket(moto_endpoint: str) -> None:
    settings = load(storage_url="s3://never-created-bucket", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test")
    with pytest.raises(ConfigError, match=r"never-created-bucket.*S3_CREATE_BUCKET"):
        await open_store(settings).check()
    settings = load(storage_url="s3://bucket-on-no-server", s3_endpoint="http://127.0.0.1:9",
                    s3_access_key_id="test", s3_secret_access_key="test")
    with pytest.raises(ConfigError, match="not reachable"):
        await open_store(settings).check()


async def test_create_flag_makes_the_bucket_at_start(moto_endpoint: str) -> None:
    bucket = f"made-{uuid.uuid4().hex[:8]}"
    settings = load(storage_url=f"s3://{bucket}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test", s3_create_bucket=True)
    store = open_store(settings)
    await store.check()
    await store.close()
    async with get_session().create_client(
            "s3", endpoint_url=moto_endpoint, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test") as client:
        await client.head_bucket(Bucket=bucket)  # raises if it was not created


def test_worker_command_refuses_to_start_without_its_bucket(moto_endpoint: str) -> None:
    env = {"PATH": os.environ["PATH"], "STORAGE_URL": "s3://absent-bucket",
           "S3_ENDPOINT": moto_endpoint, "S3_ACCESS_KEY_ID": "test",
           "S3_SECRET_ACCESS_KEY": "test", "KAFKA_BROKERS": "127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "absent-bucket" in done.stdout and "S3_CREATE_BUCKET" in done.stdout
