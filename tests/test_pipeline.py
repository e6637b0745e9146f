"""End to end on real services: the real data set, messy, through a real worker, equals the reference."""

from __future__ import annotations

from conftest import WorkerFactory
from kafka_util import Kafka
from pipeline_util import assert_dead_letters, produce_in_order, reference_for, wait_until_equal
from scenario import build_feed, interleave
from worker import Names

from solar_agents.local import LocalPostgres


def test_real_data_set_end_to_end(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    # Raw topics with partition counts unlike the worker's (4): the repartition by region must handle it.
    kafka.create_topics({names.solar: 3, names.weather: 2})
    feed = build_feed(
        regions=("DE_50hertz", "DE_north"),
        solar_topic=names.solar,
        weather_topic=names.weather,
        weather_lag_hours=9,
        shuffle_block_hours=6,
        duplicate_rate=0.02,
    )
    order = interleave(feed)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = workers()
    produce_in_order(kafka, order[half:])

    reference = reference_for(kafka, names, len(order))
    assert len(reference.rows) == 2 * 5088
    assert len(reference.rejected) == len(feed.malformed) >= 12

    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    assert_dead_letters(kafka, names, reference)
    assert worker.alive
