"""The three steps in-process, fed fake messages (no broker, no database, no Faust): ingest, align, write.

The harness below plays the topics: raw messages in partitions, the records topic partitioned by region,
tables as dicts, rows messages collected. Rows are checked against the reference computed from SPEC.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline_util import Rows
from reference import RawMessage, assert_rows_equal, reference_features
from scenario import build_feed, interleave

from solar_agents.features import FeatureRow
from solar_agents.hours import Retention, hour_start
from solar_agents.read_progress import Feed, PartitionProgress, ProgressReport
from solar_agents.records import (
    BLOCK_HOURS,
    RegionResolver,
    day_key,
    encode_rows,
    hour_key,
    split_table_key,
    table_bytes,
    table_value,
)
from solar_agents.settings import Settings
from solar_agents.steps import (
    RECORDS_PER_MESSAGE,
    ROWS_PER_MESSAGE,
    Aligner,
    Message,
    MessageBatch,
    align_messages,
    ingest_messages,
    load_aligner,
    rows_to_write,
)

SOLAR, WEATHER = "solar_production_raw", "weather_raw"
PARTITIONS = 4


def raw_feed(hours: int, regions: tuple[str, ...], seed: int = 3) -> list[Message]:
    """The messy feed of the scenario, as messages in 2 partitions per raw topic with their offsets."""
    feed = build_feed(hours=hours, regions=regions, seed=seed, solar_topic=SOLAR, weather_topic=WEATHER)
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    out = []
    for index, (topic, key, value) in enumerate(interleave(feed)):
        partition = index % 2
        out.append(Message(topic, partition, offsets[topic, partition], key, value))
        offsets[topic, partition] += 1
    return out


def retention() -> Retention:
    return Settings().retention


@dataclass
class Harness:
    """Topics and tables of one worker, in memory."""

    aligner: Aligner = field(default_factory=lambda: Aligner(retention()))
    tables: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"hours": {}, "regions": {}, "replays": {}}
    )
    records: dict[int, list[Message]] = field(default_factory=lambda: defaultdict(list))
    rows_messages: list[Message] = field(default_factory=list)
    dead_letters: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, reason)
    table_writes: int = 0
    aligned: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # per records partition

    ends: dict[tuple[str, int], int] = field(default_factory=dict)  # raw (topic, partition) -> end offset
    read_hour: dict[tuple[str, int], int] = field(default_factory=dict)

    def send(self, partition: int, key: bytes, value: bytes) -> None:
        log = self.records[partition]
        log.append(Message("records", partition, len(log), key, value))

    def ingest(self, batch: list[Message], solar: bool) -> None:
        """The ingest agent: records to their region's partition, then a progress report to every one."""
        topic = SOLAR if solar else WEATHER
        # The functions the worker's helpers run, on the same plain batches.
        raw = MessageBatch.of(topic, batch)
        ingested = ingest_messages(RegionResolver({}, "DE"), raw, solar, RECORDS_PER_MESSAGE)
        self.dead_letters.extend(ingested.rejected)
        for region, value in ingested.messages:
            self.send(sum(region.encode()) % PARTITIONS, region.encode(), value)
        for partition, hour in ingested.latest_hour.items():
            self.read_hour[topic, partition] = max(hour, self.read_hour.get((topic, partition), hour))
        report = {
            partition: PartitionProgress(
                latest_hour=self.read_hour.get((topic, partition)),
                caught_up=offset + 1 >= self.ends[topic, partition],
                next_offset=offset + 1,
                uncommitted_hour=None,
            )
            for partition, offset in ingested.last_offset.items()
        }
        value = ProgressReport(Feed.SOLAR if solar else Feed.WEATHER, 2, report).encode()
        for partition in range(PARTITIONS):
            self.send(partition, b"", value)

    def align(self, messages: list[Message]) -> None:
        batch = align_messages(self.aligner, MessageBatch.of("records", messages), {}, ROWS_PER_MESSAGE)
        for writes in batch.writes.values():
            for name, key, value in writes:
                self.table_writes += 1
                table = self.tables[name]
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = table_value(value)  # decoded here, for the tests to read
        for values in batch.rows.values():
            for value in values:
                self.rows_messages.append(Message("rows", 0, len(self.rows_messages), None, value))

    def restart(self) -> None:
        """A new process: the aligner starts from the tables alone."""
        self.aligner = Aligner(retention())
        stored = {name: [(k, table_bytes(v)) for k, v in kept.items()] for name, kept in self.tables.items()}
        load_aligner(self.aligner, stored["hours"], stored["regions"], [])


def run(harness: Harness, raw: list[Message], ingest_batch: int, align_batch: int) -> None:
    for message in raw:
        end = harness.ends.get((message.topic, message.partition), 0)
        harness.ends[message.topic, message.partition] = max(end, message.offset + 1)
    for topic in (SOLAR, WEATHER):  # each raw topic by its own agent, in batches
        messages = [m for m in raw if m.topic == topic]
        for start in range(0, len(messages), ingest_batch):
            harness.ingest(messages[start : start + ingest_batch], solar=topic == SOLAR)
    for partition, log in harness.records.items():
        for start in range(harness.aligned[partition], len(log), align_batch):
            harness.align(log[start : start + align_batch])
        harness.aligned[partition] = len(log)


def as_rows(rows: Iterable[FeatureRow]) -> Rows:
    names = [f.name for f in fields(FeatureRow)]
    out: Rows = {}
    for row in rows:
        values = {("timestamp" if n == "hour" else n): getattr(row, n) for n in names}
        values["timestamp"] = hour_start(row.hour)
        out[row.region, values["timestamp"]] = values
    return out


def reference(raw: list[Message]) -> Rows:
    messages = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value) for m in raw]
    return reference_features(messages, solar_topic=SOLAR, weather_topic=WEATHER).rows


def test_steps_in_process_equal_the_reference() -> None:
    raw = raw_feed(hours=240, regions=("DE_a", "DE_b", "DE_c"))
    harness = Harness()
    run(harness, raw, ingest_batch=50, align_batch=7)
    assert harness.dead_letters, "the scenario's malformed messages are rejected"
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages)))


def test_batch_size_changes_the_table_writes_not_the_rows() -> None:
    raw = raw_feed(hours=240, regions=("DE_a", "DE_b"))
    small, large = Harness(), Harness()
    run(small, raw, ingest_batch=10, align_batch=1)
    run(large, raw, ingest_batch=500, align_batch=100)
    assert as_rows(rows_to_write(small.rows_messages)) == as_rows(rows_to_write(large.rows_messages))
    assert small.tables["hours"] == large.tables["hours"]
    for region, kept in small.tables["regions"].items():  # the watermark; retention ran at its own pace
        assert kept["latest_solar"] == large.tables["regions"][region]["latest_solar"]
        assert kept["latest_weather"] == large.tables["regions"][region]["latest_weather"]
        assert kept["pruned_below"] > 0, "retention ran"
    # One write per changed block and one per region, per batch: far fewer with larger batches.
    assert large.table_writes * 10 < small.table_writes
    for value in large.tables["hours"].values():  # every value bounded: one day of one region
        assert len(value["solar"]) <= BLOCK_HOURS and len(value["weather"]) <= BLOCK_HOURS


def test_a_restart_from_the_tables_alone_changes_no_row() -> None:
    raw = raw_feed(hours=200, regions=("DE_a", "DE_b"))
    random.Random(5).shuffle(raw)  # any order of arrival across partitions
    by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
    for message in sorted(raw, key=lambda m: (m.topic, m.partition, m.offset)):
        by_partition[message.topic, message.partition].append(message)
    ordered = [m for log in by_partition.values() for m in log]
    harness = Harness()
    half = len(ordered) // 2
    run(harness, ordered[:half], ingest_batch=40, align_batch=5)
    harness.restart()
    run(harness, ordered[half:], ingest_batch=40, align_batch=5)
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages)))


def test_an_unreadable_rows_message_is_left_out_not_fatal() -> None:
    good = Message("rows", 0, 0, None, encode_rows([]))
    bad = Message("rows", 0, 1, None, json.dumps({"columns": ["region"], "rows": [["R"]]}).encode())
    assert rows_to_write([good, bad]) == []


def test_tables_of_earlier_versions_load_and_are_replaced_by_blocks() -> None:
    """Day blocks (the previous version) and hour entries (the one before) load; the region's next batch
    deletes them and writes the same hours as blocks, and no row changes."""
    raw = raw_feed(hours=200, regions=("DE_a",))
    by_topic = {t: [m for m in raw if m.topic == t] for t in (SOLAR, WEATHER)}
    first = [m for t in by_topic for m in by_topic[t][: len(by_topic[t]) // 2]]
    rest = [m for t in by_topic for m in by_topic[t][len(by_topic[t]) // 2 :]]
    current = Harness()
    run(current, first, ingest_batch=40, align_batch=5)
    legacy: dict[str, Any] = {}
    for key, value in current.tables["hours"].items():  # rewrite the blocks as days and hours
        region = key.rsplit("|", 1)[0]
        for f in value["solar"] + value["weather"]:
            day = f[0] // 24
            if day % 2:  # day blocks named their halves "s" and "w"
                legacy.setdefault(day_key(region, day), {"s": [], "w": []})[
                    "s" if f in value["solar"] else "w"
                ].append(f)
            else:
                entry = legacy.setdefault(hour_key(region, f[0]), [None, None])
                entry[0 if f in value["solar"] else 1] = f[1:]
    current.tables["hours"] = legacy
    current.restart()
    run(current, rest, ingest_batch=40, align_batch=5)
    assert all(split_table_key(key)[2] == "block" for key in current.tables["hours"])
    assert_rows_equal(reference(raw), as_rows(rows_to_write(current.rows_messages)))
