"""Alive means working: a worker that cannot work says so and ends, and a stop is prompt whatever is down.

On real services and real worker processes. Each case ends with the sink equal to the reference row for
row after a restart: nothing the stopped or failed worker had not written was committed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from conftest import WorkerFactory
from faults_util import Feeder, log_events, sink_count, sink_mismatch, wait_for
from kafka_util import Kafka
from liveness_util import (
    Answer,
    fault_in,
    fill,
    free,
    frozen,
    probe,
    small_filesystem,
    stop_timed,
    watch_until_exit,
)
from pipeline_util import Produced, assert_dead_letters, messy_feed, produce_in_order, reference_for
from scenario import build_feed, interleave
from worker import Names, Worker

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres

REGIONS = ("DE_50hertz", "DE_north")
STOP_SECONDS = 10.0  # what a stop may take, whatever is down (SHUTDOWN_TIMEOUT_SECONDS is below it)


def feed_order(names: Names, hours: int = 24 * 12) -> list[Produced]:
    return interleave(messy_feed(names, REGIONS, hours))


def last_line(worker: Worker) -> str:
    lines = worker.log_text().strip().splitlines()
    return lines[-1] if lines else ""


def check_after_restart(
    kafka: Kafka, postgres: LocalPostgres, names: Names, produced: int, worker: Worker
) -> None:
    """The sink equals the reference over everything produced, and the dead letters are exact."""
    reference = reference_for(kafka, names, produced)
    mismatch = sink_mismatch(postgres, names.table, reference.rows, alive=lambda: worker.alive)
    assert mismatch is None, f"{mismatch[:3000]}\n{worker.tail(40)}"
    assert_dead_letters(kafka, names, reference)


# --- a stop under faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("down", ["database", "broker", "disk"])
def test_sigterm_is_prompt_whatever_is_down(
    kafka: Kafka,
    broker: LocalBroker,
    postgres: LocalPostgres,
    names: Names,
    workers: WorkerFactory,
    tmp_path: Path,
    down: str,
) -> None:
    """SIGTERM while the database is stopped, while the broker hangs (SIGSTOP), or right after DATA_DIR (a
    3 MB tmpfs) filled up: the worker exits within 10 s. With the fault gone, a new worker writes every row
    the stopped one had not, exactly: nothing unwritten was committed."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    order = feed_order(names)
    half = len(order) // 2
    with contextlib.ExitStack() as stack:
        data_dir = stack.enter_context(small_filesystem(tmp_path / "small")) if down == "disk" else None
        produce_in_order(kafka, order[:half])
        worker = workers(data_dir=data_dir)
        wait_for(lambda: sink_count(postgres, names.table) > 0, 60, "first rows", worker.tail)
        if down == "database":
            postgres.stop()
            try:
                produce_in_order(kafka, order[half:])
                wait_for(
                    lambda: bool(log_events(worker.log_text(), "sink_write_failed")),
                    60,
                    "a failed write",
                    worker.tail,
                )
                code, seconds = stop_timed(worker)
            finally:
                postgres.start()
        elif down == "broker":
            produce_in_order(kafka, order[half:])
            time.sleep(0.5)  # the worker is busy with the second half
            assert broker.pid is not None
            with frozen(broker.pid):
                time.sleep(2.0)
                code, seconds = stop_timed(worker)
        else:
            assert data_dir is not None
            fill(data_dir)
            produce_in_order(kafka, order[half:])
            time.sleep(0.5)
            code, seconds = stop_timed(worker)
            free(data_dir)
        print(f"\nSIGTERM with the {down} down: exit {code} after {seconds:.1f} s")
        print(f"  last line: {last_line(worker)}")
        assert code is not None, f"still running {seconds:.0f} s after SIGTERM:\n{worker.tail(40)}"
        assert seconds < STOP_SECONDS, worker.tail(40)
        again = workers(data_dir=data_dir)
        check_after_restart(kafka, postgres, names, len(order), again)


# --- a full disk --------------------------------------------------------------------------------------------


def test_full_data_dir_ends_the_worker_with_one_line(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """DATA_DIR on a 3 MB tmpfs, filled up while data flows: the align agent cannot write its tables. The
    worker must not stay up half-alive: /healthz says it is not live, and it exits non-zero with one line
    naming DATA_DIR. Space freed, a new worker writes every row exactly."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    order = feed_order(names)
    half = len(order) // 2
    with small_filesystem(tmp_path / "small") as data_dir:
        produce_in_order(kafka, order[:half])
        worker = workers(data_dir=data_dir)
        wait_for(lambda: sink_count(postgres, names.table) > 0, 60, "first rows", worker.tail)
        filled = fill(data_dir)
        rows_then = sink_count(postgres, names.table)
        produce_in_order(kafka, order[half:])
        started = time.monotonic()
        code, unhealthy = watch_until_exit(worker, 60)
        took = time.monotonic() - started
        line = last_line(worker)
        print(
            f"\nfilled {filled:,} bytes with {rows_then} rows written; exit {code} after {took:.1f} s, "
            f"{sink_count(postgres, names.table)} rows; /healthz meanwhile: {unhealthy}\nlast line: {line}"
        )
        assert code is not None and code != 0, f"the worker is still up, half-alive:\n{worker.tail(30)}"
        assert unhealthy is not None and unhealthy.status == 503, unhealthy
        assert "DATA_DIR" in line and str(data_dir) in line and "full" in line, worker.tail(20)
        assert "DATA_DIR" in str(unhealthy.body), unhealthy.body
        free(data_dir)
        again = workers(data_dir=data_dir)
        check_after_restart(kafka, postgres, names, len(order), again)


# --- an agent that fails every batch ------------------------------------------------------------------------


@pytest.mark.parametrize("agent", ["ingest_solar", "ingest_weather", "align", "write"])
def test_an_agent_failing_ends_the_worker_with_one_line(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, agent: str
) -> None:
    """A fault injected into one agent (its every batch raises once its work is done). Faust would restart
    the agent in the same process, on the same stream; the worker must not stay up half-alive: /healthz says
    it is not live, and it exits non-zero with one line naming the agent and the error. A new worker without
    the fault writes every row exactly."""
    topic = {
        "ingest_solar": names.solar,
        "ingest_weather": names.weather,
        "align": f"{names.group}-records",
        "write": f"{names.group}-rows",
    }[agent]
    kafka.create_topics({names.solar: 2, names.weather: 2})
    order = feed_order(names, hours=24 * 6)
    worker = workers(**fault_in(topic))
    started = time.monotonic()
    feeder = Feeder(kafka, order, chunk=40, interval=0.5)  # data keeps coming, as it would
    feeder.start()
    code, unhealthy = watch_until_exit(worker, 90)
    took = time.monotonic() - started
    feeder.finish()
    line = last_line(worker)
    crashes = log_events(worker.log_text(), "agent_crashed")
    print(f"\n{agent} failing: exit {code} after {took:.1f} s; /healthz meanwhile: {unhealthy}")
    print(f"  last line: {line}")
    assert code is not None and code != 0, f"the worker is still up:\n{worker.tail(30)}"
    assert line.startswith(f"stopped: agent {agent} failed with RuntimeError: injected fault"), worker.tail(
        20
    )
    assert crashes and {e["agent"] for e in crashes} == {agent}, crashes
    assert unhealthy is not None and unhealthy.status == 503, unhealthy
    assert f"agent {agent} failed" in str(unhealthy.body["reason"]), unhealthy.body
    again = workers()
    check_after_restart(kafka, postgres, names, len(order), again)


# --- the health endpoints -----------------------------------------------------------------------------------


def test_health_endpoints_answer_quickly_under_full_load(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    """While the worker works through a backlog (its event loop as busy as it gets), /healthz and /readyz
    answer within 100 ms; /healthz says live throughout, /readyz ready once the tables are recovered."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    regions = ("DE_50hertz", "DE_north", "DE_south", "CH")
    feed = build_feed(
        hours=24 * 60,
        regions=regions,
        solar_topic=names.solar,
        weather_topic=names.weather,
        weather_lag_hours=3,
    )
    order = interleave(feed)
    produce_in_order(kafka, order, chunk=5000)
    worker = workers()
    wait_for(lambda: sink_count(postgres, names.table) > 0, 60, "first rows", worker.tail)
    rows_before = sink_count(postgres, names.table)
    answers: dict[str, list[Answer]] = {"/healthz": [], "/readyz": []}
    started = time.monotonic()
    while time.monotonic() - started < 15:
        for path, got in answers.items():
            answer = probe(worker, path, timeout=5.0)
            assert answer is not None, worker.tail()
            got.append(answer)
        time.sleep(0.05)
    rows_after = sink_count(postgres, names.table)
    for path, got in answers.items():
        seconds = sorted(a.seconds for a in got)
        p95 = seconds[int(0.95 * (len(seconds) - 1))]
        print(
            f"\n{path}: {len(got)} answers under load, median {1000 * seconds[len(seconds) // 2]:.1f} ms, "
            f"95th percentile {1000 * p95:.1f} ms, max {1000 * seconds[-1]:.1f} ms"
        )
        assert p95 <= 0.1, f"{path}: 95th percentile {p95 * 1000:.0f} ms"
    print(f"  rows in the sink during the probes: {rows_before} -> {rows_after} of {len(feed.solar)}")
    assert rows_after > rows_before, "the worker was not under load during the probes"
    assert all(a.status == 200 and a.body["live"] for a in answers["/healthz"]), answers["/healthz"][:3]
    assert answers["/healthz"][0].body["agents"] == dict.fromkeys(
        ("ingest_solar", "ingest_weather", "align", "write"), "running"
    )
    ready = answers["/readyz"][-1]
    assert ready.status == 200 and ready.body["ready"] and ready.body["recovered"], ready
    assert ready.body["partitions"] > 0
