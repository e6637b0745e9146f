"""CLI commands of the app, listed by ``faust -A solar_agents --help``.

- ``demo``: the embedded default: a local broker and PostgreSQL, the real data set flowing, a worker.
- ``backfill``: process everything in the topics, write it, print a summary and exit once caught up.
- ``replay``: move the group back so that every row from a time on is rewritten by the next start.
- ``rebuild``: remove the local table state so that the next start restores it from the changelogs.
- ``rows``: print the latest rows of the output table.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import faust
import psycopg2
import psycopg2.errors
from faust.cli import AppCommand, option
from psycopg2 import sql

from solar_agents import compat
from solar_agents.progress import ProgressPrinter
from solar_agents.read_progress import Feed
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo
from solar_agents.worker import WORKER_LOCK

if TYPE_CHECKING:
    from solar_agents.agents import Pipeline

T = TypeVar("T")

DATASET = (
    Path(__file__).resolve().parent.parent
    / "datasets"
    / "50hertz_hamburg_2019"
    / "50hertz_hamburg_2019_hourly.csv"
)


def faust_executable() -> str:
    """The ``faust`` script of this environment (beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).with_name("faust")
    return str(beside) if beside.exists() else shutil.which("faust") or "faust"


def dataset_messages(path: Path = DATASET) -> Iterator[tuple[str, bytes, bytes]]:
    """The real data set as the two raw feeds would carry it: (feed, key, value), hour by hour."""
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):

            def num(name: str, row: dict[str, str] = row) -> float | None:
                return float(row[name]) if row[name] else None

            key = row["region"].encode()
            solar = {
                "timestamp": row["timestamp"],
                "region": row["region"],
                "production_mw": num("production_mw"),
            }
            weather = {
                "timestamp": row["timestamp"],
                "region": row["region"],
                "temperature_c": num("temperature_c"),
                "cloud_cover_pct": num("cloud_cover_pct"),
                "solar_radiation_wm2": num("solar_radiation_wm2"),
                "latitude": num("latitude"),
                "longitude": num("longitude"),
            }
            yield "solar", key, json.dumps(solar).encode()
            yield "weather", key, json.dumps(weather).encode()


def _port(hostport: str, default: int) -> int:
    first = hostport.split(",")[0].strip()
    return int(first.rsplit(":", 1)[1]) if ":" in first else default


def connect(settings: Settings) -> Any:
    conn = ConnectionInfo.of(settings).connect()
    conn.autocommit = True
    return conn


ROWS_LIMIT_MAX = 100_000  # a bound that a terminal can still show; beyond, use psql


class CommandError(Exception):
    """A command cannot do what was asked; ``str()`` is the one line for the user (exit code 2)."""


def db_error(settings: Settings, exc: psycopg2.Error) -> CommandError:
    """What a database error means for the user, naming the setting to change."""
    where = f"{settings.risingwave_host}:{settings.risingwave_port}/{settings.risingwave_database}"
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return CommandError(
            f"no table {settings.features_table!r} in the database {where}; "
            "start a worker to create it, or set FEATURES_TABLE"
        )
    if isinstance(exc, psycopg2.OperationalError):
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        return CommandError(
            f"cannot reach the database at {where} ({first}); "
            "set RISINGWAVE_HOST, RISINGWAVE_PORT, RISINGWAVE_DATABASE or RISINGWAVE_USER"
        )
    return CommandError(f"the database at {where} refused the query: {str(exc).strip().splitlines()[0]}")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= ROWS_LIMIT_MAX:
        raise CommandError(f"--limit must be between 1 and {ROWS_LIMIT_MAX:,}, got {limit}")
    return limit


def print_rows(settings: Settings, limit: int, region: str | None = None) -> None:
    """The latest rows of the output table, as a plain text table."""
    check_limit(limit)
    if region is not None:
        check_region(region, "--region")
    try:
        names, rows, total = _latest_rows(settings, limit, region)
    except psycopg2.Error as exc:
        raise db_error(settings, exc) from None

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "" if v is None else str(v)

    table = [names, *[[cell(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(names))]
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} of {total} rows in {settings.features_table})")


def _latest_rows(settings: Settings, limit: int, region: str | None) -> tuple[list[str], list[Any], int]:
    query = sql.SQL('SELECT * FROM {} {} ORDER BY "timestamp" DESC, region LIMIT %s').format(
        sql.Identifier(settings.features_table), sql.SQL("WHERE region = %s" if region else "")
    )
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(query, ([region] if region else []) + [limit])
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(settings.features_table)))
            total = cur.fetchone()[0]
    finally:
        conn.close()
    return names, rows, int(total)


def check_region(region: str, flag: str) -> str:
    """A region name as ingest accepts one (see records.Region), else a CommandError naming ``flag``."""
    from pydantic import TypeAdapter, ValidationError

    from solar_agents.records import Region

    try:
        TypeAdapter(Region).validate_python(region)
    except ValidationError as exc:
        msg = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
        raise CommandError(f"{flag} {region!r} is not a region name: {msg}") from None
    return region


def brokers_answering(servers: str, timeout: float = 3.0) -> bool:
    """Whether any of the bootstrap servers accepts a connection."""
    for hostport in (h.strip() for h in servers.split(",") if h.strip()):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or hostport, int(port) if port else 9092), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def check_broker(settings: Settings) -> None:
    if not brokers_answering(settings.kafka_bootstrap_servers):
        raise CommandError(
            f"no broker answers at {settings.kafka_bootstrap_servers}; "
            "start it or set KAFKA_BOOTSTRAP_SERVERS"
        )


def exit_on_error(body: Callable[[], T]) -> T:
    """Run a command's body: a CommandError ends it with one line on stderr and exit code 2."""
    try:
        return body()
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class BackfillProgress:
    """The backfill's progress on the real stdout: raw messages read of all there are, rate and ETA.

    The total is what this process has read plus what is left up to the high-water marks of fetch
    responses (ListOffsets is wrong on some brokers after batched writes, a fetch response is not).
    """

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline
        self.raw = (pipeline.settings.kafka_topic_solar, pipeline.settings.kafka_topic_weather)
        # The real stdout: the worker redirects print() into its log.
        self.printer = ProgressPrinter(sys.__stdout__ or sys.stderr)
        self._finished_at: int | None = None

    def left(self) -> int | None:
        """Raw messages not yet read by this worker; None while an end is not known."""
        consumer = self.app.consumer
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic in self.raw]
        except Exception:  # not started yet, or between generations
            return None
        if not assigned:
            return None
        read_offsets = compat.read_offsets(consumer)
        committed = compat.committed_offsets(consumer)
        left = 0
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return None
            last = read_offsets.get(tp)
            position = last + 1 if last is not None else committed.get(tp) or 0
            left += max(0, highwater - position)
        return left

    async def tick(self) -> None:
        stats = self.pipeline.stats
        read = sum(stats.ingested[t] + stats.dead_letters[t] for t in self.raw)
        left = self.left()
        total = None if left is None else read + left
        finished = left == 0
        if finished and self._finished_at == read:
            return  # said once: the summary follows
        self._finished_at = read if finished else None
        self.printer.update(read, total, final=finished)


def register_commands(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings
    if settings.exit_when_caught_up:
        app.timer(1.0, name="backfill_progress")(BackfillProgress(app, pipeline).tick)

    @app.command(
        option("--rate", type=float, default=100.0, help="Hours of the data set produced per second."),
        # Not --workdir: faust takes that from anywhere on the command line as its own, and changes into it.
        option("--dir", "workdir", type=str, default="var/demo", help="Where the local services keep data."),
    )
    async def demo(self: AppCommand, rate: float, workdir: str) -> None:
        """Run it all locally: broker, PostgreSQL, the real data set flowing in, a worker, the web view."""
        task = asyncio.ensure_future(run_demo(settings, rate, Path(workdir)))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # stop everything it started, whatever stops it
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            print("stopped: worker, broker and database")
        except CommandError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    @app.command()
    async def backfill(self: AppCommand) -> None:
        """Process everything in the topics, write it, and exit 0 with a summary once caught up."""
        # Its worker would open the same RocksDB stores and crash on their lock only after its start-up.
        held = running_here(self.app.conf.tabledir)
        if held:
            print(f"refused: a worker is running on this state ({held[0]}); stop it first", file=sys.stderr)
            raise SystemExit(2)
        exit_on_error(lambda: check_broker(settings))
        env = {**os.environ, "EXIT_WHEN_CAUGHT_UP": "true"}
        level = os.environ.get("LOG_LEVEL", settings.log_level)
        argv = [faust_executable(), "-A", "solar_agents", "worker", "-l", level]
        # A worker of its own, in this process: the same code path as the long-running one.
        os.execve(argv[0], argv, env)

    @app.command(
        option(
            "--from",
            "from_",
            type=str,
            default=None,
            help="Event time (ISO 8601) from which every row is rewritten; omitted: the whole history.",
        ),
        option("--region", type=str, default=None, help="Only this region's rows (default: all)."),
    )
    async def replay(self: AppCommand, from_: str | None, region: str | None) -> None:
        """Move the group back on the raw topics so the next start rewrites every row from --from on."""
        raise SystemExit(await run_replay(settings, self.app.conf.tabledir, from_, region))

    @app.command()
    async def rebuild(self: AppCommand) -> None:
        """Remove the local table state; the next start restores it from the changelogs."""
        raise SystemExit(run_rebuild(self.app.conf.tabledir))

    @app.command(
        option("--limit", type=int, default=24, help="How many rows."),
        option("--region", type=str, default=None, help="Only this region."),
    )
    async def rows(self: AppCommand, limit: int, region: str | None) -> None:
        """Print the latest rows of the output table."""
        exit_on_error(lambda: print_rows(settings, limit, region))


def demo_ports(settings: Settings) -> list[tuple[str, str, int, str]]:
    """What the demo listens on: (service, host, port, the setting that moves it)."""
    return [
        ("broker", "127.0.0.1", _port(settings.kafka_bootstrap_servers, 30092), "KAFKA_BOOTSTRAP_SERVERS"),
        ("database", "127.0.0.1", settings.risingwave_port, "RISINGWAVE_PORT"),
        ("web view", settings.web_host, settings.web_port, "WEB_PORT"),
    ]


def check_demo_ports(settings: Settings) -> None:
    """Refuse to start the demo on a port that is taken, naming it and the setting that moves it."""
    from solar_agents.local import port_taken

    for service, host, port, setting in demo_ports(settings):
        if port_taken(host, port):
            raise CommandError(
                f"port {port} for the demo's {service} is already in use; stop what holds it or set {setting}"
            )


_BIND_FAILED = re.compile(r"bind on address \(?'?([^',)]*)'?, (\d+)\)?.*?address already in use", re.I)


def worker_death(settings: Settings, code: int | None, log_text: str, log_path: Path) -> str:
    """One line on why the demo's worker is gone: the port and setting if it could not bind, else its log."""
    match = _BIND_FAILED.search(log_text)
    if match:
        port = int(match.group(2))
        setting = next((s for _, _, p, s in demo_ports(settings) if p == port), "WEB_PORT")
        return f"the worker exited: port {port} is already in use; stop what holds it or set {setting}"
    return f"the worker exited with code {code}; see its log {log_path}"


async def run_demo(settings: Settings, rate: float, workdir: Path) -> None:
    """The demo; a CommandError when it cannot start or its worker dies (everything it started is stopped)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from solar_agents.local import LocalBroker, LocalPostgres, LocalServiceError

    check_demo_ports(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(port=_port(settings.kafka_bootstrap_servers, 30092), workdir=workdir / "broker")
    database = LocalPostgres(
        port=settings.risingwave_port,
        workdir=workdir / "postgres",
        database=settings.risingwave_database,
        user=settings.risingwave_user,
    )
    try:
        broker.start()
    except LocalServiceError as exc:
        raise CommandError(f"the local broker did not start: {str(exc).splitlines()[0]}") from None
    worker: asyncio.subprocess.Process | None = None
    tasks: list[asyncio.Future[Any]] = []
    try:
        try:
            database.start()
        except LocalServiceError as exc:
            raise CommandError(f"the local database did not start: {str(exc).splitlines()[0]}") from None
        print(f"broker    {broker.bootstrap_servers} (data in memory)", flush=True)
        print(f"database  postgresql://{database.user}@{database.host}:{database.port}/{database.database}")
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(t, settings.topic_partitions, 1)
                    for t in (settings.kafka_topic_solar, settings.kafka_topic_weather)
                ]
            )
        except Exception as exc:  # already there from an earlier run of the same broker
            print(f"topics: {exc}")
        finally:
            await admin.close()
        state = workdir / "state"
        shutil.rmtree(state, ignore_errors=True)  # the in-memory broker starts empty: so must the tables
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "RISINGWAVE_HOST": database.host,
            "DATA_DIR": str(state),
        }
        log_path = workdir / "worker.log"
        with log_path.open("wb") as log:
            worker = await asyncio.create_subprocess_exec(
                faust_executable(),
                "-A",
                "solar_agents",
                "worker",
                "-l",
                "info",
                env=env,
                stdout=log,
                stderr=log,
            )
        print(f"worker    pid {worker.pid}, log {log_path}", flush=True)
        # The worker is watched from here on: if it dies, producing stops and so does everything else.
        exited = asyncio.ensure_future(worker.wait())
        producing = asyncio.ensure_future(_produce_dataset(settings, broker.bootstrap_servers, rate))
        announcing = asyncio.ensure_future(_announce_web(settings))
        tasks += [exited, producing, announcing]
        await asyncio.wait({exited, producing}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            producing.result()  # a failure to produce ends the demo too
            print(f"produced the whole data set; the worker keeps running (pid {worker.pid})", flush=True)
            await exited
        log_text = log_path.read_text(errors="replace")
        raise CommandError(worker_death(settings, worker.returncode, log_text, log_path))
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        if worker is not None and worker.returncode is None:
            worker.terminate()
            await worker.wait()
        database.stop()
        broker.stop()


async def _produce_dataset(settings: Settings, servers: str, rate: float) -> None:
    """Produce the data set at ``rate`` hours a second."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=20)
    await producer.start()
    try:
        topics = {"solar": settings.kafka_topic_solar, "weather": settings.kafka_topic_weather}
        started = time.monotonic()
        for produced, (feed, key, value) in enumerate(dataset_messages(), 1):
            await producer.send(topics[feed], value=value, key=key)
            if produced % 2 == 0:
                hours = produced // 2
                await asyncio.sleep(max(0.0, started + hours / rate - time.monotonic()))
                if hours % 500 == 0:
                    print(f"produced {hours} hours of the data set", flush=True)
        await producer.flush()
    finally:
        await producer.stop()


async def _announce_web(settings: Settings) -> None:
    """Print the web address once the worker's own page answers there, not before."""
    import aiohttp

    url = f"http://127.0.0.1:{settings.web_port}/api/regions"
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            # Whatever else may hold the port (it was free at the check) does not answer as the worker does.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(url) as response:
                    if response.status == 200 and "regions" in await response.json():
                        break
            await asyncio.sleep(0.2)
    print(f"web view  http://localhost:{settings.web_port}/  (metrics at /metrics)")
    print("rows      faust -A solar_agents rows --limit 10   (or psql on the database above)")
    print("Ctrl-C stops everything.", flush=True)


def running_here(tabledir: Path) -> list[Path]:
    """Locks of this DATA_DIR held by a running worker: its own (from its start) and its table stores'
    (RocksDB locks their LOCK files)."""
    held = []
    for lock in sorted([*tabledir.glob(WORKER_LOCK), *tabledir.glob("*.db/LOCK")]):
        with lock.open("rb+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                held.append(lock.parent)
            else:
                fcntl.lockf(handle, fcntl.LOCK_UN)
    return held


def run_rebuild(tabledir: Path) -> int:
    held = running_here(tabledir)
    if held:
        print(f"refused: a worker is running on this state ({held[0]}); stop it first", file=sys.stderr)
        return 2
    entries = sorted(tabledir.glob("*")) if tabledir.exists() else []
    if not entries:
        print(f"nothing to remove: {tabledir} holds no table state")
        return 0
    for entry in entries:
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else 0
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        print(f"removed {entry} ({size / 1e6:.1f} MB)")
    print("The next worker start restores the tables from their changelog topics;")
    print('it logs "tables_recovered" with the seconds the restore took.')
    return 0


async def run_replay(settings: Settings, tabledir: Path, from_: str | None, region: str | None) -> int:
    """See the ``replay`` command. Returns the exit code."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from solar_agents.compat import fetched_end_offsets
    from solar_agents.hours import HOUR_US, InvalidTimestamp, to_micros
    from solar_agents.read_progress import RawPartition, Replay, ReplayMarker
    from solar_agents.records import RegionResolver

    try:
        if region is not None:
            check_region(region, "--region")
        check_broker(settings)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    held = running_here(tabledir)
    if held:
        print(f"refused: a worker of the group is running here ({held[0]}); stop it first", file=sys.stderr)
        return 2
    from_hour: int | None = None
    target: int | None = None
    if from_ is not None:
        try:
            from_hour = -(-to_micros(from_) // HOUR_US)  # rows whose hour starts at or after --from
        except InvalidTimestamp as exc:
            print(f"refused: --from {exc}", file=sys.stderr)
            return 2
        # The rows from --from on need the window and the 24 h lag before them.
        target = settings.retention.history_from(from_hour)
    feeds = {Feed.SOLAR: settings.kafka_topic_solar, Feed.WEATHER: settings.kafka_topic_weather}
    regions = RegionResolver(settings.region_locations, settings.default_region)
    servers = settings.kafka_bootstrap_servers
    scanner = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=None)
    group = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, group_id=settings.kafka_consumer_group
    )
    await scanner.start()
    await group.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in feeds.values()
            for p in sorted(scanner.partitions_for_topic(topic) or ())
        ]
        ends = await fetched_end_offsets(scanner, tps)
        starts: dict[RawPartition, int] = {}
        until: dict[RawPartition, int] = {}
        committed_at = {tp: await group.committed(tp) for tp in tps}
        # The scan reads each partition the group has read from its start, at most to its real end.
        scan = ScanProgress(
            sum(ends[tp] for tp in tps if committed_at[tp] is not None) if target is not None else 0
        )
        for feed, topic in feeds.items():
            for tp in (tp for tp in tps if tp.topic == topic):
                committed = committed_at[tp]
                if committed is None:
                    continue  # never read by the group: the next start reads it from the beginning anyway
                start = (
                    0
                    if target is None
                    else await _first_offset(scanner, tp, ends[tp], feed, target, region, regions, scan)
                )
                if start is not None and start < committed:
                    raw = RawPartition(feed, tp.partition)
                    starts[raw] = start
                    until[raw] = committed
                    again = committed - start
                    scan.printer.close()
                    print(f"{topic}[{tp.partition}]: offset {committed} -> {start} ({again:,} to read again)")
        if target is not None:
            scan.done()
        if not starts:
            print("nothing to replay: the group has not read past that time on any raw partition")
            return 0
        moved = {TopicPartition(feeds[raw.feed], raw.partition): o for raw, o in starts.items()}
        refusal = await commit_offsets(settings, moved, set(tps))
        if refusal:
            print(f"refused: {refusal}", file=sys.stderr)
            return 2
    finally:
        await scanner.stop()
        await group.stop()
    marker = ReplayMarker(Replay(from_hour, region, until), starts).encode()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        partitions = await producer.partitions_for(settings.records_topic)
        for partition in sorted(partitions):
            await producer.send_and_wait(settings.records_topic, marker, key=b"", partition=partition)
    finally:
        await producer.stop()
    when = "the whole history" if from_ is None else f"every row from {from_}"
    print(f"replay set: the next worker start rewrites {when}" + (f" of region {region}" if region else ""))
    return 0


class ScanProgress:
    """Messages the replay has scanned, of the most it may scan; printed as a bar or a line."""

    def __init__(self, total: int) -> None:
        self.read = 0
        self.total = total
        self.printer = ProgressPrinter(sys.stdout, what="messages scanned")

    def advance(self, read: int) -> None:
        self.read += read
        self.printer.update(self.read, self.total)

    def skip(self, left: int) -> None:
        """A partition's scan stopped ``left`` messages before its end: they will not be read."""
        self.total -= left
        self.printer.update(self.read, self.total)

    def done(self) -> None:
        self.printer.update(self.read, self.total, final=True)


async def _first_offset(
    consumer: Any,
    tp: Any,
    end: int,
    feed: Feed,
    target: int,
    region: str | None,
    regions: Any,
    scan: ScanProgress,
) -> int | None:
    """The first offset of ``tp`` holding a valid record (of ``region``) at or after hour ``target``.

    Read from the payloads: offsets by time answer producer or broker time, not event time.
    """
    from solar_agents.hours import Solar, Weather
    from solar_agents.records import InvalidMessage, parse_solar, parse_weather

    consumer.assign([tp])
    consumer.seek(tp, 0)
    position = 0
    try:
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            messages = batch.get(tp, [])
            for n, message in enumerate(messages, 1):
                position = message.offset + 1
                if message.value is None:
                    continue
                try:
                    record: Solar | Weather
                    if feed is Feed.SOLAR:
                        record, name = parse_solar(message.value, message.partition, message.offset)
                    else:
                        record, name = parse_weather(
                            message.value, message.key, message.partition, message.offset, regions
                        )
                except InvalidMessage:
                    continue
                if record.hour >= target and (region is None or name == region):
                    scan.advance(n)
                    return int(message.offset)
            scan.advance(len(messages))
            if not batch:
                break
        return None
    finally:
        scan.skip(max(0, end - position))  # what this scan did not have to read


async def commit_offsets(settings: Settings, offsets: dict[Any, int], raw: set[Any]) -> str | None:
    """Commit ``offsets`` for the group, which must have no live member; returns why not, or None.

    First as a non-member, which a broker accepts only for an empty group. A worker stopped without
    leaving (killed, or the first of a group on some brokers) stays a member until a rebalance: then join
    the group under the workers' protocol name, and commit only if the group hands over every raw partition,
    that is, if no live worker answered the rebalance.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError

    class AsFaust(RoundRobinPartitionAssignor):  # type: ignore[misc]
        name = "faust"  # the protocol the workers announce; a group refuses members of another

    servers = settings.kafka_bootstrap_servers
    group_id = settings.kafka_consumer_group
    outsider = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, group_id=group_id)
    await outsider.start()
    try:
        outsider.assign(list(offsets))
        await outsider.commit(offsets)
        return None
    except KafkaError:
        pass  # the group has members, live or stale
    finally:
        await outsider.stop()
    member = AIOKafkaConsumer(
        *sorted({tp.topic for tp in raw}),
        bootstrap_servers=servers,
        enable_auto_commit=False,
        group_id=group_id,
        session_timeout_ms=int(settings.broker_session_timeout_seconds * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_seconds * 1000),
        partition_assignment_strategy=(AsFaust,),
    )
    try:
        await member.start()
        deadline = time.monotonic() + 3 * settings.broker_session_timeout_seconds + 10
        while not member.assignment() and time.monotonic() < deadline:
            await member.getmany(timeout_ms=200, max_records=1)
        if member.assignment() != raw:
            return "a worker of the group is running (it holds raw partitions); stop every worker first"
        await member.commit(offsets)
        return None
    except KafkaError as exc:
        return f"the group would not take the offsets ({type(exc).__name__}); is a worker running?"
    finally:
        await member.stop()  # leaves the group, so the next worker joins at once
