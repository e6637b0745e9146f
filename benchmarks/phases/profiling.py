"""py-spy attached to a phase's worker (the restore and the 4x backfill): started, stopped, summarized."""

from __future__ import annotations

import subprocess
from typing import Any

from benchmarks import cpu, profile
from benchmarks.context import Run
from benchmarks.source import shown
from benchmarks.worker import WorkerProcess


def start(run: Run, worker: WorkerProcess, label: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``worker``, unless the run has no profile (--no-profile, or no py-spy: noted)."""
    if not run.o.profile:
        return None
    spy = profile.start(worker.pid, run.o.workdir / f"py-spy-{label}.txt")
    run.spy_pids = [spy.pid] if spy is not None else []
    if spy is None and not any("py-spy not found" in n for n in run.notes):
        run.notes.append("profile: py-spy not found (uv tool install py-spy); no profile")
    return spy


def finish(run: Run, spy: subprocess.Popen[bytes] | None, label: str, what: str) -> dict[str, Any]:
    """Stop py-spy; the profile's summary for the results (empty without one). ``what``: the span profiled."""
    if spy is None:
        return {}
    used = cpu.cpu_seconds([spy.pid])
    profile.stop(spy)
    run.spy_pids = []
    out = run.o.workdir / f"py-spy-{label}.txt"
    if not out.exists():
        run.notes.append(f"profile {label}: py-spy wrote nothing; see {shown(out.with_suffix('.log'))}")
        return {}
    return {
        "tool": f"py-spy {profile.version()} record --nonblocking --rate 100 (non-idle samples)",
        "run": what,
        "raw_file": str(shown(out)),
        "py_spy_cpu_seconds": round(used, 1),
        **profile.summarize(out),
    }
