"""Job state in Redis: pending -> processing -> done | retrying | failed.

Every key this project writes to Redis is built here. State is a convenience for callers polling
a job; it is never the record of truth, so a Redis outage is logged and processing goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "covers:job:"  # hash per job id
STATES = ("pending", "processing", "retrying", "done", "failed")


def job_key(job_id: str) -> str:
    return f"{KEY_PREFIX}{job_id}"


def view(job_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What callers see of a job (``GET /v2/jobs/{id}`` and webhooks), every key present."""
    return {"job_id": job_id, "book_id": fields.get("book_id"), "state": fields["state"],
            "attempts": fields.get("attempts", 0), "outputs": fields.get("outputs") or [],
            "placeholder": fields.get("placeholder"), "error": fields.get("error"),
            "updated_at": fields.get("updated_at")}


class JobState:
    """Job state in Redis. While Redis is unreachable, the latest state of each job is kept in
    memory (``backlog``, bounded) and written once Redis answers again, so the state catches up
    instead of being lost; meanwhile nothing waits on Redis for longer than one timeout."""

    def __init__(self, url: str, ttl_sec: int, backlog_limit: int = 100_000,
                 retry_after_sec: float = 5.0) -> None:
        self.ttl_sec = ttl_sec  # seconds a finished or abandoned job stays readable
        self._redis: aioredis.Redis = aioredis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
        self.backlog: OrderedDict[str, dict[Any, Any]] = OrderedDict()
        self.backlog_limit = backlog_limit
        self.retry_after_sec = retry_after_sec
        self._down_until = 0.0  # monotonic; no attempt before then after a failure

    async def set(self, job_id: str, state: str, **fields: Any) -> bool:
        """Record ``state`` (and JSON-encoded ``fields``); False if it had to wait in the
        backlog because Redis could not be reached."""
        assert state in STATES, state
        mapping: dict[Any, Any] = {  # redis-py types keys and values as a wide union
            "state": state, "updated_at": datetime.now(UTC).isoformat()}
        mapping.update({k: json.dumps(v) for k, v in fields.items()})
        self.backlog.pop(job_id, None)  # this state supersedes any older one waiting
        self.backlog[job_id] = mapping
        while len(self.backlog) > self.backlog_limit:
            dropped, _ = self.backlog.popitem(last=False)
            log.error("job state backlog full; oldest dropped", extra={"job_id": dropped})
        return await self.flush()

    async def flush(self) -> bool:
        """Write the backlog; True when it is empty afterwards."""
        if not self.backlog:
            return True
        if time.monotonic() < self._down_until:
            return False
        pending = list(self.backlog.items())
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id, mapping in pending:
                    pipe.hset(job_key(job_id), mapping=mapping)
                    pipe.expire(job_key(job_id), self.ttl_sec)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.retry_after_sec
            log.warning("job state not recorded yet; kept until Redis answers",
                        extra={"pending": len(self.backlog), "error": repr(exc)})
            return False
        for job_id, mapping in pending:
            if self.backlog.get(job_id) is mapping:  # not superseded meanwhile
                del self.backlog[job_id]
        if len(pending) > 1:
            log.info("job state caught up", extra={"written": len(pending)})
        return not self.backlog

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's public view (see ``view``), None for an unknown id; raises RedisError."""
        raw = await self._redis.hgetall(job_key(job_id))
        if not raw:
            return None
        return view(job_id, {str(k): (v if k in ("state", "updated_at") else json.loads(v))
                             for k, v in raw.items()})

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()
