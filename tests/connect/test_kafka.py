"""The one place the Kafka settings become client options: each client library's form of the same settings."""

from __future__ import annotations

from pathlib import Path

import faust
from pydantic import SecretStr
from secure_services import Certificates

from solar_agents.connect.kafka import KafkaConnection
from solar_agents.settings import Settings

SECRET = "s3cret-kafka"


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]


def test_plaintext_is_the_default_and_names_every_server(tmp_path: Path) -> None:
    kafka = _settings(tmp_path, kafka_bootstrap_servers=" a:1, b ,").kafka
    assert kafka.servers == ("a:1", "b") and kafka.addresses() == [("a", 1), ("b", 9092)]
    assert kafka.aiokafka() == {
        "bootstrap_servers": ["a:1", "b"],
        "security_protocol": "PLAINTEXT",
        "ssl_context": None,
    }
    assert kafka.faust() == {"broker": "kafka://a:1;kafka://b", "broker_credentials": None}
    assert kafka.librdkafka() == {"bootstrap.servers": "a:1,b", "security.protocol": "plaintext"}


def test_sasl_ssl_in_every_client_library_and_in_no_repr(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        kafka_security_protocol="sasl_ssl",
        kafka_sasl_mechanism="scram-sha-256",
        kafka_sasl_username="svc",
        kafka_sasl_password=SECRET,
    )
    kafka = settings.kafka
    options = kafka.aiokafka()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("svc", SECRET)
    assert options["ssl_context"].check_hostname  # verified against the system's authorities
    credentials = kafka.faust()["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-256"
    assert kafka.librdkafka() == {
        "bootstrap.servers": "localhost:30092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "svc",
        "sasl.password": SECRET,
    }
    for shown in (repr(kafka), str(kafka), repr(settings), str(settings), repr(credentials)):
        assert SECRET not in shown


def test_ssl_alone_is_tls_without_a_login(certificates: Certificates) -> None:
    kafka = KafkaConnection(("b:9093",), protocol="SSL", cafile=certificates.ca)
    assert isinstance(kafka.faust()["broker_credentials"], faust.SSLCredentials)
    assert kafka.aiokafka()["ssl_context"] is kafka.ssl_context()  # one context for every client
    assert kafka.librdkafka() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "ssl",
        "ssl.ca.location": str(certificates.ca),
    }
    mutual = KafkaConnection(
        ("b:9093",), protocol="SSL", certfile=Path("/c.pem"), key_password=SecretStr("k")
    )
    assert mutual.librdkafka()["ssl.key.location"] == "/c.pem"  # the key in the certificate's file
    assert mutual.librdkafka()["ssl.key.password"] == "k" and "'k'" not in repr(mutual)
