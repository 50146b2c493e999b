"""Kafka transport settings: what start-up refuses, and what every client is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest

from streams.broker import client_options, faust_credentials
from streams.settings import ConfigError, load
from tests.tls import make_pki


def test_plaintext_by_default() -> None:
    settings = load(kafka_brokers="a:1,b:2")
    assert client_options(settings) == {"bootstrap_servers": "a:1,b:2",
                                        "security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
     "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "hunter2"},
     "go with KAFKA_SECURITY_PROTOCOL=SASL_SSL or SASL_PLAINTEXT"),
    ({"kafka_ssl_cafile": "/etc/hostname"}, "KAFKA_SSL_\\* files go with"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/etc/hostname"},
     "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nowhere/ca.pem"},
     "KAFKA_SSL_CAFILE: no such file"),
    ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p", "kafka_sasl_mechanism": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
])
def test_inconsistent_transport_is_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load(**changes)
    assert "hunter2" not in str(raised.value)  # a password is never echoed


def test_sasl_over_tls_with_a_private_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    settings = load(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                    kafka_sasl_username="covers", kafka_sasl_password="s3cret",
                    kafka_ssl_cafile=str(pki.ca))
    options = client_options(settings)
    context = options.pop("ssl_context")
    assert options == {"bootstrap_servers": "kafka:9092", "security_protocol": "SASL_SSL",
                       "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": "covers",
                       "sasl_plain_password": "s3cret"}
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the private CA only, not the system's

    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL",
                                                                         "SCRAM-SHA-256")
    assert (credentials.username, credentials.password) == ("covers", "s3cret")
    assert credentials.ssl_context is not None and credentials.ssl_context.check_hostname


def test_sasl_plaintext_has_no_tls() -> None:
    settings = load(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                    kafka_sasl_username="u", kafka_sasl_password="p")
    assert "ssl_context" not in client_options(settings)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None


def test_tls_with_the_system_trust_store() -> None:
    settings = load(kafka_security_protocol="SSL")
    context = client_options(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL" and credentials.context.check_hostname
