"""Shared fixtures: one real broker and one real PostgreSQL server for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from kafka_util import Kafka
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
