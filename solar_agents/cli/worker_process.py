"""How commands run a worker: the ``faust`` script of this environment, with a worker's arguments."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from solar_agents.cli.checks import check_broker
from solar_agents.cli.errors import exit_on_error
from solar_agents.cli.rebuild import refused_while_running
from solar_agents.settings import Settings


def faust_executable() -> str:
    """The ``faust`` script of this environment (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("faust")
    return str(beside) if beside.exists() else shutil.which("faust") or "faust"


def worker_argv(level: str) -> list[str]:
    """The command line of a worker logging at ``level``."""
    return [faust_executable(), "-A", "solar_agents", "worker", "-l", level]


def run_backfill(settings: Settings, tabledir: Path) -> NoReturn:
    """The ``backfill`` command: this process becomes a worker that exits once caught up."""
    # Its worker would open the same RocksDB stores and crash on their lock only after its start-up.
    if refused_while_running(tabledir):
        raise SystemExit(2)
    exit_on_error(lambda: check_broker(settings))
    env = {**os.environ, "EXIT_WHEN_CAUGHT_UP": "true"}
    argv = worker_argv(os.environ.get("LOG_LEVEL", settings.log_level))
    # A worker of its own, in this process: the same code path as the long-running one.
    os.execve(argv[0], argv, env)
