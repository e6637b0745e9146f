"""A Faust worker (``faust -A solar_agents worker``, or another app) as a child process, and what its JSON log
says."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

FAUST = str(Path(sys.executable).with_name("faust"))


@dataclass
class LogEvent:
    at: float  # epoch seconds, from the line's ISO timestamp
    event: str
    fields: dict[str, Any]


class WorkerProcess:
    """One worker of ``app`` (a module Faust finds the app in); stdout and stderr go to ``log_path``.
    Settings come from ``env`` only.

    ``command`` is the Faust command: ``worker``, or the pipeline's ``backfill`` (a worker that exits once
    caught up; the same process, its log level from ``LOG_LEVEL``). ``loop`` is Faust's event loop
    option (``-L``: ``uvloop``); None is asyncio's own loop.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        app: str = "solar_agents",
        command: str = "worker",
        loop: str | None = None,
    ) -> None:
        self.env = dict(env)
        self.app = app
        self.command = command
        self.loop = loop
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.exited_at: float | None = None
        self.exit_cpu_seconds: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
            )
        return self

    def argv(self) -> list[str]:
        # -L is Faust's global option (it must come before the command); the backfill command passes it on
        # to the worker it becomes through the environment (FAUST_LOOP).
        loop = ["-L", self.loop] if self.loop else []
        level = ["-l", "info"] if self.command == "worker" else []
        return [FAUST, *loop, "-A", self.app, self.command, *level]

    def wait_exit(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the process to end by itself; its exit code. Raises
        TimeoutError if it is still running.

        Reaps it with ``wait4`` to keep its resource usage: ``exit_cpu_seconds`` is the CPU time of the
        process and of the children it waited for (its helper processes), from its start to its exit;
        ``exited_at`` when it was seen to end (within 20 ms).
        """
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.returncode is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (poll): no resource usage then
                self.proc.poll()
                break
            if pid:
                self.exited_at = time.time()
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.exit_cpu_seconds = usage.ru_utime + usage.ru_stime
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout} s")
            time.sleep(0.02)
        if self.exited_at is None:
            self.exited_at = time.time()
        return self.proc.returncode if self.proc.returncode is not None else -1

    def wait_event(
        self, predicate: Callable[[LogEvent], bool], timeout: float, after: float = 0.0
    ) -> LogEvent:
        """The first matching log event at or after ``after``; raises if the worker dies or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if event.at >= after and predicate(event):
                    return event
            if not self.alive:
                raise RuntimeError(f"worker exited with {self.returncode()}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker log event not seen within {timeout} s:\n{self.tail()}")
            time.sleep(0.2)

    def wait_ready(self, timeout: float = 120.0) -> LogEvent:
        return self.wait_event(lambda e: e.event == "[^Worker]: Ready", timeout, after=self.started_at - 1)

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM and wait (SIGKILL if it overstays); returns the seconds it took."""
        started = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def helper_pids(self) -> list[int]:
        """The worker's child processes: its helpers (STEP_PROCESSES) and multiprocessing's own."""
        pids: list[int] = []
        for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
            try:
                pids.extend(int(pid) for pid in children.read_text().split())
            except OSError:
                continue
        return pids

    def memory_kib(self) -> dict[str, int]:
        """VmHWM (peak resident set) and VmRSS of the worker, in KiB, from /proc; ``helpers_VmHWM`` and
        ``helpers_VmRSS`` are the sums over its helper processes alive now."""
        out = _status_kib(self.pid)
        helpers = [_status_kib(pid) for pid in self.helper_pids()]
        for name in ("VmHWM", "VmRSS"):
            out[f"helpers_{name}"] = sum(h.get(name, 0) for h in helpers)
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far (its helpers not included)."""
        return _cpu_seconds(self.pid)

    def helpers_cpu_seconds(self) -> float:
        """User + system CPU time so far of the worker's helper processes alive now."""
        return sum(_cpu_seconds(pid) for pid in self.helper_pids())

    def events(self) -> Iterator[LogEvent]:
        """The worker's structured log lines (JSON), in order; other lines are skipped."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                data = json.loads(line)
                at = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, AttributeError):
                continue
            yield LogEvent(at, str(data.get("event", "")), data)

    def log_warnings(self) -> dict[str, int]:
        """The ten commonest warnings and errors of the log; numbers masked so that alike lines count once."""
        counts: Counter[str] = Counter()
        for event in self.events():
            if event.fields.get("level") in ("warning", "error", "critical"):
                counts[re.sub(r"\d+(\.\d+)?", "N", event.event)[:80]] += 1
        return dict(counts.most_common(10))

    def loop_seen(self) -> str | None:
        """The event loop the worker's banner names: Faust marks uvloop on its transport line."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return None
        if "+uvloop" in text:
            return "uvloop"
        return "asyncio" if "transport" in text else None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def remove_state(data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)


def _status_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
