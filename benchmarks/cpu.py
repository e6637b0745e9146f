"""CPU accounting from /proc: what the worker, its helpers, the services, this process and everything else
on the machine used during a phase."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from benchmarks.worker import WorkerProcess


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (those that are gone count 0)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int | None) -> list[int]:
    """``pid`` and its direct children (the postmaster and its backends)."""
    if pid is None:
        return []
    pids = [pid]
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(entry.parent.name))
    return pids


def snapshot(
    worker: WorkerProcess, broker_pid: int | None, postgres_pid: int | None, py_spy_pids: list[int]
) -> dict[str, float]:
    """CPU seconds so far of every party, and the wall clock: ``used`` subtracts two of them."""
    own = os.times()
    return {
        "worker": worker.cpu_seconds(),
        "helpers": worker.helpers_cpu_seconds(),
        "broker": cpu_seconds([broker_pid] if broker_pid else []),
        "postgres": cpu_seconds(process_tree(postgres_pid)),
        "benchmark": own.user + own.system,
        "py_spy": cpu_seconds(py_spy_pids),
        "machine": machine_busy_seconds(),
        "wall": time.monotonic(),
    }


def process_seconds(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU seconds of the worker and its helpers between two snapshots, unrounded (``used`` rounds to a
    tenth: too coarse for a short run's CPU per message)."""
    return (after["worker"] + after["helpers"]) - (before["worker"] + before["helpers"])


def per_message_ms(cpu_seconds: float, messages: int) -> float | None:
    """CPU milliseconds per raw message."""
    return round(1000 * cpu_seconds / messages, 4) if messages else None


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used between two snapshots by the worker, the broker, PostgreSQL, this process, and
    everything else on the machine (``other``: anything above a few tenths means the figures were
    disturbed)."""
    wall = after["wall"] - before["wall"]
    names = ("worker", "helpers", "broker", "postgres", "benchmark", "py_spy", "machine")
    out = {k: round(after[k] - before[k], 1) for k in names}
    out["other"] = round(max(0.0, out["machine"] - sum(out[k] for k in names[:-1])), 1)
    out["wall"] = round(wall, 1)
    out["worker_core_share"] = round(out["worker"] / wall, 2) if wall > 0 else 0.0
    out["helpers_core_share"] = round(out["helpers"] / wall, 2) if wall > 0 else 0.0
    return out
