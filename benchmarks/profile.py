"""Sampling profile of the worker with py-spy (attached by pid, non-blocking), by function and module.

py-spy's raw (collapsed) output has one line per distinct stack: ``thread (tid): name;frame;...;frame count``,
each frame ``function (path/file.py:line)``, paths shortened to their import name (``faust/tables/base.py``).
Only non-idle samples are recorded: a thread waiting in select() or on a lock is not counted.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Module groups, first match wins (on the shortened file path).
GROUPS: tuple[tuple[str, str], ...] = (
    ("solar_agents/", "solar_agents (our code)"),
    ("faust/", "faust"),
    ("mode/", "mode (faust's service runtime)"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "aiokafka"),
    ("pydantic", "pydantic"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio (event loop)"),
    ("uvloop", "asyncio (event loop)"),
    ("selectors.py", "asyncio (event loop)"),  # the loop's wait for sockets: the event loop's own cost
    ("psycopg2", "psycopg2"),
    ("structlog/", "logging"),
    ("logging/", "logging"),
    ("rocksdict", "rocksdict"),
    ("aiohttp/", "aiohttp (web)"),
    ("concurrent/", "threads (stdlib)"),
    ("threading.py", "threads (stdlib)"),
    ("opentracing", "faust"),
    ("venusian", "faust"),
    ("croniter", "faust"),
    ("click/", "faust"),  # the `faust` command's entry frames
    ("<string>", "dataclasses (generated code)"),
    ("dataclasses.py", "dataclasses (generated code)"),
    ("yarl/", "other libraries"),
    ("multidict", "other libraries"),
)


def py_spy() -> str | None:
    """The py-spy executable: next to this Python (``uv pip install py-spy``), on PATH, or a uv tool
    (``uv tool install py-spy``, which survives ``uv sync``)."""
    for candidate in (Path(sys.executable).with_name("py-spy"), Path.home() / ".local" / "bin" / "py-spy"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("py-spy")


def version() -> str:
    exe = py_spy()
    if exe is None:
        return "?"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip().removeprefix("py-spy ") or "?"


def start(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking", "--threads"]
    # Not --subprocesses: py-spy then samples every helper too, and took a third of a core from the run
    # (20.8 s of CPU in a 63 s backfill, 5.4 s without). The helpers' CPU is measured apart.
    command += ["--format", "raw", "--output", str(output)]
    with output.with_suffix(".log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGINT makes py-spy write its output and exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def group_of(file: str) -> str:
    if file == "faust":
        return "faust"
    for prefix, group in GROUPS:
        if file.startswith(prefix) or f"/{prefix}" in file:
            return group
    top = file.split("/")[0].removesuffix(".py")
    if top in _STDLIB:
        return "stdlib (other)"
    return "other libraries" if "/" in file else "other"


_STDLIB = set(sys.stdlib_module_names)


def _parse(line: str) -> tuple[str, list[tuple[str, str]], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    parts = stack.split(";")
    helper = ""
    while parts and parts[0].startswith("process "):  # --subprocesses: worker, then helper, outermost first
        pid, _, command = parts[0].removeprefix("process ").partition(":")
        helper = f"helper {pid}: " if "multiprocessing" in command else ""
        parts = parts[1:]
    thread = "main"
    if parts and parts[0].startswith("thread ("):
        _tid, _, name = parts[0].partition("): ")
        thread = name or "main"
        parts = parts[1:]
    thread = helper + thread
    frames: list[tuple[str, str]] = []
    for part in parts:
        m = _FRAME.match(part)
        frames.append((m["func"], m["file"]) if m else (part, ""))
    return thread, frames, int(count)


# Pipeline stages, from the outermost frame of our code in a stack (the agent or timer that runs it).
STAGES: tuple[tuple[str, str], ...] = (
    ("report_progress", "progress reports (ingest side)"),
    ("progress_report", "progress reports (align side)"),
    ("log_progress", "progress log"),
    ("ingest", "ingest: raw -> records"),
    ("dead_letter", "ingest: raw -> records"),
    ("align", "align: records -> rows + tables"),
    ("region_state", "align: records -> rows + tables"),
    ("load_states", "align: records -> rows + tables"),
    ("write", "write: rows -> database"),
    ("FeatureSink", "write: rows -> database"),
    ("row_values", "write: rows -> database"),
)


def stage_of(frames: list[tuple[str, str]]) -> str:
    """The stage a sample belongs to: the outermost function of ours in it, else the runtime's module."""
    for func, file in frames:
        if file.startswith("solar_agents/"):
            for needle, stage in STAGES:
                if needle in func:
                    return stage
            return f"solar_agents: {func}"
    for _func, file in reversed(frames):
        if file == "mode/worker.py":  # nothing between the loop's entry and the sample: the loop itself
            return "runtime: the event loop itself (scheduling, select, socket I/O)"
        if file.startswith(("faust/", "mode/", "aiokafka/")):
            return f"runtime: {file}"
    return "runtime: " + (frames[-1][1] if frames else "?")


# The share buckets of issue 10, from the module groups above (first match on the group's name wins).
SHARES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ours", ("solar_agents",)),
    ("faust", ("faust", "mode")),
    ("aiokafka", ("aiokafka",)),
    ("asyncio", ("asyncio",)),
)
SHARE_KEYS = (*(name for name, _ in SHARES), "other")


def share(summary: Mapping[str, Any]) -> dict[str, float] | None:
    """Percent of the non-idle self samples that are ours, Faust's (faust + mode), aiokafka's, the event
    loop's (asyncio + selectors) and everything else's, from a summary's ``self_by_group``.

    Summaries written before selectors.py was grouped with asyncio count it in ``stdlib (other)``; its
    entries among the top functions are moved over, so that old and new shares compare.
    """
    groups = summary.get("self_by_group") or []
    counts: Counter[str] = Counter()
    for entry in groups:
        name = str(entry.get("group", ""))
        bucket = next((key for key, prefixes in SHARES if name.startswith(prefixes)), "other")
        counts[bucket] += int(entry.get("samples", 0))
    for entry in summary.get("self_by_function") or []:
        if entry.get("file") == "selectors.py" and not str(entry.get("group", "")).startswith("asyncio"):
            moved = min(int(entry.get("samples", 0)), counts["other"])
            counts["other"] -= moved
            counts["asyncio"] += moved
    total = sum(counts.values())
    if not total:
        return None
    return {key: round(100.0 * counts[key] / total, 1) for key in SHARE_KEYS}


def summarize(path: Path, top: int = 20) -> dict[str, Any]:
    """Self time by function and by module group, inclusive time of our functions, samples per thread."""
    self_fn: Counter[tuple[str, str]] = Counter()
    self_group: Counter[str] = Counter()
    inclusive_ours: Counter[tuple[str, str]] = Counter()
    inclusive_group: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    stage_groups: dict[str, Counter[str]] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        thread, frames, count = parsed
        total += count
        threads[thread if thread != "MainThread" else "main"] += count
        if not frames:
            continue
        func, file = frames[-1]
        self_fn[(func, file)] += count
        self_group[group_of(file)] += count
        stage = stage_of(frames)
        stages[stage] += count
        stage_groups.setdefault(stage, Counter())[group_of(file)] += count
        for key in {(f, fl) for f, fl in frames if fl.startswith("solar_agents/")}:
            inclusive_ours[key] += count
        for group in {group_of(fl) for _f, fl in frames}:
            inclusive_group[group] += count

    def pct(n: int) -> float:
        return round(100.0 * n / total, 1) if total else 0.0

    summary: dict[str, Any] = {
        "samples": total,
        "self_by_function": [
            {"function": f, "file": fl, "group": group_of(fl), "samples": n, "percent": pct(n)}
            for (f, fl), n in self_fn.most_common(top)
        ],
        "self_by_group": [{"group": g, "samples": n, "percent": pct(n)} for g, n in self_group.most_common()],
        "inclusive_by_group": [
            {"group": g, "samples": n, "percent": pct(n)} for g, n in inclusive_group.most_common()
        ],
        "inclusive_our_functions": [
            {"function": f, "file": fl, "samples": n, "percent": pct(n)}
            for (f, fl), n in inclusive_ours.most_common(top)
        ],
        "threads": [{"thread": t, "samples": n, "percent": pct(n)} for t, n in threads.most_common()],
        "by_stage": [
            {
                "stage": stage,
                "samples": n,
                "percent": pct(n),
                "self_by_group": {g: pct(m) for g, m in stage_groups[stage].most_common(6)},
            }
            for stage, n in stages.most_common(top)
        ],
    }
    summary["share"] = share(summary)
    return summary
