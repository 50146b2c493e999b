"""The HTTP shim on the real broker and Redis: the frozen contract, /v2, backpressure, auth."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from streams import codec, embedded, records
from streams.broker import client_options
from streams.settings import Settings, load
from streams.shim import Shim
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

# What a FastAPI stub returning these dicts sends, byte for byte.
HEALTH = b'{"status":"ok","stub":true}'
ACCEPTED = b'{"message":"accepted","stub":true}'

# The stub's OpenAPI for its two routes, pinned: callers generated clients from it.
FROZEN_PATHS = {
    "/health": {"get": {
        "summary": "Health", "operationId": "health_health_get",
        "responses": {"200": {"description": "Successful Response",
                              "content": {"application/json": {"schema": {
                                  "additionalProperties": True, "type": "object",
                                  "title": "Response Health Health Get"}}}}}}},
    "/process": {"post": {
        "summary": "Process", "operationId": "process_process_post",
        "requestBody": {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ProcessRequest"}}}, "required": True},
        "responses": {
            "200": {"description": "Successful Response",
                    "content": {"application/json": {"schema": {
                        "additionalProperties": True, "type": "object",
                        "title": "Response Process Process Post"}}}},
            "422": {"description": "Validation Error",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/HTTPValidationError"}}}}}}},
}
PROCESS_REQUEST = {
    "properties": {"book_id": {"type": "string", "title": "Book Id"},
                   "image_url": {"type": "string", "title": "Image Url"}},
    "type": "object", "required": ["book_id", "image_url"], "title": "ProcessRequest",
    "description": "The stub's request body, frozen."}


def shim_settings(worker_env: dict[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {k.lower(): v for k, v in worker_env.items()
                              if k.lower() in Settings.model_fields}
    values.update(overrides)
    return load(**values)


@pytest.fixture
async def client(worker_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = shim_settings(worker_env, allow_private_sources=False)
    await ensure_topics(settings)
    shim = Shim(settings)
    await shim.catalog.migrate()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shim.app),
                                 base_url="http://shim") as http:
        http.settings = settings  # type: ignore[attr-defined]
        yield http
    await shim.close()


async def requested(settings: Settings, count: int) -> list[records.CoverRequested]:
    consumer = AIOKafkaConsumer(settings.topic_cover_requested,
                                **client_options(settings),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[records.CoverRequested] = []
    try:
        for _ in range(30):
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                found += [codec.COVER_REQUESTED.decode(m.value) for m in messages]
            if len(found) >= count:
                break
    finally:
        await consumer.stop()
    return found


async def test_frozen_routes_answer_byte_for_byte_and_really_enqueue(
        client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert (health.status_code, health.content) == (200, HEALTH)
    accepted = await client.post("/process", json={"book_id": "B123",
                                                   "image_url": "https://example.com/c.jpg"})
    assert (accepted.status_code, accepted.content) == (200, ACCEPTED)
    assert accepted.headers["content-type"] == "application/json"
    (event,) = await requested(client.settings, 1)  # type: ignore[attr-defined]
    assert (event.book_id, event.image_url) == ("B123", "https://example.com/c.jpg")
    assert event.job_id.startswith("req-") and event.requested_at is not None


async def test_frozen_process_accepts_unsafe_urls_for_the_worker_to_dead_letter(
        client: httpx.AsyncClient) -> None:
    """The frozen answer cannot change, so an unsafe URL is accepted here (and dead-lettered
    with ssrf_denied by the worker) where /v2 refuses it up front."""
    frozen = await client.post("/process", json={"book_id": "B9",
                                                 "image_url": "http://169.254.169.254/"})
    assert (frozen.status_code, frozen.content) == (200, ACCEPTED)
    v2 = await client.post("/v2/process", json={"book_id": "B9",
                                                "image_url": "http://169.254.169.254/"})
    assert v2.status_code == 422 and v2.json()["detail"]["code"] == "ssrf_denied"


async def test_frozen_process_validates_like_the_stub(client: httpx.AsyncClient) -> None:
    missing = await client.post("/process", json={"book_id": "B1"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "image_url"]
    assert (await client.post("/process", content=b"not json",
                              headers={"Content-Type": "application/json"})).status_code == 422


async def test_openapi_of_the_frozen_routes_is_pinned(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {path: spec["paths"][path] for path in FROZEN_PATHS} == FROZEN_PATHS
    assert spec["components"]["schemas"]["ProcessRequest"] == PROCESS_REQUEST


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"book_id": "", "image_url": "https://example.com/a.jpg"}, 422, None),
    ({"book_id": "has space", "image_url": "https://example.com/a.jpg"}, 422, None),
    ({"book_id": "B" * 129, "image_url": "https://example.com/a.jpg"}, 422, None),
    ({"book_id": "B1", "image_url": "https://example.com/" + "a" * 2048}, 422, None),
    ({"book_id": "B1", "image_url": "https://example.com/a.jpg", "extra": 1}, 422, None),
    ({"book_id": "B1", "image_url": "ftp://example.com/a.jpg"}, 422, "unsupported_scheme"),
    ({"book_id": "B1", "image_url": "http://127.0.0.1/a.jpg"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "http://2130706433/a.jpg"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "http://[::ffff:127.0.0.1]/a.jpg"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "http://localhost/a.jpg"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "https://example.com:8443/a.jpg"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "http://[bad/a.jpg"}, 422, "invalid_event"),
    ({"book_id": "B1", "image_url": "s3://uploads/a.jpg"}, 422, "unsupported_scheme"),
    ({"book_id": "B1", "image_url": "https://example.com/a.jpg", "preset": "nope"}, 422,
     "unknown_preset"),
    ({"book_id": "B1", "image_url": "https://example.com/a.jpg",
      "outputs": [{"name": "x", "fit": "cover", "width": 10}]}, 422, "invalid_spec"),
    ({"book_id": "B1", "image_url": "https://example.com/a.jpg",
      "callback_url": "http://10.0.0.8/hook"}, 422, "ssrf_denied"),
    ({"book_id": "B1", "image_url": "https://example.com/a.jpg",
      "callback_url": "file:///etc/passwd"}, 422, "unsupported_scheme"),
])
async def test_v2_refuses_bad_input_with_a_reason(client: httpx.AsyncClient, body: dict[str, Any],
                                                  status: int, code: str | None) -> None:
    response = await client.post("/v2/process", json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if code is None:  # pydantic's own validation: names the field
        assert detail[0]["loc"][0] == "body"
    else:
        assert detail["code"] == code and detail["message"]


async def test_v2_accepts_and_tracks_a_pending_job(client: httpx.AsyncClient) -> None:
    outputs = [{"name": "sq", "width": 100, "height": 100, "fit": "cover", "format": "webp"}]
    response = await client.post("/v2/process", json={
        "book_id": "B-7.x:1", "image_url": "https://example.com/a.jpg", "outputs": outputs})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status_url"] == f"/v2/jobs/{accepted['job_id']}"
    job = (await client.get(accepted["status_url"])).json()
    assert job["state"] == "pending" and job["book_id"] == "B-7.x:1" and job["error"] is None
    (event,) = await requested(client.settings, 1)  # type: ignore[attr-defined]
    assert event.job_id == accepted["job_id"] and json.loads(event.outputs or "") == outputs


async def test_an_idempotency_key_makes_a_retry_the_same_job(
        client: httpx.AsyncClient) -> None:
    body = {"book_id": "B-idem", "image_url": "https://example.com/idem.jpg"}
    first = await client.post("/v2/process", json=body, headers={"Idempotency-Key": "k-1"})
    again = await client.post("/v2/process", json=body, headers={"Idempotency-Key": "k-1"})
    other_body = await client.post("/v2/process", json={**body, "preset": "cover"},
                                   headers={"Idempotency-Key": "k-1"})
    no_key = [await client.post("/v2/process", json=body) for _ in range(2)]
    assert first.status_code == again.status_code == 202
    job_id = first.json()["job_id"]
    assert again.json()["job_id"] == job_id
    assert other_body.json()["job_id"] != job_id
    assert no_key[0].json()["job_id"] != no_key[1].json()["job_id"] != job_id
    events = await requested(client.settings, 5)  # type: ignore[attr-defined]
    assert [e.job_id for e in events].count(job_id) == 2  # the worker sees one job twice


async def test_unknown_jobs_and_covers_are_404(client: httpx.AsyncClient) -> None:
    job = await client.get("/v2/jobs/req-nothing")
    assert job.status_code == 404 and job.json()["detail"]["code"] == "not_found"
    assert (await client.get("/v2/books/B404/cover")).status_code == 404


async def test_operations_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True, "redis": True}
    await client.get("/health")
    metrics = (await client.get("/metrics")).text
    assert 'shim_requests_total{method="GET",route="/health",status="200"}' in metrics


async def test_no_broker_means_503_not_accepted(worker_env: dict[str, str]) -> None:
    """Backpressure: with the broker unreachable nothing is accepted that could be lost."""
    settings = shim_settings(worker_env, kafka_brokers=f"127.0.0.1:{embedded.free_port()}",
                             shim_publish_timeout_sec=1)
    shim = Shim(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shim.app),
                                 base_url="http://shim") as http:
        v2 = await http.post("/v2/process", json={"book_id": "B1",
                                                  "image_url": "https://example.com/a.jpg"})
        assert v2.status_code == 503 and v2.headers["Retry-After"] == "5"
        assert v2.json()["detail"]["code"] == "broker_unavailable"
        frozen = await http.post("/process", json={"book_id": "B1",
                                                   "image_url": "https://example.com/a.jpg"})
        assert frozen.status_code == 503 and frozen.content != ACCEPTED
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["broker"] is False
        assert (await http.get("/health")).content == HEALTH  # liveness is not readiness
    await shim.close()


async def test_bearer_token_guards_v2_only(worker_env: dict[str, str]) -> None:
    settings = shim_settings(worker_env, shim_api_token=f"t-{uuid.uuid4().hex}")
    await ensure_topics(settings)
    shim = Shim(settings)
    body = {"book_id": "B1", "image_url": "https://example.com/a.jpg"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=shim.app),
                                 base_url="http://shim") as http:
        assert (await http.post("/v2/process", json=body)).status_code == 401
        wrong = await http.post("/v2/process", json=body,
                                headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        right = await http.post("/v2/process", json=body, headers={
            "Authorization": f"Bearer {settings.shim_api_token}"})
        assert right.status_code == 202
        assert (await http.post("/process", json=body)).content == ACCEPTED  # frozen: open
    await shim.close()
