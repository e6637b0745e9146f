"""The history commands end to end: replay and rebuild, against a real worker, broker and database."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import WorkerFactory
from kafka_util import Kafka
from pipeline_util import produce_in_order, reference_for, sink_rows, wait_until_equal
from scenario import build_feed, interleave
from worker import FAUST, Names, Worker, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.cli.demo.services import free_port


def run_command(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAUST, "-A", "solar_agents", *args], env=worker.env, capture_output=True, text=True, timeout=120
    )


def test_help_lists_the_history_commands() -> None:
    result = subprocess.run(
        [FAUST, "-A", "solar_agents", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"worker", "backfill", "replay", "rebuild", "demo", "rows"} <= listed, result.stdout


def test_replay_rewrites_every_row_from_a_time_on_and_nothing_before(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 2})
    feed = build_feed(hours=24 * 30, solar_topic=names.solar, weather_topic=names.weather)
    order = interleave(feed)
    produce_in_order(kafka, order)
    worker = workers()
    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )

    refused = run_command(worker, "replay", "--from", "2019-01-20T00:00:00Z")
    assert refused.returncode == 2 and "refused" in refused.stderr, refused
    assert worker.terminate() == 0

    start = datetime(2019, 1, 20, tzinfo=UTC)
    before = start - timedelta(hours=5)  # inside the history the replay reads again
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(f'UPDATE "{names.table}" SET production_mw = -1 WHERE "timestamp" = %s', (before,))
        cur.execute(f'DELETE FROM "{names.table}" WHERE "timestamp" >= %s', (start,))
        deleted = cur.rowcount
    conn.close()
    assert deleted > 200

    done = run_command(worker, "replay", "--from", "2019-01-20T00:00:00+00:00")
    assert done.returncode == 0, done.stderr
    assert "replay set" in done.stdout and "to read again" in done.stdout, done.stdout

    again = workers()
    expected = dict(reference.rows)
    for key, row in expected.items():
        if key[1] == before:
            expected[key] = {**row, "production_mw": -1.0}
    wait_until_equal(postgres, names.table, expected, alive=lambda: again.alive, on_timeout=again.tail)
    deadline = time.monotonic() + 15
    while "replay_finished" not in again.log_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "replay_finished" in again.log_text()


def test_rebuild_removes_state_and_the_restore_brings_it_back(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 1})
    feed = build_feed(hours=24 * 20, solar_topic=names.solar, weather_topic=names.weather)
    order = interleave(feed)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = workers()
    wait_until_equal(
        postgres, names.table, reference_for(kafka, names, half).rows, alive=lambda: worker.alive
    )
    refused = run_command(worker, "rebuild")
    assert refused.returncode == 2 and "refused" in refused.stderr
    assert worker.terminate() == 0

    rebuilt = run_command(worker, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "removed" in rebuilt.stdout and "hours-0.db" in rebuilt.stdout
    assert not list((tmp_path / "state").rglob("*.db"))

    # The second half depends on the first through windows and lags: only a complete restore gets it right.
    again = workers()
    produce_in_order(kafka, order[half:])
    reference = reference_for(kafka, names, len(order))
    wait_until_equal(postgres, names.table, reference.rows, alive=lambda: again.alive, on_timeout=again.tail)
    assert "tables_recovered" in again.log_text()
    assert len(sink_rows(postgres, names.table)) == len(reference.rows)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAUST, "-A", "solar_agents", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _one_line(result: subprocess.CompletedProcess[str], *parts: str) -> None:
    """Exit code 2 and one line on stderr holding every part: no traceback."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    for part in parts:
        assert part in lines[0], lines[0]


def test_command_errors_are_one_line_naming_what_to_change(
    broker: LocalBroker, postgres: LocalPostgres, names: Names, tmp_path: Path
) -> None:
    env = worker_env(broker, postgres, names, tmp_path / "state")
    _one_line(_cli(env, "rows", "--limit", "-1"), "--limit", "between 1 and")
    _one_line(_cli(env, "rows", "--limit", str(2**70)), "--limit", "between 1 and")
    _one_line(_cli(env, "rows"), f"no table {names.table!r}", "FEATURES_TABLE")
    _one_line(_cli(env, "rows", "--region", ""), "--region", "not a region name")
    nobody = {**env, "RISINGWAVE_PORT": str(free_port())}
    _one_line(_cli(nobody, "rows"), "cannot reach the database", "RISINGWAVE_PORT")
    no_broker = {**env, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    _one_line(_cli(no_broker, "backfill"), "no broker answers", "KAFKA_BOOTSTRAP_SERVERS")
    _one_line(_cli(no_broker, "replay"), "no broker answers", "KAFKA_BOOTSTRAP_SERVERS")


def test_replay_refuses_a_region_name_that_ingest_refuses(
    broker: LocalBroker, postgres: LocalPostgres, names: Names, tmp_path: Path
) -> None:
    env = worker_env(broker, postgres, names, tmp_path / "state")
    _one_line(_cli(env, "replay", "--region", ""), "--region ''", "not a region name")
    _one_line(_cli(env, "replay", "--region", "x" * 65), "--region", "not a region name")
    _one_line(_cli(env, "replay", "--region", "a\x01b\udcff"), "--region", "not a region name")


def test_backfill_refuses_beside_a_running_worker(kafka: Kafka, names: Names, workers: WorkerFactory) -> None:
    kafka.create_topics({names.solar: 1, names.weather: 1})
    worker = workers()
    started = time.monotonic()
    refused = run_command(worker, "backfill")
    assert refused.returncode == 2, refused
    assert "refused" in refused.stderr and "stop it first" in refused.stderr, refused.stderr
    assert time.monotonic() - started < 30, "refused only after the worker's start-up"
    assert worker.alive
