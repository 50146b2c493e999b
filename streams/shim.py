"""The HTTP shim: the frozen ``/health`` + ``/process`` contract of the old stub, and ``/v2``.

A small FastAPI service apart from the workers (it scales on HTTP load, they on lag). Every
accepted request is a ``cover_requested`` event the broker has acknowledged: when the broker
cannot be reached in ``SHIM_PUBLISH_TIMEOUT_SEC`` the answer is 503 with ``Retry-After``, never
"accepted" for a request that could be lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from processors import errors
from processors.presets import load_presets
from processors.spec import SpecError, parse_outputs
from streams import codec, metrics, records
from streams.broker import client_options
from streams.catalog import CatalogSink, open_catalog
from streams.fetch import Fetcher, make_fetcher
from streams.jobstate import JobState
from streams.settings import Settings

log = logging.getLogger("covers.shim")

BOOK_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
RETRY_AFTER_SEC = 5


class ProcessRequest(BaseModel):
    """The stub's request body, frozen."""

    book_id: str
    image_url: str


class V2ProcessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"book_id": "B123", "image_url": "https://covers.example.com/B123.jpg"},
        {"book_id": "B124", "image_url": "https://covers.example.com/B124.png",
         "outputs": [{"name": "square", "width": 300, "height": 300, "fit": "cover",
                      "gravity": "attention", "format": "webp", "quality": 80}],
         "callback_url": "https://hooks.example.com/covers"}]})

    book_id: str = Field(pattern=BOOK_ID, description="1-128 of A-Z a-z 0-9 . _ : -")
    image_url: str = Field(min_length=1, max_length=2048,
                           description="http(s):// URL or s3://bucket/key")
    preset: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    outputs: list[dict[str, Any]] | None = Field(
        None, min_length=1, max_length=16, description="custom rendition specs")
    callback_url: str | None = Field(None, min_length=1, max_length=2048)


class Accepted(BaseModel):
    job_id: str
    status_url: str


class Problem(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    job_id: str
    book_id: str | None
    state: str = Field(description="pending | processing | retrying | done | failed")
    attempts: int
    outputs: list[dict[str, Any]]
    placeholder: dict[str, Any] | None
    error: Problem | None
    updated_at: str | None


def job_id_for(body: V2ProcessRequest, idempotency_key: str | None) -> str:
    """A new job id, or with an ``Idempotency-Key`` the same one for the same key and body
    (a retried request is the same job; the same key with another body is another job)."""
    if idempotency_key is None:
        return f"req-{uuid.uuid4().hex}"
    request = json.dumps(body.model_dump(), sort_keys=True)
    return "req-" + hashlib.sha256(f"{idempotency_key}\0{request}".encode()).hexdigest()[:32]


def problem(status: int, code: str, message: str, **headers: str) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message}, headers=headers)


class Shim:
    """The shim's resources (producer, job state, catalog, fetcher rules) and its app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.presets = load_presets(settings.presets_file or None)
        self.fetcher: Fetcher = make_fetcher(settings)
        self.jobs = JobState(settings.redis_url, settings.job_ttl_sec)
        self.catalog: CatalogSink = open_catalog(settings.catalog_url, settings.catalog_layout)
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()
        self.app = self._build()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self.fetcher.close()
        await self.jobs.close()
        await self.catalog.close()

    async def producer(self) -> AIOKafkaProducer:
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **client_options(self.settings), acks="all",
                    enable_idempotence=self.settings.kafka_idempotence,
                    request_timeout_ms=int(self.settings.shim_publish_timeout_sec * 1000))
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, request: records.CoverRequested) -> None:
        """Hand the request to the broker and wait for its ack, or raise a 503."""
        try:
            async with asyncio.timeout(self.settings.shim_publish_timeout_sec):
                producer = await self.producer()
                await producer.send_and_wait(self.settings.topic_cover_requested,
                                             codec.COVER_REQUESTED.encode(request),
                                             key=request.book_id.encode())
        except (KafkaError, OSError, TimeoutError) as exc:
            metrics.SHIM_PUBLISH_FAILURES.inc()
            log.warning("publish failed: job_id=%s error=%r", request.job_id, exc)
            raise problem(503, "broker_unavailable", "the request could not be queued; retry",
                          **{"Retry-After": str(RETRY_AFTER_SEC)}) from None

    def _build(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            if self.settings.catalog_migrate:  # /v2/books reads the table the worker fills
                try:
                    await self.catalog.migrate()
                except errors.TransientError as exc:
                    log.warning("catalog not migrated (answers 503 until it is): %s",
                                exc.message)
            yield
            await self.close()

        app = FastAPI(title="book-covers shim", version="2", lifespan=lifespan)
        app.middleware("http")(self._count)
        self._frozen_routes(app)
        app.include_router(self._v2_routes(), prefix="/v2")
        self._operations_routes(app)
        return app

    async def _count(self, request: Request,
                     call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.SHIM_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        metrics.SHIM_LATENCY.labels(path).observe(time.perf_counter() - started)
        return response

    # --- the stub's contract: these two never change --------------------------------------

    def _frozen_routes(self, app: FastAPI) -> None:
        @app.get("/health")
        async def health() -> dict[str, Any]:
            return {"status": "ok", "stub": True}

        @app.post("/process")
        async def process(body: ProcessRequest) -> dict[str, Any]:
            # Unsafe or broken URLs are accepted and dead-lettered by the worker: this answer
            # cannot change. It is only given once the broker has the event.
            await self.publish(records.CoverRequested(
                job_id=f"req-{uuid.uuid4().hex}", book_id=body.book_id,
                image_url=body.image_url, requested_at=records.utcnow()))
            return {"message": "accepted", "stub": True}

    # --- /v2 ------------------------------------------------------------------------------

    def _v2_routes(self) -> APIRouter:
        router = APIRouter(dependencies=[Depends(self._authorize)],
                           responses={401: {"model": Problem}})

        @router.post("/process", status_code=202, response_model=Accepted,
                     responses={422: {"description": "invalid request"},
                                503: {"model": Problem}})
        async def submit(body: V2ProcessRequest, idempotency_key: Annotated[
                str | None, Header(min_length=1, max_length=200, description=(
                    "Send the same key when retrying a request (after a 503 or a timeout): "
                    "it gets the same job id, and the worker does the job once"))] = None,
                         ) -> Accepted:
            outputs = await self._check(body)
            job_id = job_id_for(body, idempotency_key)
            await self.publish(records.CoverRequested(
                job_id=job_id, book_id=body.book_id, image_url=body.image_url,
                preset=body.preset, callback_url=body.callback_url,
                requested_at=records.utcnow(), outputs=outputs))
            # A retried request must not move its job back to pending.
            if idempotency_key is None or await self._unknown(job_id):
                await self.jobs.set(job_id, "pending", book_id=body.book_id, attempts=0)
            return Accepted(job_id=job_id, status_url=f"/v2/jobs/{job_id}")

        @router.get("/jobs/{job_id}", response_model=Job,
                    responses={404: {"model": Problem}, 503: {"model": Problem}})
        async def job(job_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
            try:
                found = await self.jobs.get(job_id)
            except (RedisError, OSError):
                raise problem(503, "state_unavailable", "job state cannot be read; retry",
                              **{"Retry-After": str(RETRY_AFTER_SEC)}) from None
            if found is None:
                raise problem(404, "not_found", f"no job {job_id!r} (or it expired)")
            return found

        @router.get("/books/{book_id}/cover",
                    responses={404: {"model": Problem}, 503: {"model": Problem}})
        async def cover(book_id: Annotated[str, Path(pattern=BOOK_ID)]) -> dict[str, Any]:
            try:
                record = await self.catalog.get(book_id)
            except errors.TransientError:
                raise problem(503, "catalog_unavailable", "the catalog cannot be read; retry",
                              **{"Retry-After": str(RETRY_AFTER_SEC)}) from None
            if record is None:
                raise problem(404, "not_found", f"no cover for book {book_id!r}")
            return record

        return router

    async def _unknown(self, job_id: str) -> bool:
        try:
            return await self.jobs.get(job_id) is None
        except (RedisError, OSError):
            return False  # job state is best effort; do not overwrite what cannot be read

    async def _authorize(self, request: Request) -> None:
        token = self.settings.shim_api_token
        if not token:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise problem(401, "unauthorized", "a valid bearer token is required",
                          **{"WWW-Authenticate": "Bearer"})

    async def _check(self, body: V2ProcessRequest) -> str | None:
        """Refuse what the worker would dead-letter anyway; returns the outputs as JSON."""
        outputs = None
        if body.outputs is not None:
            outputs = json.dumps(body.outputs)
            try:
                parse_outputs(outputs)
            except SpecError as exc:
                raise problem(422, errors.INVALID_SPEC, str(exc)) from None
        elif (body.preset or "cover") not in self.presets:
            raise problem(422, errors.UNKNOWN_PRESET, f"no preset named {body.preset!r}; "
                          f"known: {', '.join(sorted(self.presets))}")
        for field, url in (("image_url", body.image_url), ("callback_url", body.callback_url)):
            if url is None:
                continue
            if field == "callback_url" and not url.startswith(("http://", "https://")):
                raise problem(422, errors.UNSUPPORTED_SCHEME, "callback_url must be http(s)")
            try:
                await self.fetcher.vet(url)
            except errors.PermanentError as exc:
                raise problem(422, exc.code, f"{field}: {exc.message}") from None
            except ValueError as exc:  # urlsplit and IDNA refuse some strings outright
                raise problem(422, errors.INVALID_EVENT, f"{field}: {exc}") from None
        return outputs

    # --- operations -----------------------------------------------------------------------

    def _operations_routes(self, app: FastAPI) -> None:
        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        @app.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
        async def readyz() -> JSONResponse:
            checks = {"broker": await self._broker_ready(), "redis": await self.jobs.ping()}
            status = 200 if all(checks.values()) else 503
            return JSONResponse({"ready": status == 200, "checks": checks}, status)

        @app.get("/metrics", response_class=PlainTextResponse)
        async def scrape() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _broker_ready(self) -> bool:
        try:
            async with asyncio.timeout(2):
                producer = await self.producer()
                return bool(await producer.client.fetch_all_metadata())
        except (KafkaError, OSError, TimeoutError):
            return False
