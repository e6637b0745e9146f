"""The worker class of the app: Faust's, plus a check of its connections at start and a clear word when the
local state is ahead of the broker."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import sys
from pathlib import Path
from typing import IO, ClassVar, NoReturn

import faust
from faust.exceptions import ConsistencyError

from solar_agents.connect.preflight import database_problem_of, kafka_problem_of
from solar_agents.errors import Refused
from solar_agents.observe.log import get_logger
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo

log = get_logger(__name__)

STATE_AHEAD = (
    "refused: the table state in {datadir} is ahead of the broker's changelog: the broker lost its data "
    "(an in-memory broker restarted?). Run `faust -A solar_agents rebuild` (or delete {datadir}) and start "
    "again: the tables are rebuilt from the topics."
)


# Held by every worker process for its whole life, from before its table stores open: the commands that
# must not run beside a worker (backfill, replay, rebuild) see it even in the seconds before RocksDB's locks.
WORKER_LOCK = "worker.lock"


def hold_worker_lock(tabledir: Path) -> IO[bytes]:
    tabledir.mkdir(parents=True, exist_ok=True)
    handle = (tabledir / WORKER_LOCK).open("ab")
    with contextlib.suppress(OSError):  # a second worker on this DATA_DIR: RocksDB's locks decide, as before
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def beyond_loopback(host: str) -> bool:
    """Whether a web view bound to ``host`` can be reached from other machines."""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a name: whatever it resolves to


def refuse_to_start(line: str) -> NoReturn:
    """End the worker before it starts anything: one line on stderr, exit code 2 (a setting to change)."""
    print(f"error: {line}", file=sys.__stderr__, flush=True)  # Faust redirects sys.stderr into its logs
    sys.stdout.flush()
    os._exit(2)


def warn_if_open(settings: Settings) -> None:
    """A warning at start when anyone who reaches the web view's port may read it."""
    if settings.web_auth_token is None and beyond_loopback(settings.web_host):
        log.warning(
            "web_view_open",
            host=settings.web_host,
            port=settings.web_port,
            fix="set WEB_AUTH_TOKEN (or WEB_HOST=127.0.0.1): the view shows the table state and the raw "
            "bytes of dead letters",
        )


class Worker(faust.Worker):
    """Faust's worker. It checks its connections first: settings the broker or the database refuse (a wrong
    password, an unknown CA, TLS against a plaintext port) end it with one line and exit code 2, not a loop
    of tracebacks. Faust stops with ``ConsistencyError`` and a traceback when a changelog offset kept in the
    local state is beyond the changelog's end; this says what that means and what to run. A ``Refused``
    crash (a changed feature definition, a missing privilege) ends it with one line and exit code 2 too."""

    settings: ClassVar[Settings | None] = None  # set by ``worker_for``
    _lock: IO[bytes] | None = None

    async def on_first_start(self) -> None:
        if self.settings is not None:
            await self.check_connections(self.settings)
            warn_if_open(self.settings)
        self._lock = hold_worker_lock(Path(self.app.conf.tabledir))
        await super().on_first_start()

    @staticmethod
    async def check_connections(settings: Settings) -> None:
        """Refuse to start on settings the servers refuse; a server that does not answer yet is waited for."""
        database = asyncio.to_thread(database_problem_of, ConnectionInfo.of(settings))
        for service, problem in zip(
            ("broker", "database"),
            await asyncio.gather(kafka_problem_of(settings.kafka), database),
            strict=True,
        ):
            if problem is None:
                continue
            if problem.kind == "refused":
                log.error("connection_refused", service=service, problem=problem.line)
                refuse_to_start(problem.line)
            log.warning("connection_not_answered", service=service, problem=problem.line)

    def stop_and_shutdown(self) -> None:
        try:
            super().stop_and_shutdown()  # re-raises the crash reason once the loop is closed
        finally:
            reason = self.crash_reason
            if isinstance(reason, ConsistencyError):
                datadir = self.app.conf.datadir
                log.error(
                    "table_state_ahead_of_broker",
                    data_dir=str(datadir),
                    detail=" ".join(str(reason).split()),
                    fix="faust -A solar_agents rebuild",
                )
                # The last line on the terminal; Faust redirects sys.stderr into its logs.
                print(STATE_AHEAD.format(datadir=datadir), file=sys.__stderr__, flush=True)
            elif isinstance(reason, Refused):
                log.error("refused", reason=str(reason))
                print(f"refused: {reason}", file=sys.__stderr__, flush=True)
                raise SystemExit(2)  # a setting or a privilege to change: a restart would only refuse again


def worker_for(settings: Settings) -> type[Worker]:
    """The worker class of an app built from ``settings``."""
    return type("Worker", (Worker,), {"settings": settings})
