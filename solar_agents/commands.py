"""CLI commands of the app, listed by ``faust -A solar_agents --help``.

- ``demo``: the embedded default: a local broker and PostgreSQL, the real data set flowing, a worker.
- ``backfill``: process everything in the topics, write it, print a summary and exit once caught up.
- ``rows``: print the latest rows of the output table.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import psycopg2
from faust.cli import AppCommand, option
from psycopg2 import sql

from solar_agents.settings import Settings

if TYPE_CHECKING:
    from solar_agents.agents import Pipeline

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
    conn = psycopg2.connect(
        host=settings.risingwave_host,
        port=settings.risingwave_port,
        dbname=settings.risingwave_database,
        user=settings.risingwave_user,
        password=settings.risingwave_password,
        connect_timeout=settings.db_connect_timeout_seconds,
    )
    conn.autocommit = True
    return conn


def print_rows(settings: Settings, limit: int, region: str | None = None) -> None:
    """The latest rows of the output table, as a plain text table."""
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

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "" if v is None else str(v)

    table = [names, *[[cell(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(names))]
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} of {total} rows in {settings.features_table})")


def register_commands(app: faust.App, pipeline: Pipeline) -> None:
    settings = pipeline.settings

    @app.command(
        option("--rate", type=float, default=100.0, help="Hours of the data set produced per second."),
        option("--workdir", type=str, default="var/demo", help="Where the local services keep their data."),
    )
    async def demo(self: AppCommand, rate: float, workdir: str) -> None:
        """Run it all locally: broker, PostgreSQL, the real data set flowing in, a worker, the web view."""
        await run_demo(settings, rate, Path(workdir))

    @app.command()
    async def backfill(self: AppCommand) -> None:
        """Process everything in the topics, write it, and exit 0 with a summary once caught up."""
        env = {**os.environ, "EXIT_WHEN_CAUGHT_UP": "true"}
        level = os.environ.get("LOG_LEVEL", settings.log_level)
        argv = [faust_executable(), "-A", "solar_agents", "worker", "-l", level]
        # A worker of its own, in this process: the same code path as the long-running one.
        os.execve(argv[0], argv, env)

    @app.command(
        option("--limit", type=int, default=24, help="How many rows."),
        option("--region", type=str, default=None, help="Only this region."),
    )
    async def rows(self: AppCommand, limit: int, region: str | None) -> None:
        """Print the latest rows of the output table."""
        print_rows(settings, limit, region)


async def run_demo(settings: Settings, rate: float, workdir: Path) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from solar_agents.local import LocalBroker, LocalPostgres

    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(port=_port(settings.kafka_bootstrap_servers, 30092), workdir=workdir / "broker")
    database = LocalPostgres(
        port=settings.risingwave_port,
        workdir=workdir / "postgres",
        database=settings.risingwave_database,
        user=settings.risingwave_user,
    )
    worker: asyncio.subprocess.Process | None = None
    with broker, database:
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
        print(f"worker    pid {worker.pid}, log {log_path}")
        print(f"web view  http://localhost:{settings.web_port}/  (metrics at /metrics)")
        print("rows      faust -A solar_agents rows --limit 10   (or psql on the database above)")
        print("Ctrl-C stops everything.", flush=True)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=20)
        await producer.start()
        try:
            topics = {"solar": settings.kafka_topic_solar, "weather": settings.kafka_topic_weather}
            started = time.monotonic()
            produced = 0
            for feed, key, value in dataset_messages():
                await producer.send(topics[feed], value=value, key=key)
                produced += 1
                if produced % 2 == 0:
                    hours = produced // 2
                    await asyncio.sleep(max(0.0, started + hours / rate - time.monotonic()))
                    if hours % 500 == 0:
                        print(f"produced {hours} hours of the data set", flush=True)
            await producer.flush()
            print(f"produced all {produced // 2} hours; the worker keeps running", flush=True)
            await worker.wait()
        finally:
            await producer.stop()
            if worker.returncode is None:
                worker.terminate()
                await worker.wait()
