"""How commands run a worker: the ``faust`` script of this environment with a worker's arguments (the demo),
and the ``backfill`` command, a worker in its own process."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faust.cli.worker import worker as WorkerCommand
from mode import ServiceT

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


class BackfillCommand(WorkerCommand):  # type: ignore[misc]
    """Faust's ``worker`` command with the backfill on: this process runs the worker and exits once caught up.

    Not a second process: a worker ``exec``ed from here started a second interpreter (about 1.5 s here)
    before its first message (docs/DESIGN.md, "The backfill's start").
    """

    # Set by ``backfill_command``: the settings, and what turns the app's backfill on.
    settings: Settings
    enable: Callable[[], None]

    def as_service(self, loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> ServiceT:
        # Its worker would open the same RocksDB stores and crash on their lock only after its start-up.
        if refused_while_running(Path(self.app.conf.tabledir)):
            raise SystemExit(2)
        exit_on_error(lambda: check_broker(self.settings))
        # Faust's own lines at the worker's level, as ``worker -l LOG_LEVEL`` logs them (its "Ready" too).
        self.loglevel = self.settings.log_level
        self.enable()
        return super().as_service(loop, *args, **kwargs)


def backfill_command(settings: Settings, enable: Callable[[], None]) -> type[BackfillCommand]:
    """The ``backfill`` command's class for one app."""
    return type("BackfillCommand", (BackfillCommand,), {"settings": settings, "enable": staticmethod(enable)})
