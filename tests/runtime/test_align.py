"""The align agent on real services: a records message its step cannot apply is a dead letter, not lost."""

from __future__ import annotations

import json
import urllib.request

from conftest import WorkerFactory
from faults_util import get_json, wait_for
from kafka_util import Kafka
from pipeline_util import produce_in_order, reference_for, wait_until_equal
from scenario import build_feed, interleave
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres

REGION = "DE_50hertz"


def test_an_internal_error_in_the_align_step_sends_the_message_to_the_dead_letters(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    """Injected fault: a records message whose solar record lacks its fields, among valid ones. The step
    raises on it; the message goes to the dead-letter topic with ``internal error: …``, is counted on
    /metrics and the dashboard's API, and every valid row is still written."""
    kafka.create_topics({names.solar: 1, names.weather: 1})
    feed = build_feed(hours=24 * 4, regions=(REGION,), solar_topic=names.solar, weather_topic=names.weather)
    order = interleave(feed)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = workers()
    wait_for(
        lambda: get_json(worker.url + "/api/regions")["counts"]["rows_written"] > 0,
        60,
        "the first rows written (the records topic exists)",
        worker.tail,
    )
    records = f"{names.group}-records"
    corrupt = json.dumps({"solar": [[430_000]], "weather": []}).encode()
    kafka.produce(records, [(REGION.encode(), corrupt)])
    produce_in_order(kafka, order[half:])

    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    letters = [
        m
        for m in kafka.consume_all(names.deadletter, min_messages=len(reference.rejected) + 1)
        if m.headers["source_topic"].decode() == records
    ]
    assert len(letters) == 1, letters
    (letter,) = letters
    assert letter.value == corrupt and letter.key == REGION.encode()
    assert letter.headers["reason"].decode().startswith("internal error: IndexError")

    counts = get_json(worker.url + "/api/regions")["counts"]
    assert counts["dead_letters"][records] == 1
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'solar_agents_dead_letters_total{{topic="{records}"}} 1.0' in metrics
    assert worker.alive, worker.tail()
    assert worker.terminate(timeout=30) == 0, worker.tail()
