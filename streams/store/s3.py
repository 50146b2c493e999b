"""S3 and MinIO through aiobotocore."""

from __future__ import annotations

from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from processors import errors
from streams.settings import Settings
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

    async def _s3(self) -> Any:
        if self._client is None:
            s = self._settings
            kwargs: dict[str, Any] = {"region_name": s.s3_region,
                                      "config": Config(s3={"addressing_style": "path"},
                                                       retries={"max_attempts": 3})}
            if s.s3_endpoint:
                kwargs["endpoint_url"] = s.s3_endpoint
            if s.s3_access_key_id:  # otherwise the standard AWS chain (env, profile, IRSA)
                kwargs["aws_access_key_id"] = s.s3_access_key_id
                kwargs["aws_secret_access_key"] = s.s3_secret_access_key
            ctx = get_session().create_client("s3", **kwargs)
            self._client = await ctx.__aenter__()
            self._exit = ctx.__aexit__
            await self._ensure_bucket()
        return self._client

    async def _ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not self.create_bucket:
                raise errors.TransientError(
                    errors.STORAGE_UNAVAILABLE,
                    f"bucket {self.bucket!r} is not reachable ({_code(exc)}); create it or set "
                    "S3_CREATE_BUCKET=true",
                ) from exc
            await self._client.create_bucket(Bucket=self.bucket)

    async def url_for(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        client = await self._s3()
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.presign_expiry)
        return url

    async def put(self, key: str, data: bytes, content_type: str,
                  metadata: dict[str, str]) -> StoredObject:
        try:
            client = await self._s3()
            created = not await self._exists(client, key, len(data))
            if created:
                await client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                    CacheControl=CACHE_CONTROL, Metadata=metadata, ACL="private")
            return StoredObject(key=key, url=await self.url_for(key), created=created)
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

    async def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            client = await self._s3()
            resp = await client.get_object(Bucket=self.bucket, Key=key)
            if max_bytes is not None and resp.get("ContentLength", 0) > max_bytes:
                raise errors.PermanentError(errors.TOO_LARGE, f"{key} is over {max_bytes} bytes")
            async with resp["Body"] as body:
                data: bytes = await body.read()
            return data
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise errors.PermanentError(errors.NOT_FOUND, f"no object {key}") from None
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"get {key}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"get {key}: {exc}") from exc

    async def close(self) -> None:
        if self._exit is not None:
            await self._exit(None, None, None)
            self._client = self._exit = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
