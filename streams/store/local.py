"""A local directory as the object store: the embedded default."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from processors import errors
from streams.settings import ConfigError
from streams.store import StoredObject


class LocalStore:
    def __init__(self, root: str, public_base_url: str = "") -> None:
        self.root = Path(root).resolve()
        self.public_base_url = public_base_url.rstrip("/")
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise errors.PermanentError(errors.INVALID_EVENT, f"key {key!r} escapes the store")
        return path

    def url_for(self, key: str) -> str:
        if self.public_base_url:
            return f"{self.public_base_url}/{key}"
        return self._path(key).as_uri()

    async def put(self, key: str, data: bytes, content_type: str, metadata: dict[str, str],
                  fresh: bool = False) -> StoredObject:  # a local look costs nothing
        path = self._path(key)
        try:
            created = await asyncio.to_thread(self._write, path, data, content_type, metadata)
        except OSError as exc:
            raise errors.TransientError(errors.STORAGE_UNAVAILABLE, f"write {key}: {exc}") from exc
        return StoredObject(key=key, url=self.url_for(key), created=created)

    @staticmethod
    def _write(path: Path, data: bytes, content_type: str, metadata: dict[str, str]) -> bool:
        if path.exists() and path.stat().st_size == len(data):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)  # readers never see half an object
        finally:
            tmp.unlink(missing_ok=True)
        sidecar = {"content_type": content_type, "metadata": metadata}
        path.with_name(path.name + ".meta.json").write_text(json.dumps(sidecar))
        _remove_leftovers(path)
        return True

    async def get(self, key: str, max_bytes: int | None = None) -> bytes:
        try:
            data = await asyncio.to_thread(self._read, self._path(key), max_bytes)
        except FileNotFoundError:
            raise errors.PermanentError(errors.NOT_FOUND, f"no object {key}") from None
        if data is None:
            raise errors.PermanentError(errors.TOO_LARGE, f"{key} is over {max_bytes} bytes")
        return data

    @staticmethod
    def _read(path: Path, max_bytes: int | None) -> bytes | None:
        """The file's bytes; None when it is over ``max_bytes`` (checked before reading)."""
        if max_bytes is not None and path.stat().st_size > max_bytes:
            return None
        return path.read_bytes()

    async def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"STORAGE_URL: {self.root} is not writable")

    async def close(self) -> None:
        return None


def _remove_leftovers(path: Path, stale_after: float = 60.0) -> None:
    """Delete the temporary files a killed writer left beside ``path``: those of a process
    that is gone, or older than ``stale_after`` seconds (a restarted container reuses pids)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            pid = int(leftover.name.split(".")[-3])
            age = time.time() - leftover.stat().st_mtime
        except (ValueError, IndexError, OSError):
            continue
        if age > stale_after or not _alive(pid):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
