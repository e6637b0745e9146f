"""A harness for the three steps in-process, fed fake messages (no broker, no database, no Faust).

It plays the topics: raw messages in partitions, the records topic partitioned as the ingest sends it,
tables as dicts, rows messages collected, with the same batch functions the worker's helpers run. Rows are
checked against the reference computed from SPEC.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline_util import Rows
from reference import RawMessage, assert_rows_equal, reference_features
from scenario import build_feed, interleave

from solar_agents.core.features import SPEC_ROWS, FeatureRow
from solar_agents.core.hours import RegionHours, hour_start
from solar_agents.core.messages import Message, MessageBatch
from solar_agents.core.read_progress import Feed, PartitionProgress, ProgressReport
from solar_agents.core.records import RegionResolver
from solar_agents.core.wire import FIELDS_KEY, REGIONS_KEY, table_bytes, table_value
from solar_agents.settings import Settings
from solar_agents.steps.align import (
    ROWS_PER_MESSAGE,
    Aligner,
    align_messages,
    flush_region_writes,
    flush_writes,
    load_aligner,
)
from solar_agents.steps.align_tables import read_states
from solar_agents.steps.ingest import RECORDS_PER_MESSAGE, ingest_messages
from solar_agents.steps.write import rows_to_write

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


def new_aligner() -> Aligner:
    settings = Settings()
    return Aligner(settings.feature_set, settings.allowed_lateness_hours)


@dataclass
class Harness:
    """Topics and tables of one worker, in memory."""

    aligner: Aligner = field(default_factory=new_aligner)
    tables: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"hours": {}, "regions": {}, "replays": {}}
    )
    records: dict[int, list[Message]] = field(default_factory=lambda: defaultdict(list))
    rows_messages: list[Message] = field(default_factory=list)
    dead_letters: list[tuple[int, int, str]] = field(default_factory=list)  # (partition, offset, reason)
    align_failed: list[tuple[int, int, str]] = field(default_factory=list)  # records messages, as above
    refused: list[tuple[str, int, int, str]] = field(
        default_factory=list
    )  # (feed, partition, offset, reason)
    table_writes: int = 0
    aligned: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # per records partition
    # The align step's flush policy (None: after every batch), and per records partition how far the
    # tables hold its state: where a crash reads again from (the worker acks a batch after its flush).
    records_per_write: int | None = None
    flushed: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    added: list[str] = field(default_factory=list)  # regions as the align batches announced them

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
        ingested = ingest_messages(RegionResolver({}, "DE"), raw, solar, RECORDS_PER_MESSAGE, PARTITIONS)
        self.dead_letters.extend(ingested.rejected)
        for partition, value in ingested.messages:
            self.send(partition, REGIONS_KEY, value)
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
        batch = align_messages(
            self.aligner,
            MessageBatch.of("records", messages),
            {},
            ROWS_PER_MESSAGE,
            self.records_per_write,
        )
        self.align_failed.extend(batch.failed)
        self.refused.extend(batch.refused)
        self.added.extend(batch.added)
        self.write_tables(batch.writes)
        for message in messages:  # the log's offsets are its indexes
            self.aligned[message.partition] = max(self.aligned[message.partition], message.offset + 1)
        if batch.flushed:
            self.flushed.update(self.aligned)
        for values in batch.rows.values():
            for value in values:
                self.rows_messages.append(Message("rows", 0, len(self.rows_messages), None, value))

    def flush(self) -> None:
        """The worker's flush on a timer (the input paused): every held table write made."""
        self.write_tables(flush_writes(self.aligner))
        self.flushed.update(self.aligned)

    def read_regions(self, regions: list[str]) -> dict[int, list[tuple[str, str, bytes | None]]]:
        """The web view reads ``regions``: their held writes made ahead of the flush; nothing acked."""
        writes = flush_region_writes(self.aligner, regions)
        self.write_tables(writes)
        return writes

    def crash(self) -> None:
        """The process dies with the table writes it held: the aligner starts from the tables, and every
        records partition is read again from where its tables' state ends."""
        self.restart()
        self.aligned.update(self.flushed)

    def write_tables(self, writes: dict[int, list[tuple[str, str, bytes | None]]]) -> None:
        for partition_writes in writes.values():
            for name, key, value in partition_writes:
                self.table_writes += 1
                table = self.tables[name]
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = table_value(value)  # decoded here, for the tests to read

    def hour_blocks(self) -> dict[str, Any]:
        """The hours table's blocks without the regions' fields (whose pace depends on the batches)."""
        return {
            k: {f: v for f, v in value.items() if f != FIELDS_KEY}
            for k, value in self.tables["hours"].items()
        }

    def states(self) -> dict[str, RegionHours]:
        """Every region's state as the tables hold it (its fields from its home block)."""
        return read_states(self.tables["hours"].items(), self.tables["regions"].items())

    def restart(self) -> None:
        """A new process: the aligner starts from the tables alone."""
        self.aligner = new_aligner()
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


def in_log_order(raw: list[Message]) -> list[Message]:
    """Each raw partition's messages in offset order (the order a consumer reads them)."""
    by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
    for message in sorted(raw, key=lambda m: (m.topic, m.partition, m.offset)):
        by_partition[message.topic, message.partition].append(message)
    return [m for log in by_partition.values() for m in log]


def assert_flush_ends_as_reference(harness: Harness, raw: list[Message], align_batch: int) -> None:
    """After a last flush: the rows equal the reference's, and the hour blocks what per-batch writes leave."""
    harness.flush()
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))
    each_batch = Harness()
    run(each_batch, raw, ingest_batch=30, align_batch=align_batch)
    assert harness.hour_blocks() == each_batch.hour_blocks()
