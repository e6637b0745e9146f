"""The run's own fresh services: a tansu broker and a PostgreSQL server, stopped whatever happens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres


@contextlib.contextmanager
def started(workdir: Path) -> Iterator[tuple[LocalBroker, LocalPostgres]]:
    """The broker (its log under ``workdir/tansu``) and PostgreSQL (a throwaway data directory), started.

    Not ``solar_agents.cli.demo.services.local_services``: that one keeps PostgreSQL's data under the
    workdir and stops it without removing it; a run's database is thrown away.
    """
    broker = LocalBroker(workdir=workdir / "tansu")
    pg = LocalPostgres()
    try:
        broker.start()
        pg.start()
        yield broker, pg
    finally:
        pg.cleanup()
        broker.stop()
