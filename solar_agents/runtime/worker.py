"""The worker class of the app: Faust's, plus a check of its connections at start, a clear word when it cannot
go on (a refused setting or feature definition, the local state ahead of the broker, a full ``DATA_DIR``, an
agent that failed) and a stop that never takes longer than ``SHUTDOWN_TIMEOUT_SECONDS``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, NoReturn

import faust
from faust.exceptions import ConsistencyError

from solar_agents.connect.preflight import database_problem_of, kafka_problem_of
from solar_agents.errors import Refused
from solar_agents.observe.health import DATA_DIR_FULL, Health, disk_full, one_line, pending
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
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


SHUTDOWN_TIMEOUT = (
    "stopped: the stop took longer than SHUTDOWN_TIMEOUT_SECONDS={seconds:g}; waiting for: {waiting}. Input "
    "not yet written was not committed and is read again at the next start"
)


class Fatal(RuntimeError):
    """A fault the worker cannot get over by itself; ``line`` says what it is and what to do."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


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
    """Faust's worker, ending with one line on stderr (and a non-zero exit) when it cannot go on, and within
    ``shutdown_timeout`` seconds of the start of a stop whatever is down.

    It checks its connections first: settings the broker or the database refuse (a wrong password, an unknown
    CA, TLS against a plaintext port) end it with exit code 2, not a loop of tracebacks; so does a ``Refused``
    crash (a changed feature definition, a missing privilege). Faust stops with ``ConsistencyError`` and a
    traceback when a changelog offset kept in the local state is beyond the changelog's end; this says what
    that means and what to run."""

    _lock: IO[bytes] | None = None
    _deadline: threading.Timer | None = None
    # Set per app by ``worker_class``.
    shutdown_timeout: float = 8.0
    health: Health | None = None
    stats: Stats | None = None
    settings: Settings | None = None

    async def _sentinel_task(self) -> None:
        # mode's last step, once everything has stopped, sleeps a whole second: every exit (a backfill's
        # included) took a second longer than its work. A short turn of the loop ends the same way.
        await asyncio.sleep(0.1)

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

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        self._stop_within_deadline()
        super()._schedule_shutdown(sig)

    def _stop_within_deadline(self) -> None:
        """From the start of a stop on, ``shutdown_timeout`` seconds at most: a stop waits for work in
        flight, and work that waits for a database or a broker that does not answer would never end. Exiting
        then loses nothing: an offset is committed only after its work is done."""
        if self.health is not None:
            self.health.stopping = True
        if self._deadline is None:
            self._deadline = threading.Timer(self.shutdown_timeout, self._out_of_time)
            self._deadline.daemon = True
            self._deadline.start()
            # The last resort, should the timer's thread never get the interpreter back (a C call that
            # holds it): the kernel ends the process a second later (SIGALRM's default action).
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, self.shutdown_timeout + 1.0)

    def _out_of_time(self) -> None:
        waiting = pending(time.monotonic(), self.stats.retrying if self.stats is not None else {})
        log.error("shutdown_timeout", seconds=self.shutdown_timeout, waiting=waiting)
        line = self._fatal_line() or SHUTDOWN_TIMEOUT.format(seconds=self.shutdown_timeout, waiting=waiting)
        _last_line(line)
        os._exit(1)

    def _fatal_line(self) -> str | None:
        """The line naming why the worker ends, when it ends on a fault."""
        reason = self.crash_reason
        if isinstance(reason, Fatal):
            return reason.line
        if isinstance(reason, Refused):
            return f"refused: {reason}"
        if self.health is not None and self.health.fatal is not None:
            return self.health.fatal
        if reason is not None and disk_full(reason):  # outside an agent: the tables' recovery
            return DATA_DIR_FULL.format(data_dir=self.app.conf.datadir, error=one_line(reason))
        if isinstance(reason, ConsistencyError):
            return STATE_AHEAD.format(datadir=self.app.conf.datadir)
        return None

    def stop_and_shutdown(self) -> None:
        self._stop_within_deadline()
        try:
            super().stop_and_shutdown()  # re-raises the crash reason once the loop is closed
        finally:
            reason = self.crash_reason
            if isinstance(reason, ConsistencyError):
                log.error(
                    "table_state_ahead_of_broker",
                    data_dir=str(self.app.conf.datadir),
                    detail=" ".join(str(reason).split()),
                    fix="faust -A solar_agents rebuild",
                )
            if isinstance(reason, Refused):
                log.error("refused", reason=str(reason))
            line = self._fatal_line()
            if line is not None:
                _last_line(line)
            if isinstance(reason, Refused):
                raise SystemExit(2)  # a setting or a privilege to change: a restart would only refuse again


def _last_line(text: str) -> None:
    """The last line on the terminal; Faust redirects sys.stderr into its logs."""
    print(text, file=sys.__stderr__, flush=True)


def worker_class(settings: Settings, health: Health, stats: Stats) -> type[Worker]:
    """The worker class of one app: its settings (connections checked at start, the stop deadline), the
    health it marks as stopping, and the stats whose retries under way a stop out of time names."""
    attributes = {
        "settings": settings,
        "shutdown_timeout": settings.shutdown_timeout_seconds,
        "health": health,
        "stats": stats,
        "__module__": __name__,
    }
    return type("Worker", (Worker,), attributes)
