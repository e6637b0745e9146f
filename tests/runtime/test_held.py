"""The align agent's held batches on real services: a caught-up worker flushes them at once."""

from __future__ import annotations

import urllib.request

from conftest import WorkerFactory
from faults_util import wait_for
from kafka_util import Kafka
from pipeline_util import produce_in_order, reference_for, wait_until_equal
from scenario import build_feed, interleave
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres

REGION = "DE_50hertz"
IDLE_FLUSH = 'solar_agents_table_flushes_total{reason="idle"}'


def test_a_caught_up_worker_flushes_at_once_with_a_raw_partition_left_empty(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    """The idle flush comes once every raw partition is ingested to its end, every records partition read
    and the align agent idle for 0.5 s: seconds after the last row, not ``TABLE_FLUSH_MAX_SECONDS`` later.
    With one region every raw record is keyed to one partition of two: the other, empty and never
    committed, is at its end too. Thirty hours are fewer records than a flush by their number waits for (96
    a region): what is held is the idle flush's."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    feed = build_feed(hours=30, regions=(REGION,), solar_topic=names.solar, weather_topic=names.weather)
    order = interleave(feed)
    produce_in_order(kafka, order)
    worker = workers(TABLE_FLUSH_MAX_SECONDS="600")
    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )

    def metrics() -> str:
        with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    wait_for(lambda: IDLE_FLUSH in metrics(), 20, "an idle flush once caught up", worker.tail)
    assert worker.terminate(timeout=30) == 0, worker.tail()
