"""The worker class of the app: Faust's, plus a clear word when the local state is ahead of the broker."""

from __future__ import annotations

import contextlib
import fcntl
import sys
from pathlib import Path
from typing import IO

import faust
from faust.exceptions import ConsistencyError

from solar_agents.errors import Refused
from solar_agents.observe.log import get_logger

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


class Worker(faust.Worker):
    """Faust's worker, ending with one line where a crash is the user's to fix: a changelog offset kept in
    the local state beyond the changelog's end (``ConsistencyError``: what it means and what to run), and a
    ``Refused`` (exit code 2)."""

    _lock: IO[bytes] | None = None

    async def on_first_start(self) -> None:
        self._lock = hold_worker_lock(Path(self.app.conf.tabledir))
        await super().on_first_start()

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
