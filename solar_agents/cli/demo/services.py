"""Embedded local services, what the broker (broker.py) and the database (postgres.py) share.

Used by the demo command and by the tests, so that both run against real network services
without a cluster. Each service is a child process that its class owns by pid: it is
started on a free port, waited for until it answers its own protocol, and stopped by signal.
A service started in a directory of its own records its pid there, so that a later run in the
same directory can find it if it was left running (its starter killed before it could stop it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from solar_agents.cli.demo.broker import LocalBroker
    from solar_agents.cli.demo.postgres import LocalPostgres

__all__ = [
    "LocalService",
    "LocalServiceError",
    "free_port",
    "local_services",
    "port_taken",
    "record_pid",
    "recorded_pid",
    "stop_process",
]

_LOG_TAIL_BYTES = 4000


class LocalServiceError(RuntimeError):
    """An embedded service could not be found, started or reached."""


class LocalService:
    """A server run as a child process of ours, owned by its pid; a context manager starts and stops it."""

    host = "127.0.0.1"
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on ``port`` of ``host`` already (a bind there would fail).

    A bind test, as the servers will do, not a connect: a port held by a socket that does not accept
    (or bound to another address of the same port) is taken too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too: a port left in TIME_WAIT by the last run is free for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def log_tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _LOG_TAIL_BYTES))
        return fh.read().decode("utf-8", errors="replace")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def terminate(proc: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    """Send `first`, wait up to `timeout` s, then SIGKILL; always reaps the child."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------
# Processes known by pid only
# --------------------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (it holds no ports, files or shared memory).
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (empty where there is no /proc)."""
    children: list[int] = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.parent.name))
    return children


def wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait up to `timeout` s until none of `pids` is alive; whether none is."""
    deadline = time.monotonic() + timeout
    while any(process_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _start_time(pid: int) -> str | None:
    """When `pid` started, in clock ticks since boot (from /proc): tells it from a later one of its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_pid(path: Path, pid: int) -> None:
    """Write `pid` with its start time to `path`, for `recorded_pid` in a later run."""
    path.write_text(f"{pid} {_start_time(pid) or '-'}\n")


def recorded_pid(path: Path) -> int | None:
    """The process `record_pid` wrote to `path` if it still runs (not a later one of its pid), else None."""
    try:
        pid_text, started = path.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    now = _start_time(pid)
    if not process_alive(pid) or (now is not None and started not in (now, "-")):
        return None
    return pid


def stop_process(pid: int, first: signal.Signals, timeout: float, children: Iterable[int] = ()) -> None:
    """Stop a process that is not a child of ours (it cannot be waited for, only watched): `first`,
    then after `timeout` s SIGKILL to it and to its `children`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    if wait_gone([pid], timeout):
        return
    for each in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    wait_gone([pid, *children], 10.0)


@contextlib.contextmanager
def local_services(workdir: Path | None = None) -> Iterator[tuple[LocalBroker, LocalPostgres]]:
    """Start a broker and a database together; both are stopped on exit, whatever happens."""
    from solar_agents.cli.demo.broker import LocalBroker
    from solar_agents.cli.demo.postgres import LocalPostgres

    broker = LocalBroker(workdir=workdir / "tansu" if workdir is not None else None)
    database = LocalPostgres(workdir=workdir / "postgres" if workdir is not None else None)
    with broker, database:
        yield broker, database
