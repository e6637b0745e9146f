"""The lines of refused connections that the real services of ``end_to_end/test_production_connections``
cannot produce: a certificate for another host, the database's other refusals."""

from __future__ import annotations

import ssl

from aiokafka.errors import KafkaConnectionError, UnsupportedSaslMechanismError

from solar_agents.connect.explain import database_problem, kafka_problem
from solar_agents.connect.kafka import KafkaConnection

TLS = KafkaConnection(("broker:9093",), protocol="SSL")
SERVER = "broker:9093"


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
    )
    error.verify_code, error.verify_message = code, message
    return error


def test_a_certificate_for_another_host_names_the_bootstrap_servers() -> None:
    problem = kafka_problem(_verify_error(62, "Hostname mismatch"), TLS, SERVER, after_login=False)
    assert problem.kind == "refused" and "KAFKA_BOOTSTRAP_SERVERS" in problem.line


def test_an_expired_certificate_is_no_setting_to_change() -> None:
    problem = kafka_problem(_verify_error(10, "certificate has expired"), TLS, SERVER, after_login=False)
    assert problem.kind == "refused" and "not valid now (certificate has expired)" in problem.line


def test_an_unknown_ca_names_the_ca_file() -> None:
    problem = kafka_problem(_verify_error(20, "unable to get local issuer certificate"), TLS, SERVER, False)
    assert "KAFKA_SSL_CAFILE" in problem.line and "unable to get local issuer" in problem.line


def test_a_mechanism_the_broker_does_not_offer() -> None:
    sasl = KafkaConnection((SERVER,), protocol="SASL_PLAINTEXT", mechanism="PLAIN", username="u")
    error = UnsupportedSaslMechanismError(
        "Kafka broker does not support PLAIN sasl mechanism. Enabled mechanisms are: ['SCRAM-SHA-512']"
    )
    problem = kafka_problem(error, sasl, SERVER, after_login=False)
    assert "KAFKA_SASL_MECHANISM" in problem.line and "SCRAM-SHA-512" in problem.line


def test_a_broker_that_is_not_there_may_come_later() -> None:
    problem = kafka_problem(ConnectionRefusedError(111, "Connection refused"), TLS, SERVER, after_login=False)
    assert problem.kind == "unreachable" and "no broker answers at broker:9093" in problem.line
    closed = KafkaConnectionError("Connection at broker:9093 closed")
    assert kafka_problem(closed, TLS, SERVER, after_login=False).kind == "refused"


def test_the_database_refusals_name_their_setting() -> None:
    where = "db:5432/dev"
    cases = {
        'FATAL:  database "dev" does not exist': "RISINGWAVE_DATABASE",
        'FATAL:  role "root" does not exist': "RISINGWAVE_USER",
        "fe_sendauth: no password supplied": "RISINGWAVE_PASSWORD",
        'server certificate for "db.internal" does not match host name "db"': "RISINGWAVE_HOST",
        'connection to server at "db" (10.0.0.1), port 5432 failed: Connection refused': "RISINGWAVE_PORT",
    }
    for message, setting in cases.items():
        problem = database_problem(message, where, "root", "verify-full")
        assert setting in problem.line, (message, problem.line)
        assert problem.kind == ("unreachable" if "Connection refused" in message else "refused")
