"""What a producer cannot grow without bound, on real services: the regions a worker holds, and the log's
dead-letter lines."""

from __future__ import annotations

import json
import time
import urllib.request

from conftest import WorkerFactory
from faults_util import counter, get_json, log_events, region_of, wait_for
from kafka_util import Kafka
from pipeline_util import produce_in_order, raw_messages, sink_rows, wait_until_equal
from reference import RawMessage, reference_features
from scenario import build_feed, interleave
from worker import Names, Worker

from solar_agents.cli.demo.postgres import LocalPostgres

REGIONS = ("DE_50hertz", "DE_north", "DE_south")


def test_new_regions_past_max_regions_are_dead_letters_with_their_original_bytes(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    """MAX_REGIONS=2 and three regions: the two that came first are written exactly as the reference says;
    every valid message of the third is on the dead-letter topic with its original bytes and the reason
    "region limit", counted by solar_agents_regions_refused_total; /api/regions holds two regions."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    feed = build_feed(hours=48, regions=REGIONS, solar_topic=names.solar, weather_topic=names.weather)
    order = interleave(feed)
    worker = workers(MAX_REGIONS="2")
    produce_in_order(kafka, order)
    messages = raw_messages(kafka, names, len(order))
    full = reference_features(messages, solar_topic=names.solar, weather_topic=names.weather)
    bad = {(r.topic, r.partition, r.offset) for r, _ in full.rejected}
    valid = [m for m in messages if (m.topic, m.partition, m.offset) not in bad]

    def held() -> list[str]:
        with_rows = {region for region, _ in sink_rows(postgres, names.table)}
        return sorted(with_rows)

    wait_for(lambda: len(held()) == 2, 120, "rows of two regions", worker.tail)
    [refused] = set(REGIONS) - set(held())
    of_refused = [m for m in valid if region_of(m.key, m.value) == refused]
    expected = reference_features(
        [RawMessage(m.topic, m.partition, m.offset, m.key, m.value) for m in valid if m not in of_refused],
        solar_topic=names.solar,
        weather_topic=names.weather,
    )
    wait_until_equal(postgres, names.table, expected.rows, alive=lambda: worker.alive)
    letters = kafka.consume_all(names.deadletter, min_messages=len(bad) + len(of_refused))
    by_source = {
        (
            m.headers["source_topic"].decode(),
            int(m.headers["source_partition"]),
            int(m.headers["source_offset"]),
        ): m
        for m in letters
    }
    for message in of_refused:
        letter = by_source[message.topic, message.partition, message.offset]
        assert letter.value == message.value and letter.key == message.key
        reason = letter.headers["reason"].decode()
        assert (
            reason.startswith("region limit: this worker holds MAX_REGIONS=2 regions") and refused in reason
        )
    assert set(by_source) == bad | {(m.topic, m.partition, m.offset) for m in of_refused}
    wait_for(
        lambda: counter(worker, "regions_refused") == len(of_refused), 30, "the refused counter", worker.tail
    )
    answer = get_json(worker.url + "/api/regions")
    assert sorted(r["region"] for r in answer["regions"]) == held() and answer["page"]["total"] == 2
    print(f"\nMAX_REGIONS=2: {refused} refused, {len(of_refused)} raw messages sent to the dead letters")


def dead_letters_counted(worker: Worker) -> float:
    """solar_agents_dead_letters_total over every topic, from the worker's /metrics."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    prefix = "solar_agents_dead_letters_total{"
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_dead_letters_are_logged_once_per_kind_then_counted(
    kafka: Kafka, names: Names, workers: WorkerFactory
) -> None:
    """3,000 bad messages of three kinds: three dead_letter lines in full, then summary lines whose counts
    add up to all of them; the dead-letter topic and the counter have all 3,000."""
    kafka.create_topics({names.solar: 2, names.weather: 2})
    worker = workers(DEADLETTER_LOG_INTERVAL_SECONDS="2")
    kinds = [b"not json", b"[1, 2]", json.dumps({"timestamp": "2019-01-01T00:00Z", "region": "R"}).encode()]
    total = 3000
    kafka.produce(names.solar, [(None, kinds[i % 3]) for i in range(total)])
    wait_for(lambda: dead_letters_counted(worker) == total, 120, "3,000 dead letters counted", worker.tail)
    time.sleep(3)  # one more summary interval
    text = worker.log_text()
    full = log_events(text, "dead_letter")
    summaries = log_events(text, "dead_letters_summary")
    print(f"\n{total:,} dead letters: {len(full)} logged in full, {len(summaries)} summary lines")
    print(f"  the worker's log: {len(text):,} bytes, {len(text.splitlines())} lines")
    assert sorted(e["reason"].split(":")[0] for e in full) == [
        "missing field 'production_mw'",
        "not JSON",
        "not a JSON object",
    ]
    # Every one is in a summary's counts, but the first of each kind may have come in an interval of its own.
    assert total - len(full) <= sum(sum(e["counts"].values()) for e in summaries) <= total
    assert sum(e["not_logged"] for e in summaries) == total - len(full)
    assert len(kafka.consume_all(names.deadletter, min_messages=total)) >= total
    assert len(text.splitlines()) < 300, "the log grew with the dead letters"
