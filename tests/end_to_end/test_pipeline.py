"""End to end on real services: the real data set, messy, through a real worker, equals the reference."""

from __future__ import annotations

import pytest
from conftest import WorkerFactory
from faults_util import counter, log_events
from kafka_util import Kafka
from pipeline_util import (
    assert_dead_letters,
    messy_feed,
    produce_in_order,
    produce_in_transactions,
    reference_for,
    wait_until_equal,
)
from scenario import interleave
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres


@pytest.mark.parametrize("step_processes", ["true", "false"])
def test_real_data_set_end_to_end(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory, step_processes: str
) -> None:
    # The parse and the writer in helper processes (the default), and in the worker's own process.
    # Raw topics with partition counts unlike the worker's (4): the repartition by region must handle it.
    kafka.create_topics({names.solar: 3, names.weather: 2})
    feed = messy_feed(names, ("DE_50hertz", "DE_north"))
    order = interleave(feed)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = workers(STEP_PROCESSES=step_processes)
    produce_in_order(kafka, order[half:])

    reference = reference_for(kafka, names, len(order))
    assert len(reference.rows) == 2 * 5088
    assert len(reference.rejected) == len(feed.malformed) >= 12

    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    assert_dead_letters(kafka, names, reference)
    assert worker.alive
    started = [e["pid"] for e in log_events(worker.log_text(), "helper_started")]
    assert len(started) == (3 if step_processes == "true" else 0)  # parse, align, writer


def test_raw_topics_written_in_transactions(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    """Transaction markers take offsets that no consumer is handed: each is a jump in what the worker reads,
    which it checks (``offsets``) and lets pass, every record processed once and nothing lost."""
    kafka.create_topics({names.solar: 2, names.weather: 1})
    feed = messy_feed(names, ("DE_50hertz",), hours=24 * 10)
    order = interleave(feed)
    produce_in_transactions(kafka, order[: len(order) // 2])
    worker = workers()
    produce_in_transactions(kafka, order[len(order) // 2 :])

    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    assert_dead_letters(kafka, names, reference)
    # One marker per transaction of 7, in each raw partition it wrote to.
    assert counter(worker, "offsets_absent") >= len(order) // 7 - 2
    assert log_events(worker.log_text(), "records_read_again") == []  # markers hold no records


def test_a_backlog_is_read_in_event_time_order_and_stays_exact(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    # The whole history waits before the worker starts; every partition with a backlog may run at most 0
    # hours ahead of the slowest, so reads are held all the time, and no record may be lost for it.
    kafka.create_topics({names.solar: 4, names.weather: 4})
    feed = messy_feed(names, ("DE_50hertz", "DE_north", "DE_south", "DE_east"), hours=2000)
    order = interleave(feed)
    produce_in_order(kafka, order)
    worker = workers(MAX_READ_SKEW_HOURS="0", CONSUMER_MAX_FETCH_BYTES="65536", INGEST_BATCH_SIZE="200")

    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    assert_dead_letters(kafka, names, reference)
    assert counter(worker, "reads_held") > 0
    assert worker.alive
