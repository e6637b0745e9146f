"""The declared feature set on real services: added features exact against the reference through a kill -9
with the state deleted, a feature added to a running deployment, a changed definition refused until a
replay accepts it, a bad file and a user without ALTER each one line and exit code 2."""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import WorkerFactory
from faults_util import log_events, wait_for
from kafka_util import Kafka
from pipeline_util import (
    assert_dead_letters,
    produce_in_order,
    reference_for,
    sink_rows,
    wait_until_equal,
)
from reference import assert_rows_equal, declared_features
from scenario import build_feed, interleave
from test_sink import writer_role
from worker import FAUST, Names, Worker, remove_state, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.schema import definitions_table

# The four features of the issue that asked for a declared set.
ISSUE_FEATURES = """
[[features]]
name = "production_ma_168h"   # a week: longer than the 72 hours kept by default
kind = "mean"
field = "production_mw"
hours = 168

[[features]]
name = "cloud_cover_max_6h"
kind = "max"
field = "cloud_cover_pct"
hours = 6

[[features]]
name = "temperature_lag_24h"
kind = "lag"
field = "temperature_c"
hours = 24

[[features]]
name = "production_sum_3h"
kind = "sum"
field = "production_mw"
hours = 3
"""


SUM_3H = '[[features]]\nname = "production_sum_3h"\nkind = "sum"\nfield = "production_mw"\nhours = 3\n'


def features_file(tmp_path: Path, text: str = ISSUE_FEATURES) -> Path:
    path = tmp_path / "features.toml"
    path.write_text(text)
    return path


def refusal(worker: Worker, timeout: float = 60.0) -> str:
    """The one line a refusing worker ends with, once it has exited with code 2."""
    assert worker.proc is not None
    code = worker.proc.wait(timeout)
    assert code == 2, worker.tail()
    lines = [line for line in worker.log_text().splitlines() if line.startswith("refused: ")]
    assert len(lines) == 1, worker.tail()
    return lines[0]


def command(worker: Worker, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAUST, "-A", "solar_agents", *args],
        env={**worker.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_declared_features_are_exact_through_a_kill_9_with_the_state_deleted(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """The real data set, messy (weather 9 h behind, 6-hour shuffles, 2 % twice), with the issue's four
    features. Once the first half is written the worker is killed and its local state deleted: the rows of
    the second half read a week back, so the 168-hour window must come back from the changelogs."""
    path = features_file(tmp_path)
    declared = declared_features(path)
    kafka.create_topics({names.solar: 3, names.weather: 2})
    feed = build_feed(
        hours=24 * 45,
        regions=("DE_50hertz", "DE_north"),
        solar_topic=names.solar,
        weather_topic=names.weather,
        weather_lag_hours=9,
        shuffle_block_hours=6,
        duplicate_rate=0.02,
    )
    order = interleave(feed)
    half = len(order) // 2
    state = tmp_path / "state"
    produce_in_order(kafka, order[:half])
    worker = workers(data_dir=state, FEATURES_FILE=str(path))
    first = reference_for(kafka, names, half, features=declared)
    wait_until_equal(postgres, names.table, first.rows, alive=lambda: worker.alive, on_timeout=worker.tail)

    worker.kill()
    remove_state(state)
    worker = workers(data_dir=state, FEATURES_FILE=str(path))
    produce_in_order(kafka, order[half:])
    reference = reference_for(kafka, names, len(order), features=declared)
    assert {"production_ma_168h", "temperature_lag_24h"} <= set(next(iter(reference.rows.values())))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    assert_dead_letters(kafka, names, reference)
    restored = log_events(worker.log_text(), "state_loaded")
    assert restored and restored[0]["hours"] > 168, "the restart began from the changelogs' state"


def test_a_feature_added_to_a_running_deployment_gets_its_column_and_replay_fills_the_old_rows(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 2})
    order = interleave(build_feed(hours=24 * 16, solar_topic=names.solar, weather_topic=names.weather))
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = workers()
    before = reference_for(kafka, names, half)
    wait_until_equal(postgres, names.table, before.rows, alive=lambda: worker.alive, on_timeout=worker.tail)
    assert worker.terminate() == 0

    text = ISSUE_FEATURES.split('[[features]]\nname = "cloud_cover_max_6h"')[0]  # the 168 h mean alone
    text += "\n" + SUM_3H
    path = features_file(tmp_path, text)
    declared = declared_features(path)
    assert [d[0] for d in declared] == ["production_ma_168h", "production_sum_3h"]
    worker = workers(FEATURES_FILE=str(path))
    wait_for(
        lambda: len(log_events(worker.log_text(), "column_added")) == 2, 30, "columns added", worker.tail
    )
    added = log_events(worker.log_text(), "column_added")
    assert {e["column"] for e in added} == {"production_ma_168h", "production_sum_3h"}
    assert all("replay" in e["note"] for e in added)

    produce_in_order(kafka, order[half:])
    reference = reference_for(kafka, names, len(order), features=declared)
    last_before = max(stamp for _, stamp in before.rows)

    def new_rows_have_the_columns() -> bool:
        actual = sink_rows(postgres, names.table)
        later = {k: v for k, v in reference.rows.items() if k[1] > last_before + timedelta(hours=168)}
        try:
            assert_rows_equal(later, {k: actual[k] for k in later if k in actual})
        except AssertionError:
            return False
        return len(actual) == len(reference.rows)

    wait_for(new_rows_have_the_columns, 120, "the rows after the restart, with the new columns", worker.tail)
    old = sink_rows(postgres, names.table)[next(iter(before.rows))]
    assert old["production_sum_3h"] is None  # written before the feature: NULL until a replay

    assert worker.terminate() == 0
    replayed = command(worker, "replay")
    assert replayed.returncode == 0, replayed.stderr
    worker = workers(FEATURES_FILE=str(path))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )


def test_a_changed_definition_is_refused_until_a_replay_accepts_it(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 2})
    order = interleave(build_feed(hours=24 * 12, solar_topic=names.solar, weather_topic=names.weather))
    produce_in_order(kafka, order)
    worker = workers()
    old = reference_for(kafka, names, len(order))
    wait_until_equal(postgres, names.table, old.rows, alive=lambda: worker.alive, on_timeout=worker.tail)
    assert worker.terminate() == 0

    started = time.monotonic()
    refused = workers(wait=False, FEATURE_WINDOW_HOURS="48")
    line = refusal(refused)
    assert time.monotonic() - started < 60
    table = definitions_table(names.table)
    for column in ("production_ma_24h", "temperature_ma_24h", "cloud_cover_ma_24h"):
        field = {"production": "production_mw", "temperature": "temperature_c", "cloud": "cloud_cover_pct"}
        name = field[column.split("_")[0]]
        assert (
            f"column {column} is defined as mean({name}, 24 h) in {table} but as mean({name}, 48 h)" in line
        )
    assert "faust -A solar_agents replay --from TIME --accept-definitions" in line
    assert_rows_equal(old.rows, sink_rows(postgres, names.table))  # nothing written under the new one

    since = datetime(2019, 1, 7, tzinfo=UTC)
    unaccepted = command(refused, "replay", "--from", since.isoformat(), FEATURE_WINDOW_HOURS="48")
    assert unaccepted.returncode == 2 and "--accept-definitions" in unaccepted.stderr, unaccepted
    accepted = command(
        refused, "replay", "--from", since.isoformat(), "--accept-definitions", FEATURE_WINDOW_HOURS="48"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert (
        "definition accepted: production_ma_24h: mean(production_mw, 24 h) -> mean(production_mw, 48 h),"
        " holding from 2019-01-07T00:00Z" in accepted.stdout
    ), accepted.stdout
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(
            f'SELECT hours, defined_since FROM "{table}" WHERE column_name = %s', ("production_ma_24h",)
        )
        assert cur.fetchone() == (48, since)
    conn.close()

    worker = workers(FEATURE_WINDOW_HOURS="48")
    new = reference_for(kafka, names, len(order), window_hours=48)
    expected = {k: (new.rows[k] if k[1] >= since else row) for k, row in old.rows.items()}
    wait_until_equal(postgres, names.table, expected, alive=lambda: worker.alive, on_timeout=worker.tail)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('name = "x"\nkind = "median"\nfield = "production_mw"\nhours = 3', "unknown kind 'median'"),
        ('name = "x"\nkind = "mean"\nfield = "wind"\nhours = 3', "unknown field 'wind'"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = 9000', "from 1 to 8784"),
        ('name = "production_sum_3h"\nkind = "sum"\nfield = "production_mw"\nhours = 2', "duplicate name"),
        ('name = "3h"\nkind = "sum"\nfield = "production_mw"\nhours = 2', "must be a column name"),
        ('name = "region"\nkind = "sum"\nfield = "production_mw"\nhours = 2', "is a base column"),
    ],
    ids=["kind", "field", "hours", "duplicate", "name", "base-column"],
)
def test_a_bad_features_file_stops_every_command_with_one_line(
    broker: LocalBroker, postgres: LocalPostgres, names: Names, tmp_path: Path, entry: str, problem: str
) -> None:
    path = features_file(tmp_path, ISSUE_FEATURES + "\n[[features]]\n" + entry + "\n")
    env = worker_env(broker, postgres, names, tmp_path / "state", FEATURES_FILE=str(path))
    for args in (("worker",), ("backfill",), ("replay",), ("rows",), ("rebuild",)):
        result = subprocess.run(
            [FAUST, "-A", "solar_agents", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (args, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stdout, (args, result)
        assert lines[0].startswith(f"error: FEATURES_FILE {path}: [[features]] entry 5"), lines[0]
        assert problem in lines[0], lines[0]


def test_a_user_without_alter_gets_one_line_and_exit_2(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 1, names.weather: 1})
    produce_in_order(
        kafka, interleave(build_feed(hours=48, solar_topic=names.solar, weather_topic=names.weather))
    )
    owner = workers()  # the owner's deployment: table and definitions
    wait_for(lambda: len(sink_rows(postgres, names.table)) > 0, 60, "first rows", owner.tail)
    assert owner.terminate() == 0
    user = writer_role(postgres, names.table)
    path = features_file(tmp_path, SUM_3H)
    refused = workers(wait=False, RISINGWAVE_USER=user, FEATURES_FILE=str(path))
    line = refusal(refused)
    assert f"table {names.table} lacks the columns production_sum_3h of the feature set" in line
    assert f'ALTER TABLE "{names.table}" ADD COLUMN "production_sum_3h" DOUBLE PRECISION' in line
    assert log_events(refused.log_text(), "sink_write_failed") == []  # refused, never retried
