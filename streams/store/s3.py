"""S3 and MinIO through aiobotocore."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from processors import errors
from streams import records
from streams.settings import ConfigError, Settings
from streams.store import CACHE_CONTROL, StoredObject

_MISSING = ("404", "NoSuchKey", "NotFound")


class S3Store:
    """Private objects in one bucket; URLs from ``PUBLIC_BASE_URL`` or presigned GETs."""

    def __init__(self, settings: Settings, bucket: str) -> None:
        self.bucket = bucket
        self.public_base_url = settings.public_base_url.rstrip("/")
        self.presign_expiry = settings.presign_expiry_sec
        self.create_bucket = settings.s3_create_bucket
        self._settings = settings
        self._client: Any = None
        self._exit: Any = None
        self._opening = asyncio.Lock()  # a job's renditions upload at once: open one client

    async def _s3(self) -> Any:
        """The client, opened on first use once the bucket is known to be there."""
        async with self._opening:
            if self._client is None:
                await self._open()
        return self._client

    async def _open(self) -> None:
        s = self._settings
        style = s.s3_addressing_style or ("path" if s.s3_endpoint else "auto")  # MinIO: path
        kwargs: dict[str, Any] = {"region_name": s.s3_region,
                                  "config": Config(s3={"addressing_style": style},
                                                   retries={"max_attempts": 3})}
        if s.s3_endpoint:
            kwargs["endpoint_url"] = s.s3_endpoint
        if s.s3_access_key_id:  # otherwise the standard AWS chain (env, profile, IRSA)
            kwargs["aws_access_key_id"] = s.s3_access_key_id
            kwargs["aws_secret_access_key"] = s.s3_secret_access_key
        ctx = get_session().create_client("s3", **kwargs)
        client = await ctx.__aenter__()
        try:
            await self._ensure_bucket(client)
        except BaseException:
            await ctx.__aexit__(None, None, None)
            raise
        self._client, self._exit = client, ctx.__aexit__

    async def _ensure_bucket(self, client: Any) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, OSError) as exc:
            raise errors.TransientError(
                errors.STORAGE_UNAVAILABLE,
                f"S3 endpoint not reachable for bucket {self.bucket!r}: {exc}") from exc
        except ClientError as exc:
            if not self.create_bucket:
                raise errors.TransientError(
                    errors.STORAGE_UNAVAILABLE,
                    f"bucket {self.bucket!r} is not reachable ({_code(exc)}); create it or set "
                    "S3_CREATE_BUCKET=true",
                ) from exc
            await client.create_bucket(Bucket=self.bucket)

    async def url_for(self, key: str) -> tuple[str, datetime | None]:
        """The object's public URL, or a presigned GET and the moment it stops working."""
        if self.public_base_url:
            return f"{self.public_base_url}/{key}", None
        client = await self._s3()
        expires_at = records.utcnow() + timedelta(seconds=self.presign_expiry)
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.presign_expiry)
        return url, expires_at

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                  fresh: bool = False) -> StoredObject:
        try:
            client = await self._s3()
            created = fresh or not await self._exists(client, key, len(data))
            if created:
                await client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                    CacheControl=CACHE_CONTROL, Metadata=metadata, ACL="private")
            url, expires_at = await self.url_for(key)
            return StoredObject(key=key, url=url, created=created, expires_at=expires_at)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"put {key}: {exc}") from exc

    async def _exists(self, client: Any, key: str, size: int) -> bool:
        try:
            head = await client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise
        return bool(head.get("ContentLength") == size)

    async def get(self, key: str, max_bytes: int | None = None,
                  bucket: str | None = None) -> bytes:
        """An object of this store's bucket, or of ``bucket`` (an uploaded original)."""
        try:
            client = await self._s3()
            resp = await client.get_object(Bucket=bucket or self.bucket, Key=key)
            async with resp["Body"] as body:
                if max_bytes is not None and resp.get("ContentLength", 0) > max_bytes:
                    raise errors.PermanentError(errors.TOO_LARGE,
                                                f"{key} is over {max_bytes} bytes")
                data: bytes = await body.read()
            return data
        except ClientError as exc:
            if _code(exc) in (*_MISSING, "NoSuchBucket"):
                raise errors.PermanentError(errors.NOT_FOUND, f"no object {key}") from None
            if _code(exc) in ("403", "AccessDenied"):
                raise errors.PermanentError(errors.HTTP_ERROR,
                                            f"access to {key} denied") from None
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"get {key}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"get {key}: {exc}") from exc

    async def check(self) -> None:
        try:
            await self._s3()
        except errors.TransientError as exc:
            raise ConfigError(f"STORAGE_URL: {exc.message}") from None

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit(None, None, None)
            self._client = self._exit = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
