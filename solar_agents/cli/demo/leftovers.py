"""What an earlier demo on the same directory left running: killed (SIGKILL, the OOM killer) before it could
stop its worker, broker and database, it leaves them holding the demo's ports. The next demo on that
directory stops them, rather than refusing those ports.

They are its own when the directory says so: the broker's and the worker's pid files (pid and start time,
so that a later process given the same pid is not taken for them), the database's postmaster.pid. And only
while no demo runs on the directory: each holds a lock on it, which the OS drops when the demo dies.
"""

from __future__ import annotations

import fcntl
import signal
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from solar_agents.cli.demo.services import recorded_pid, stop_process

if TYPE_CHECKING:
    from solar_agents.cli.demo.broker import LocalBroker
    from solar_agents.cli.demo.postgres import LocalPostgres

LOCK_FILE = "demo.lock"
WORKER_PID_FILE = "worker.pid"
WORKER_STOP_SECONDS = 30.0  # a worker stops in seconds; one that takes longer is killed


def lock_demo_dir(workdir: Path) -> BinaryIO | None:
    """The lock of the demo running on ``workdir`` (created), held as long as the returned file is open;
    None while another demo holds it."""
    workdir.mkdir(parents=True, exist_ok=True)
    handle = (workdir / LOCK_FILE).open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def stop_leftovers(workdir: Path, broker: LocalBroker, database: LocalPostgres) -> None:
    """Stop what an earlier demo on ``workdir`` left running, saying so in one line.

    Only with the lock of ``workdir`` held: a demo still running there owns what it started.
    """
    stopped: list[str] = []
    worker = recorded_pid(workdir / WORKER_PID_FILE)
    if worker is not None:  # first: it is a client of the other two
        stop_process(worker, signal.SIGTERM, WORKER_STOP_SECONDS)
        stopped.append(f"worker (pid {worker})")
    (workdir / WORKER_PID_FILE).unlink(missing_ok=True)
    for name, stop in (("database", database.stop_leftover), ("broker", broker.stop_leftover)):
        pid = stop()
        if pid is not None:
            stopped.append(f"{name} (pid {pid})")
    if stopped:
        print(f"stopped what an earlier demo left running in {workdir}: {', '.join(stopped)}", flush=True)
