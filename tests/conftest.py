"""Shared fixtures: one real broker and one real PostgreSQL server for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka_util import Kafka

from solar_agents.local import LocalBroker, LocalPostgres


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
