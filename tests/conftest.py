"""Shared fixtures: one real broker and one real PostgreSQL server for the whole test session."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from kafka_util import Kafka
from secure_services import Certificates, SecureBroker, make_certificates, secure_postgres
from worker import Names, Worker, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres


class WorkerFactory(Protocol):
    def __call__(self, wait: bool = True, data_dir: Path | None = None, **settings: str) -> Worker: ...


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    service = LocalBroker(workdir=tmp_path_factory.mktemp("tansu"))
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    # Its own temporary data dir rather than pytest's tmp_path: the server runs as the
    # `postgres` user when the tests run as root, and needs to reach every parent directory.
    service = LocalPostgres()
    try:
        service.start()
        yield service
    finally:
        service.cleanup()


@pytest.fixture
def kafka(broker: LocalBroker) -> Kafka:
    """Topic, produce and read-back helpers bound to the session broker."""
    return Kafka(broker.bootstrap_servers)


@pytest.fixture
def names() -> Names:
    """Topic, group and table names of this test alone."""
    return Names()


@pytest.fixture
def workers(
    broker: LocalBroker, postgres: LocalPostgres, names: Names, tmp_path: Path
) -> Iterator[WorkerFactory]:
    """Start real worker processes for this test; all are stopped at its end, their logs kept on failure."""
    started: list[Worker] = []

    def start(wait: bool = True, data_dir: Path | None = None, **settings: str) -> Worker:
        data = data_dir or tmp_path / "state"
        env = worker_env(broker, postgres, names, data, **settings)
        worker = Worker(env, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.start(wait=wait)

    try:
        yield start
    finally:
        for worker in started:
            worker.terminate(timeout=15)


# --- services that require TLS and a login (tests of the production settings) ------------------------------


@dataclass(frozen=True)
class Secrets:
    """The session's passwords and token: no log of any test may hold them."""

    kafka_user: str = "features"
    kafka_password: str = f"kafka-{secrets.token_urlsafe(12)}"
    database_password: str = f"database-{secrets.token_urlsafe(12)}"
    web_token: str = f"token-{secrets.token_urlsafe(16)}"

    def all(self) -> list[str]:
        return [self.kafka_password, self.database_password, self.web_token]


@pytest.fixture(scope="session")
def session_secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="session")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates, session_secrets: Secrets
) -> Iterator[SecureBroker]:
    """The local broker behind TLS (client certificates required) and SASL."""
    users = {session_secrets.kafka_user: session_secrets.kafka_password}
    service = SecureBroker(tmp_path_factory.mktemp("secure-broker"), certificates, users)
    try:
        yield service.start()
    finally:
        service.stop()


@pytest.fixture(scope="session")
def tls_postgres(certificates: Certificates, session_secrets: Secrets) -> Iterator[LocalPostgres]:
    """PostgreSQL whose TCP port takes only TLS with a password."""
    service = secure_postgres(certificates, session_secrets.database_password)
    try:
        service.start()
        yield service
    finally:
        service.cleanup()
