"""The worker class of the app: Faust's, plus a clear word when it cannot go on (the local state ahead of the
broker, a full ``DATA_DIR``, an agent that failed) and a stop that never takes longer than
``SHUTDOWN_TIMEOUT_SECONDS``."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO

import faust
from faust.exceptions import ConsistencyError

from solar_agents.observe.health import DATA_DIR_FULL, Health, disk_full, one_line, pending
from solar_agents.observe.log import get_logger
from solar_agents.runtime.batches import RETRYING

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


class Worker(faust.Worker):
    """Faust's worker, ending with one line on stderr (and a non-zero exit) when it cannot go on, and within
    ``shutdown_timeout`` seconds of the start of a stop whatever is down.

    Faust stops with ``ConsistencyError`` and a traceback when a changelog offset kept in the local state is
    beyond the changelog's end; this says what that means and what to run."""

    _lock: IO[bytes] | None = None
    _deadline: threading.Timer | None = None
    # Set per app by ``worker_class``.
    shutdown_timeout: float = 8.0
    health: Health | None = None

    async def on_first_start(self) -> None:
        self._lock = hold_worker_lock(Path(self.app.conf.tabledir))
        await super().on_first_start()

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
        waiting = pending(time.monotonic(), RETRYING)
        log.error("shutdown_timeout", seconds=self.shutdown_timeout, waiting=waiting)
        line = self._fatal_line() or SHUTDOWN_TIMEOUT.format(seconds=self.shutdown_timeout, waiting=waiting)
        _last_line(line)
        os._exit(1)

    def _fatal_line(self) -> str | None:
        """The line naming why the worker ends, when it ends on a fault."""
        reason = self.crash_reason
        if isinstance(reason, Fatal):
            return reason.line
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
            line = self._fatal_line()
            if line is not None:
                _last_line(line)


def _last_line(text: str) -> None:
    """The last line on the terminal; Faust redirects sys.stderr into its logs."""
    print(text, file=sys.__stderr__, flush=True)


def worker_class(shutdown_timeout: float, health: Health) -> type[Worker]:
    """The worker class of one app: its stop deadline, and the health it marks as stopping."""
    attributes = {"shutdown_timeout": shutdown_timeout, "health": health, "__module__": __name__}
    return type("Worker", (Worker,), attributes)
