"""A worker and the operator CLI on a broker reachable only over mutual TLS (the real broker
behind a TLS front), and the clients refusing a broker they cannot verify."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from streams import embedded, records
from streams.broker import client_options
from streams.settings import load
from streams.topics import ensure_topics
from tests.conftest import Origin, Worker
from tests.images import encode, gradient
from tests.integration.kafka import collect, publish_books, send
from tests.integration.proxy import TlsTerminator
from tests.tls import Pki, make_pki

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsTerminator]:
    """A broker of its own that advertises, and is reachable only at, a TLS port that asks
    every client for a certificate signed by the test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    broker_port = embedded.free_port()
    with TlsTerminator(broker_port, context) as front:
        service = embedded.broker(tmp_path, broker_port, advertised_port=front.port).start()
        try:
            yield front
        finally:
            service.stop()


def _tls_env(worker_env: dict[str, str], front: TlsTerminator, pki: Pki) -> dict[str, str]:
    return {**worker_env, "KAFKA_BROKERS": f"{embedded.LOOPBACK}:{front.port}",
            "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki.ca),
            "KAFKA_SSL_CERTFILE": str(pki.client_cert), "KAFKA_SSL_KEYFILE": str(pki.client_key)}


async def test_worker_and_cli_over_mutual_tls(worker_env: dict[str, str], origin: Origin,
                                              make_worker: type[Worker], tmp_path: Path,
                                              tls_broker: TlsTerminator, pki: Pki) -> None:
    tag = uuid.uuid4().hex[:6]
    env = _tls_env(worker_env, tls_broker, pki)
    worker = make_worker(env, tmp_path / "worker.log").start()
    settings = worker.settings
    assert settings.kafka_security_protocol == "SSL"
    await ensure_topics(settings)
    book = records.BookEnriched(f"tls-{tag}", origin.add(f"/{tag}/c.jpg",
                                                         encode(gradient(300, 450), "jpg")))
    await publish_books(settings, [book])
    await send(settings, settings.topic_book_enriched, [(f"poison-{tag}", b"\x01garbage")])
    processed, dead = await collect(settings, expected=2, timeout=90)
    assert [p.book_id for p in processed] == [book.book_id]
    assert [(d.book_id, d.reason_code) for d in dead] == [(f"poison-{tag}", "undecodable_event")]

    listing = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli", "dlq", "list", "--reason",
                         "undecodable_event"],
        env={**os.environ, **env, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL)
    assert listing.returncode == 0, listing.stderr
    assert f"poison-{tag}" in listing.stdout
    assert worker.stop() == 0


async def test_clients_refuse_what_they_cannot_verify(
        worker_env: dict[str, str], tls_broker: TlsTerminator, pki: Pki, tmp_path: Path) -> None:
    good = {k.lower(): v for k, v in _tls_env(worker_env, tls_broker, pki).items()}
    stranger = make_pki(tmp_path / "other")  # same names, another CA

    async def connects(**changes: str) -> bool:
        settings = load(**{**good, **changes})
        producer = AIOKafkaProducer(**client_options(settings), request_timeout_ms=5000)
        try:
            await producer.start()
        except KafkaConnectionError:
            return False
        finally:
            await producer.stop()
        return True

    assert await connects()
    assert not await connects(kafka_ssl_cafile=str(stranger.ca))  # the broker's CA unknown
    assert not await connects(kafka_ssl_certfile=str(stranger.client_cert),  # not trusted
                              kafka_ssl_keyfile=str(stranger.client_key))
    assert not await connects(kafka_security_protocol="PLAINTEXT", kafka_ssl_cafile="",
                              kafka_ssl_certfile="", kafka_ssl_keyfile="")
