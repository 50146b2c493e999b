"""The worker's readiness checks against real dependencies, up and down."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams import embedded
from streams.app import dependencies_reachable
from streams.catalog import open_catalog
from streams.settings import load

pytestmark = pytest.mark.integration


async def test_every_dependency_answers(redis_server: embedded.Service, moto_endpoint: str,
                                        postgres_url: str) -> None:
    settings = load(redis_url=f"redis://{embedded.LOOPBACK}:{redis_server.port}/0",
                    storage_url=f"s3://ready-{uuid.uuid4().hex[:8]}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test",
                    s3_create_bucket=True, catalog_url=postgres_url)
    assert await dependencies_reachable(settings) == {
        "redis": True, "store": True, "catalog": False}  # no catalog table yet
    catalog = open_catalog(settings.catalog_url, settings.catalog_layout)
    await catalog.migrate()
    await catalog.close()
    assert await dependencies_reachable(settings) == {
        "redis": True, "store": True, "catalog": True}


async def test_unreachable_dependencies_are_named(tmp_path: Path) -> None:
    closed = embedded.free_port()  # nothing listens there
    settings = load(redis_url=f"redis://{embedded.LOOPBACK}:{closed}/0",
                    storage_url="s3://nowhere", s3_endpoint=f"http://{embedded.LOOPBACK}:{closed}",
                    s3_access_key_id="test", s3_secret_access_key="test",
                    catalog_url=f"postgresql://covers@{embedded.LOOPBACK}:{closed}/catalog")
    assert await dependencies_reachable(settings, timeout=5) == {
        "redis": False, "store": False, "catalog": False}


async def test_a_missing_bucket_is_not_ready(moto_endpoint: str, tmp_path: Path) -> None:
    settings = load(storage_url=f"s3://absent-{uuid.uuid4().hex[:8]}", s3_endpoint=moto_endpoint,
                    s3_access_key_id="test", s3_secret_access_key="test",
                    catalog_url=f"sqlite:///{tmp_path / 'c.db'}")
    assert (await dependencies_reachable(settings))["store"] is False
