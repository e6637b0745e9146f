"""What the phases of one run share: the services, the consumer groups, the data, and the figures so far."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import cpu, synth
from benchmarks.options import PARTITIONS, Options
from benchmarks.progress import Progress
from benchmarks.results import FIGURE_KEYS
from benchmarks.source import snapshot_source
from benchmarks.worker import WorkerProcess
from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.cli.demo.services import free_port
from solar_agents.settings import Settings


@dataclass
class Group:
    """One consumer group of the pipeline: its topics, table, state directory and worker settings."""

    name: str
    solar: str
    weather: str
    table: str
    data_dir: Path

    def env(
        self, broker: LocalBroker, pg: LocalPostgres, extra: dict[str, str], source: Path
    ) -> dict[str, str]:
        setting_names = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k not in setting_names}
        # The pipeline as it was when the run started (see snapshot_source), ahead of the working tree.
        pythonpath = [str(source), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            KAFKA_TOPIC_SOLAR=self.solar,
            KAFKA_TOPIC_WEATHER=self.weather,
            KAFKA_CONSUMER_GROUP=self.name,
            DEADLETTER_TOPIC=f"{self.name}-deadletter",
            FEATURES_TABLE=self.table,
            RISINGWAVE_HOST=pg.host,
            RISINGWAVE_PORT=str(pg.port),
            RISINGWAVE_DATABASE=pg.database,
            RISINGWAVE_USER=pg.user,
            RISINGWAVE_PASSWORD="",
            TOPIC_PARTITIONS=str(PARTITIONS),
            DATA_DIR=str(self.data_dir),
            WEB_PORT=str(free_port()),
            WEB_HOST="127.0.0.1",
            LOG_LEVEL="info",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


class Run:
    """One run: its options, services and data, and what its phases measured (``figures``, ``compare``,
    ``profile``, ``phases``, ``errors``, ``notes``: the parts of the results file)."""

    # The 1x worker, from the 1x backfill on (the live phase and the restore use it); unset before.
    w1: WorkerProcess

    def __init__(self, options: Options, broker: LocalBroker, pg: LocalPostgres, progress: Progress) -> None:
        self.o = options
        self.broker = broker
        self.pg = pg
        self.progress = progress
        self.bootstrap = broker.bootstrap_servers
        self.conn = pg.connect()
        self.regions = synth.make_regions(options.regions)
        self.history_hours = options.days * 24
        self.live_hours = math.ceil(options.live_rate * options.live_seconds / options.regions) + 2
        self.g1 = Group("b1-features", "b1-solar", "b1-weather", "features_b1", options.workdir / "state-1x")
        self.g4 = Group("b4-features", "b4-solar", "b4-weather", "features_b4", options.workdir / "state-4x")
        self.peer_table = "features_sql_peer"
        self.window_hours = int(
            options.settings.get(
                "FEATURE_WINDOW_HOURS", Settings.model_fields["feature_window_hours"].default
            )
        )
        self.figures: dict[str, Any] = {k: {} for k in FIGURE_KEYS}
        self.compare: dict[str, Any] = {}
        self.profile: dict[str, Any] = {}
        self.phases: dict[str, float] = {}
        self.errors: dict[str, str] = {}
        self.notes: list[str] = []
        self.history: list[synth.Obs] = []
        self.live: list[synth.Obs] = []
        self.messages_1x = 0
        self.history_rows = 0
        self.live_next = 0  # index of the next unused live hour
        self.workers: list[WorkerProcess] = []
        self.spy_pids: list[int] = []  # py-spy, while it records: its CPU is counted apart
        self.source, self.source_digest = snapshot_source(options.workdir / "source")

    def topic(self, group: Group, feed: int) -> str:
        return group.solar if feed == synth.SOLAR else group.weather

    def worker(self, group: Group, label: str) -> WorkerProcess:
        env = group.env(self.broker, self.pg, self.o.settings, self.source)
        # Its own working directory, so that a developer's settings.env is not read.
        proc = WorkerProcess(env, self.o.workdir / f"worker-{label}.log", cwd=self.o.workdir)
        self.workers.append(proc)
        return proc

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.progress(f"{name}: start")
        started = time.monotonic()
        try:
            yield
        except Exception as exc:  # record and go on: the other phases still measure something
            self.errors[name] = f"{type(exc).__name__}: {exc}"[:2000]
            self.progress(f"{name}: FAILED: {type(exc).__name__}: {str(exc)[:500]}")
        finally:
            self.phases[name] = round(time.monotonic() - started, 1)
            self.progress(f"{name}: done in {self.phases[name]:.1f} s")

    def setting(self, name: str) -> Any:
        """A worker setting of this run: its --setting value, else the default."""
        return self.o.settings.get(name.upper(), Settings.model_fields[name].default)

    def batch_wait(self) -> float:
        return float(self.setting("batch_max_wait_seconds"))

    def cpu_snapshot(self, worker: WorkerProcess) -> dict[str, float]:
        return cpu.snapshot(worker, self.broker.pid, self.pg.pid, self.spy_pids)

    def cpu_used(self, worker: WorkerProcess, before: dict[str, float]) -> dict[str, float]:
        return cpu.used(before, self.cpu_snapshot(worker))

    def cpu_per_message(
        self, worker: WorkerProcess, before: dict[str, float], messages: int
    ) -> tuple[dict[str, float], float | None]:
        """``cpu_used``, and the CPU milliseconds of the worker and its helpers per raw message since
        ``before`` (from the same snapshot, unrounded)."""
        after = self.cpu_snapshot(worker)
        return cpu.used(before, after), cpu.per_message_ms(cpu.process_seconds(before, after), messages)
