"""How every Kafka client of the project connects: the bootstrap servers plus TLS and SASL
from the settings, for the worker's Faust app and for each aiokafka client beside it (the
shim's producer, the offset guard's reader, the catalog sink, `covers dlq`, the backfill).

``KAFKA_SECURITY_PROTOCOL`` picks the transport as Kafka's own clients name it: ``SSL`` and
``SASL_SSL`` verify the broker's certificate against ``KAFKA_SSL_CAFILE`` (or the system's
trust store) and its host name, and present ``KAFKA_SSL_CERTFILE`` for mutual TLS if set;
``SASL_*`` log in with ``KAFKA_SASL_MECHANISM`` (PLAIN or SCRAM).
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
from faust.types.auth import CredentialsT

from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for ``SSL`` / ``SASL_SSL``, or None on a plaintext transport."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile or None)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client."""
    options: dict[str, Any] = {"bootstrap_servers": settings.kafka_brokers,
                               "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials``: the same transport for the worker's own clients."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password,
                                     ssl_context=context,
                                     mechanism=settings.kafka_sasl_mechanism)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
