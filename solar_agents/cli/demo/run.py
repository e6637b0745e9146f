"""The ``demo`` command: a local broker and PostgreSQL, the real data set flowing in, a worker with its web
view; everything it started is stopped when it ends, whatever ends it."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solar_agents.cli.demo.leftovers import (
    WORKER_PID_FILE,
    WORKER_STOP_SECONDS,
    lock_demo_dir,
    stop_leftovers,
)
from solar_agents.cli.demo.services import LocalServiceError, port_taken, record_pid
from solar_agents.cli.errors import CommandError
from solar_agents.cli.worker_process import worker_argv
from solar_agents.connect.kafka import KafkaConnection
from solar_agents.settings import Settings
from solar_agents.web.auth import AccessPolicy

if TYPE_CHECKING:
    from solar_agents.cli.demo.broker import LocalBroker
    from solar_agents.cli.demo.postgres import LocalPostgres

DATASET = (
    Path(__file__).resolve().parents[3]
    / "datasets"
    / "50hertz_hamburg_2019"
    / "50hertz_hamburg_2019_hourly.csv"
)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def demo_ports(settings: Settings) -> list[tuple[str, str, int, str]]:
    """What the demo listens on: (service, host, port, the setting that moves it)."""
    return [
        ("broker", "127.0.0.1", _port(settings.kafka_bootstrap_servers, 30092), "KAFKA_BOOTSTRAP_SERVERS"),
        ("database", "127.0.0.1", settings.risingwave_port, "RISINGWAVE_PORT"),
        ("web view", settings.web_host, settings.web_port, "WEB_PORT"),
    ]


def check_demo_ports(settings: Settings) -> None:
    """Refuse to start the demo on a port that is taken, naming it and the setting that moves it; and with
    broker security settings, which its local broker does not speak."""
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise CommandError(
            "the demo's local broker speaks PLAINTEXT only; unset KAFKA_SECURITY_PROTOCOL for the demo"
        )
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


async def demo_until_stopped(settings: Settings, rate: float, workdir: Path) -> None:
    """The ``demo`` command: the demo until SIGINT or SIGTERM stops it, or its worker dies (exit code 2)."""
    task = asyncio.ensure_future(run_demo(settings, rate, workdir))
    loop = asyncio.get_running_loop()
    stopping = False

    def stop() -> None:
        # Once: a second Ctrl-C (^C^C, a habit) while it stops would cancel the stop itself, and leave the
        # broker and the database running.
        nonlocal stopping
        if not stopping:
            stopping = True
            task.cancel()

    for signum in STOP_SIGNALS:  # stop everything it started, whatever stops it
        loop.add_signal_handler(signum, stop)
    try:
        await task
    except asyncio.CancelledError:
        print("stopped: worker, broker and database")
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


async def run_demo(settings: Settings, rate: float, workdir: Path) -> None:
    """The demo; a CommandError when it cannot start or its worker dies (everything it started is stopped)."""
    from solar_agents.cli.demo.broker import LocalBroker
    from solar_agents.cli.demo.postgres import LocalPostgres

    broker = LocalBroker(port=_port(settings.kafka_bootstrap_servers, 30092), workdir=workdir / "broker")
    database = LocalPostgres(
        port=settings.risingwave_port,
        workdir=workdir / "postgres",
        database=settings.risingwave_database,
        user=settings.risingwave_user,
    )
    # Before the ports are checked where the directory exists (what an earlier demo left running there may
    # hold them); after, where it does not: a refused demo creates nothing.
    lock = lock_demo_dir(workdir) if workdir.exists() else None
    try:
        if lock is not None:
            stop_leftovers(workdir, broker, database)
        check_demo_ports(settings)
        lock = lock or lock_demo_dir(workdir)
        await _run_services(settings, rate, workdir, broker, database)
    finally:
        if lock is not None:
            lock.close()


async def _run_services(
    settings: Settings, rate: float, workdir: Path, broker: LocalBroker, database: LocalPostgres
) -> None:
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
        local = replace(settings.kafka, servers=(broker.bootstrap_servers,))
        await _create_topics(settings, local)
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
                *worker_argv("info"), env=env, stdout=log, stderr=log
            )
        record_pid(workdir / WORKER_PID_FILE, worker.pid)
        print(f"worker    pid {worker.pid}, log {log_path}", flush=True)
        # The worker is watched from here on: if it dies, producing stops and so does everything else.
        exited = asyncio.ensure_future(worker.wait())
        producing = asyncio.ensure_future(_produce_dataset(settings, local, rate))
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
        # Each stop runs even when the one before it fails or is cut short.
        try:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            if worker is not None:
                await _stop_worker(worker)
                (workdir / WORKER_PID_FILE).unlink(missing_ok=True)
        finally:
            try:
                if worker is not None and worker.returncode is None:
                    worker.kill()
                database.stop()
            finally:
                broker.stop()


async def _stop_worker(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is not None:
        return
    worker.terminate()
    try:
        await asyncio.wait_for(worker.wait(), WORKER_STOP_SECONDS)
    except TimeoutError:
        worker.kill()
        await worker.wait()


async def _create_topics(settings: Settings, broker: KafkaConnection) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**broker.aiokafka())
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


async def _produce_dataset(settings: Settings, broker: KafkaConnection, rate: float) -> None:
    """Produce the data set at ``rate`` hours a second."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**broker.aiokafka(), linger_ms=20)
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
    async with aiohttp.ClientSession(timeout=timeout, headers=AccessPolicy.of(settings).bearer()) as session:
        while True:
            # Whatever else may hold the port (it was free at the check) does not answer as the worker does.
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(url) as response:
                    if response.status == 200 and "regions" in await response.json():
                        break
            await asyncio.sleep(0.2)
    login = "?token=<WEB_AUTH_TOKEN>" if settings.web_auth_token else ""
    print(f"web view  http://localhost:{settings.web_port}/{login}  (metrics at /metrics)")
    print("rows      faust -A solar_agents rows --limit 10   (or psql on the database above)")
    print("Ctrl-C stops everything.", flush=True)
