"""Helpers for end-to-end tests: produce a feed, read the sink, wait until it equals the reference."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import Producer
from kafka_util import Kafka, Msg
from reference import RawMessage, Reference, assert_rows_equal, reference_features
from scenario import Feed, build_feed
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres

Produced = tuple[str, bytes | None, bytes]
Rows = dict[tuple[str, datetime], dict[str, object]]


def messy_feed(names: Names, regions: Sequence[str], hours: int | None = None) -> Feed:
    """The real data set for ``regions``: the weather 9 hours behind, shuffled in 6-hour blocks, 2 % twice."""
    return build_feed(
        hours=hours,
        regions=regions,
        solar_topic=names.solar,
        weather_topic=names.weather,
        weather_lag_hours=9,
        shuffle_block_hours=6,
        duplicate_rate=0.02,
    )


def produce_in_order(kafka: Kafka, order: Sequence[Produced], chunk: int = 500) -> None:
    """Produce (topic, key, value) in order, a chunk at a time (each topic keeps its relative order)."""
    for start in range(0, len(order), chunk):
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        for topic, key, value in order[start : start + chunk]:
            by_topic[topic].append((key, value))
        for topic, messages in by_topic.items():
            kafka.produce(topic, messages)


def raw_messages(kafka: Kafka, names: Names, expected: int) -> list[RawMessage]:
    """Everything in the two raw topics, with the partition and offset the broker gave it."""
    out = []
    for topic in (names.solar, names.weather):
        for m in kafka.consume_all(topic, min_messages=0):
            out.append(RawMessage(m.topic, m.partition, m.offset, m.key, m.value))
    assert len(out) == expected, f"read {len(out)} raw messages, produced {expected}"
    return out


def reference_for(kafka: Kafka, names: Names, produced: int, **settings: Any) -> Reference:
    messages = raw_messages(kafka, names, produced)
    return reference_features(messages, solar_topic=names.solar, weather_topic=names.weather, **settings)


def sink_rows(postgres: LocalPostgres, table: str) -> Rows:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
    except Exception as exc:  # table not created yet
        if "does not exist" in str(exc):
            return {}
        raise
    finally:
        conn.close()
    return {(r[0], r[1]): dict(zip(columns, r, strict=True)) for r in rows}


def wait_until_equal(
    postgres: LocalPostgres,
    table: str,
    expected: Rows,
    timeout: float = 180.0,
    settle: float = 3.0,
    alive: Callable[[], bool] | None = None,
    on_timeout: Callable[[], str] | None = None,
) -> Rows:
    """Poll the sink until it equals ``expected``, then check again after ``settle`` seconds: a match on the
    way to a wrong end state must not pass."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        actual = sink_rows(postgres, table)
        try:
            assert_rows_equal(expected, actual)
        except AssertionError as exc:
            last_error = str(exc)
            if alive is not None and not alive():
                break
            time.sleep(1.0)
            continue
        time.sleep(settle)
        actual = sink_rows(postgres, table)
        assert_rows_equal(expected, actual)
        return actual
    detail = on_timeout() if on_timeout else ""
    raise AssertionError(f"sink never equalled the reference:\n{last_error[:3000]}\n{detail}")


def dead_letters(kafka: Kafka, names: Names, expected: int) -> list[Msg]:
    return kafka.consume_all(names.deadletter, min_messages=expected)


def assert_dead_letters(kafka: Kafka, names: Names, reference: Reference) -> list[Msg]:
    """Every rejected message sits in the dead-letter topic once or more (at least once), with its original
    bytes, source position and a one-line reason — and nothing else does."""
    letters = dead_letters(kafka, names, len(reference.rejected))
    got = {}
    for m in letters:
        source = (
            m.headers["source_topic"].decode(),
            int(m.headers["source_partition"]),
            int(m.headers["source_offset"]),
        )
        reason = m.headers["reason"].decode()
        assert reason and "\n" not in reason, reason
        got[source] = (m.value, reason)
    want = {(r.topic, r.partition, r.offset): r.value for r, _ in reference.rejected}
    assert set(got) == set(want), f"dead letters {sorted(got)} != rejected {sorted(want)}"
    for source, value in want.items():
        assert got[source][0] == value, f"dead letter {source} does not carry the original bytes"
    return letters


def produce_in_transactions(kafka: Kafka, order: Sequence[Produced], per_transaction: int = 7) -> None:
    """Produce (topic, key, value) in order from a transactional producer, ``per_transaction`` messages a
    transaction: each commit leaves a marker at an offset of its own, which no consumer is handed."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"txn-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for start in range(0, len(order), per_transaction):
        producer.begin_transaction()
        for topic, key, value in order[start : start + per_transaction]:
            producer.produce(topic, key=key, value=value)
        producer.commit_transaction(30)
