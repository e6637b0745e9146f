"""No valid record lost to a bad neighbour, on real services.

Each case puts one kind of bad input among valid messages, in the same batches: the worker stays up, the sink
equals the reference over all messages, every bad message has its dead letter, and a SIGTERM still stops the
worker promptly. The last case restarts the worker and then sends an exact duplicate: nothing may change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from conftest import WorkerFactory
from faults_util import get_json, hour_start, message_hour, solar_message, wait_for
from kafka_util import Kafka, Msg
from pipeline_util import Produced, produce_in_order, reference_for, sink_rows, wait_until_equal
from reference import Reference, assert_rows_equal
from scenario import Feed, build_feed, interleave
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres

REGION = "DE_50hertz"
HOURS = 24 * 8
LATENESS = 48  # ALLOWED_LATENESS_HOURS default
BIG = 5_000_000  # bytes: far above any broker's default message limit (about 1 MB)


def small_feed(names: Names) -> tuple[Feed, list[Produced]]:
    feed = build_feed(
        hours=HOURS,
        regions=(REGION,),
        solar_topic=names.solar,
        weather_topic=names.weather,
        duplicate_rate=0.02,
    )
    return feed, interleave(feed)


def last_hour(feed: Feed) -> int:
    return max(parsed[1] for _, value in feed.solar if (parsed := message_hour(value)) is not None)


def oversized(names: Names, end: int) -> list[tuple[bytes | None, bytes | None]]:
    return [(REGION.encode(), b"x" * BIG)]


def keyless_tombstone(names: Names, end: int) -> list[tuple[bytes | None, bytes | None]]:
    return [(None, None)]


def overflowing(names: Names, end: int) -> list[tuple[bytes | None, bytes | None]]:
    # Valid JSON numbers whose sum over a window is not a double: two adjacent hours at 1.7e308.
    hour = end - 30
    return [solar_message(REGION, hour, 1.7e308), solar_message(REGION, hour + 1, 1.7e308)]


def dead_letters_by_source(kafka: Kafka, names: Names, expected: int) -> dict[tuple[str, int, int], Msg]:
    letters = kafka.consume_all(names.deadletter, min_messages=expected)
    return {
        (
            m.headers["source_topic"].decode(),
            int(m.headers["source_partition"]),
            int(m.headers["source_offset"]),
        ): m
        for m in letters
    }


def check_dead_letters(kafka: Kafka, names: Names, reference: Reference) -> dict[tuple[str, int, int], Msg]:
    """Every rejected message has its letter, with the original bytes where they fit, and its size."""
    got = dead_letters_by_source(kafka, names, len(reference.rejected))
    want = {(r.topic, r.partition, r.offset): r for r, _ in reference.rejected}
    assert set(got) == set(want), f"dead letters {sorted(got)} != rejected {sorted(want)}"
    for source, raw in want.items():
        letter = got[source]
        size = -1 if raw.value is None else len(raw.value)
        assert int(letter.headers["source_size"]) == size, source
        reason = letter.headers["reason"].decode()
        assert reason and "\n" not in reason, reason
        if "dropped" not in letter.headers:
            assert letter.value == (raw.value or b""), (
                f"dead letter {source} does not carry the original bytes"
            )
    return got


@pytest.mark.parametrize("bad", [oversized, keyless_tombstone, overflowing], ids=lambda f: f.__name__)
def test_valid_records_beside_bad_input_are_all_written(
    kafka: Kafka,
    postgres: LocalPostgres,
    names: Names,
    workers: WorkerFactory,
    bad: Callable[[Names, int], list[tuple[bytes | None, bytes | None]]],
) -> None:
    kafka.create_topics({names.solar: 1, names.weather: 1})
    feed, order = small_feed(names)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    # The bad messages sit between valid ones of the same partition: one ingest batch holds them all.
    kafka.produce(names.solar, bad(names, last_hour(feed)), config={"message.max.bytes": 2 * BIG})
    produce_in_order(kafka, order[half:])
    produced = len(order) + len(bad(names, 0))
    worker = workers()

    reference = reference_for(kafka, names, produced)
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )
    letters = check_dead_letters(kafka, names, reference)
    if bad is oversized:
        (big,) = [m for m in letters.values() if int(m.headers["source_size"]) == BIG]
        assert big.headers["dropped"] == b"value" and big.value == b"" and big.key == REGION.encode()
        assert "not JSON" in big.headers["reason"].decode()
    if bad is overflowing:
        reasons = [m.headers["reason"].decode() for m in letters.values()]
        assert sum("less than or equal to 10000000" in r for r in reasons) == 2, reasons
        rows = sink_rows(postgres, names.table)
        assert all(abs(float(str(row["production_ma_24h"]))) < 1e300 for row in rows.values())
    assert worker.alive, worker.tail()
    started = time.monotonic()
    assert worker.terminate(timeout=30) == 0, worker.tail()
    print(
        f"\n{bad.__name__}: {len(reference.rows)} rows, {len(letters)} dead letters,"
        f" SIGTERM exit in {time.monotonic() - started:.1f} s"
    )


def test_an_exact_duplicate_after_a_restart_changes_nothing(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    kafka.create_topics({names.solar: 1, names.weather: 1})
    feed, order = small_feed(names)
    tail = 40  # produced once the worker has caught up: retention then forgets the oldest hours
    produce_in_order(kafka, order[:-tail])
    worker = workers()
    first = reference_for(kafka, names, len(order) - tail)
    wait_until_equal(postgres, names.table, first.rows, alive=lambda: worker.alive, on_timeout=worker.tail)
    produce_in_order(kafka, order[-tail:], chunk=10)
    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
    )

    def hours_kept() -> int:
        (region,) = get_json(worker.url + "/api/regions")["regions"]
        return int(region["hours_kept"])

    wait_for(lambda: hours_kept() < HOURS - 48, 30, "retention forgetting the oldest hours", worker.tail)
    assert worker.terminate(timeout=30) == 0, worker.tail()

    worker = workers()  # the same state directory: the region's state comes back from its store
    # An exact copy of the kept record 71 h behind the watermark: inside the retention, beyond the lateness.
    hour = last_hour(feed) - 71
    original = next(
        (key, value)
        for topic, key, value in order
        if topic == names.solar and message_hour(value) == (REGION, hour)
    )
    kafka.produce(names.solar, [original])

    def written() -> bool:
        counts = get_json(worker.url + "/api/regions")["counts"]
        return bool(counts["ingested_total"] == 1 and counts["rows_written"] >= counts["rows_emitted"])

    wait_for(written, 60, "the duplicate read and its rows written", worker.tail)
    time.sleep(3.0)  # its rows, if any, written
    after = reference_for(kafka, names, len(order) + 1)
    assert after.rows == reference.rows  # a duplicate changes nothing in the contract's terms
    assert_rows_equal(reference.rows, sink_rows(postgres, names.table))
    assert json.loads(original[1])["region"] == REGION and hour_start(hour) in {k[1] for k in reference.rows}
