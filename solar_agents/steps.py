"""The three steps of the pipeline, one batch of messages at a time: ingest, align, write.

No Faust and no database here: a step takes messages (anything with Kafka's topic, partition, offset, key
and value; Faust's ``event.message`` is one, tests build ``Message``) and returns what is to be sent and
written. ``agents`` does the sending, the table writes and the acks. So each step runs in-process in a test,
fed fake messages, with the same code the worker runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from solar_agents.features import FeatureRow, align_batch, latest_per_key
from solar_agents.hours import Record, RegionHours, Retention, Uncommitted
from solar_agents.log import get_logger
from solar_agents.read_progress import (
    FeedProgress,
    ProgressReport,
    Replay,
    ReplayMarker,
    decode_control,
    load_replay,
    replay_value,
)
from solar_agents.records import (
    InvalidMessage,
    RegionResolver,
    block_hours,
    block_key,
    block_of,
    block_value,
    decode_records,
    decode_rows,
    encode_records,
    encode_rows,
    load_block,
    load_hour,
    load_region,
    parse_solar,
    parse_weather,
    region_value,
    split_table_key,
    table_bytes,
    table_value,
)

log = get_logger(__name__)

# Records and rows messages stay well below the consumer's fetch size (CONSUMER_MAX_FETCH_BYTES, at least
# 64 KiB): about 150 bytes a record, 200 a row.
RECORDS_PER_MESSAGE = 250
ROWS_PER_MESSAGE = 250


class MessageLike(Protocol):
    """What a step reads of a Kafka message."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A Kafka message as a test (or a replay of a log) builds it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# --- ingest: raw messages -> records per region ---------------------------------------------------------


@dataclass(slots=True)
class Ingested:
    """What one batch of a raw topic yields."""

    records: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))  # per region
    rejected: list[tuple[MessageLike, str]] = field(default_factory=list)  # (message, reason): dead letters
    last_offset: dict[int, int] = field(default_factory=dict)  # per raw partition, valid or not
    latest_hour: dict[int, int] = field(default_factory=dict)  # per raw partition, of valid records
    lowest_hour: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(records) for records in self.records.values())


def ingest(messages: Iterable[MessageLike], *, solar: bool, regions: RegionResolver) -> Ingested:
    """Validate raw messages of one feed: records grouped by region, the rest rejected with a reason."""
    out = Ingested()
    for message in messages:
        partition = message.partition
        out.last_offset[partition] = message.offset
        try:
            if message.value is None:
                raise InvalidMessage("empty message (no value)")
            record: Record
            if solar:
                record, region = parse_solar(message.value, partition, message.offset)
            else:
                record, region = parse_weather(message.value, message.key, partition, message.offset, regions)
        except InvalidMessage as exc:
            out.rejected.append((message, str(exc)))
            continue
        except Exception as exc:  # a bug must not stop the worker or lose the message
            log.exception("ingest_failed", topic=message.topic, offset=message.offset)
            out.rejected.append((message, f"internal error: {type(exc).__name__}: {exc}"))
            continue
        out.records[region].append(record)
        hour = record.hour
        if hour > out.latest_hour.get(partition, hour - 1):
            out.latest_hour[partition] = hour
        if hour < out.lowest_hour.get(partition, hour + 1):
            out.lowest_hour[partition] = hour
    return out


@dataclass(slots=True)
class MessageBatch:
    """A batch of one topic's messages as plain lists: what crosses to a helper process (``helpers``)."""

    topic: str
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def of(cls, topic: str, messages: Iterable[MessageLike]) -> MessageBatch:
        batch = cls(topic, [], [], [], [])
        for m in messages:
            batch.partitions.append(m.partition)
            batch.offsets.append(m.offset)
            batch.keys.append(m.key)
            batch.values.append(m.value)
        return batch

    def messages(self) -> list[Message]:
        topic = self.topic
        return [
            Message(topic, p, o, k, v)
            for p, o, k, v in zip(self.partitions, self.offsets, self.keys, self.values, strict=True)
        ]


@dataclass(slots=True)
class IngestedMessages:
    """An ingested batch ready to send: the records messages, and the rest of ``Ingested`` but the records."""

    messages: list[tuple[str, bytes]]  # (region, records message), in the order to send
    rejected: list[tuple[int, int, str]]  # (partition, offset, reason): dead letters
    last_offset: dict[int, int]
    latest_hour: dict[int, int]
    lowest_hour: dict[int, int]
    count: int


def ingest_messages(
    regions: RegionResolver, raw: MessageBatch, solar: bool, per_message: int
) -> IngestedMessages:
    """``ingest``, then the records of each region encoded, at most ``per_message`` a message."""
    batch = ingest(raw.messages(), solar=solar, regions=regions)
    messages = [
        (region, encode_records(records[start : start + per_message]))
        for region, records in batch.records.items()
        for start in range(0, len(records), per_message)
    ]
    return IngestedMessages(
        messages,
        [(m.partition, m.offset, reason) for m, reason in batch.rejected],
        batch.last_offset,
        batch.latest_hour,
        batch.lowest_hour,
        batch.count,
    )


# --- align: records -> rows and table writes ------------------------------------------------------------

Table = Literal["hours", "regions", "replays"]


@dataclass(frozen=True, slots=True)
class TableWrite:
    """Set ``key`` of a table to ``value``; None deletes it."""

    table: Table
    key: str
    value: Any


@dataclass(slots=True)
class AlignedBatch:
    """What one batch of the records topic yields, per records partition."""

    rows: dict[int, list[FeatureRow]] = field(default_factory=dict)  # in order; one per key, the latest
    writes: dict[int, list[TableWrite]] = field(default_factory=lambda: defaultdict(list))
    late: int = 0
    failed: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset) of messages not applied


def read_states(
    hours: Iterable[tuple[str, Any]], regions: Iterable[tuple[str, Any]]
) -> tuple[dict[str, RegionHours], dict[str, Older]]:
    """The regions' kept hours as the tables hold them, and the entries earlier versions wrote."""
    states = {region: load_region(region, value) for region, value in regions}
    older: dict[str, Older] = defaultdict(Older)
    for key, value in hours:
        region, number, kind = split_table_key(key)
        state = states.setdefault(region, RegionHours(region))
        if kind == "hour":
            load_hour(state, number, value)
            older[region].add(key, {number})
        else:
            load_block(state, value)
            if kind == "day":
                older[region].add(key, block_hours(value))
    return states, older


@dataclass(slots=True)
class Older:
    """A region's hour-table entries of an earlier version: deleted, their hours written as blocks, by
    the region's next batch."""

    keys: set[str] = field(default_factory=set)
    hours: set[int] = field(default_factory=set)

    def add(self, key: str, hours: set[int]) -> None:
        self.keys.add(key)
        self.hours.update(hours)


class Aligner:
    """The align step: every region's kept hours, the ingest's progress and the replays in progress.

    State changes message by message, in order; each region's table entries are written once per batch
    (each block the batch changed, and the region's fields), its rows once per batch too.
    """

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self.states: dict[str, RegionHours] = {}
        self.progress: dict[int, FeedProgress] = defaultdict(FeedProgress)
        self.replays: dict[int, Replay] = {}
        # Entries of an earlier version of the hour table, per region, until its next batch.
        self._older: dict[str, Older] = {}
        # Per records partition: its batches not committed yet (what a crash would bring back).
        self._uncommitted: dict[int, Uncommitted] = defaultdict(Uncommitted)

    def load(
        self,
        hours: Iterable[tuple[str, Any]],
        regions: Iterable[tuple[str, Any]],
        replays: Iterable[tuple[str, Any]],
    ) -> None:
        """Start from the tables (after every rebalance). Progress is not kept: until the ingest reports
        again (within seconds) nothing is known, which holds every watermark back; the safe side."""
        self.progress.clear()
        self.replays = {int(partition): load_replay(value) for partition, value in replays}
        self.states, self._older = read_states(hours, regions)

    def state(self, region: str) -> RegionHours:
        state = self.states.get(region)
        if state is None:
            state = self.states[region] = RegionHours(region)
        return state

    def batch(self, messages: Iterable[MessageLike], committed: Callable[[int], int | None]) -> AlignedBatch:
        """Apply a batch of the records topic. ``committed(partition)`` is the group's committed offset of
        a records partition: batches from there on may be read again after a crash."""
        out = AlignedBatch()
        changed: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        rows: dict[int, dict[tuple[str, int], FeatureRow]] = defaultdict(dict)
        for message in messages:
            partition = message.partition
            if message.key == b"":  # a control message, not a region (regions have 1-64 characters)
                self._control(partition, message.value, out.writes[partition])
                continue
            try:
                region, stored, late, new_rows = self._align(message, committed, out.writes[partition])
            except Exception:  # keep the worker up; the message is logged for a replay
                log.exception("align_failed", partition=partition, offset=message.offset)
                out.failed.append((partition, message.offset))
                continue
            out.late += late
            changed[partition][region].update(block_of(hour) for hour in stored)
            kept = rows[partition]
            for row in new_rows:
                kept.pop(row.key, None)  # the latest computation of a row wins, and goes last
                kept[row.key] = row
        for partition, regions in changed.items():
            for region, blocks in regions.items():
                out.writes[partition].extend(self._region_writes(region, blocks))
        out.rows = {partition: list(by_key.values()) for partition, by_key in rows.items()}
        return out

    def _control(self, partition: int, value: bytes | None, writes: list[TableWrite]) -> None:
        """A progress report of the ingest, or a replay marker of the replay command."""
        assert value is not None
        message = decode_control(value)
        progress = self.progress[partition]
        if isinstance(message, ProgressReport):
            progress.apply(message)
            self._replay(partition, writes)  # ends a replay the ingest has now read past
        elif isinstance(message, ReplayMarker):
            replay = message.replay
            # The moved partitions will be read again from their new start: nothing is known of them now.
            progress.restart(message.starts)
            self.replays[partition] = replay
            writes.append(TableWrite("replays", str(partition), replay_value(replay)))
            log.info("replay_started", partition=partition, region=replay.region, from_hour=replay.from_hour)

    def _replay(self, partition: int, writes: list[TableWrite]) -> Replay | None:
        """The replay in progress in this records partition; ends it once the ingest has read past it."""
        replay = self.replays.get(partition)
        if replay is not None and replay.done(self.progress[partition]):
            del self.replays[partition]
            writes.append(TableWrite("replays", str(partition), None))
            log.info("replay_finished", partition=partition, region=replay.region)
            return None
        return replay

    def _align(
        self, message: MessageLike, committed: Callable[[int], int | None], writes: list[TableWrite]
    ) -> tuple[str, set[int], int, list[FeatureRow]]:
        """One region's records: (region, hours stored or pruned, late records, rows)."""
        assert message.key is not None and message.value is not None
        region = message.key.decode()
        partition = message.partition
        state = self.state(region)
        records = decode_records(message.value)
        aligned = align_batch(
            state,
            records,
            self.retention,
            self.progress[partition].floor(),
            self._replay(partition, writes),
            self._lowest_uncommitted(partition, message.offset, records, committed(partition)),
            message.offset,
        )
        return region, aligned.stored_hours | set(aligned.pruned_hours), aligned.late, aligned.rows

    def _lowest_uncommitted(
        self, partition: int, offset: int, records: list[Record], committed: int | None
    ) -> int | None:
        """The lowest hour a crash could deliver again to this records partition: of its own batches not
        committed yet, and of the raw records the ingest has not committed."""
        tracker = self._uncommitted[partition]
        if records:
            tracker.add(offset, min(record.hour for record in records))
        lows = [tracker.lowest(committed), self.progress[partition].uncommitted()]
        present = [low for low in lows if low is not None]
        return min(present) if present else None

    def _region_writes(self, region: str, blocks: set[int]) -> list[TableWrite]:
        """What a batch changed of a region: each changed block once, and the region's fields."""
        state = self.state(region)
        writes = []
        older = self._older.pop(region, Older())
        for key in sorted(older.keys):
            writes.append(TableWrite("hours", key, None))
        for block in sorted(blocks | {block_of(hour) for hour in older.hours}):
            writes.append(TableWrite("hours", block_key(region, block), block_value(state, block)))
        writes.append(TableWrite("regions", region, region_value(state)))
        return writes


@dataclass(slots=True)
class AlignedMessages:
    """An aligned batch ready to write and send (``align_messages``): what crosses back from the align
    helper, already encoded."""

    writes: dict[int, list[tuple[Table, str, bytes | None]]]  # per records partition: (table, key, value)
    rows: dict[int, list[bytes]]  # per records partition: rows messages, in order
    rows_count: int
    late: int
    records_kept: int  # what the aligner holds in memory now


def load_aligner(
    aligner: Aligner,
    hours: list[tuple[str, bytes]],
    regions: list[tuple[str, bytes]],
    replays: list[tuple[str, bytes]],
) -> tuple[int, int]:
    """``Aligner.load`` from the tables' stored bytes; returns (regions, hours) loaded."""

    def decoded(entries: list[tuple[str, bytes]]) -> Iterator[tuple[str, Any]]:
        return ((key, table_value(value)) for key, value in entries)

    aligner.load(decoded(hours), decoded(regions), decoded(replays))
    states = aligner.states.values()
    return len(states), sum(len(s.solar.keys() | s.weather.keys()) for s in states)


def align_messages(
    aligner: Aligner, batch: MessageBatch, committed: dict[int, int | None], per_message: int
) -> AlignedMessages:
    """``Aligner.batch`` on a batch of the records topic, its table values and rows messages encoded
    (at most ``per_message`` rows a message). ``committed`` holds the group's committed offset of each
    records partition in the batch."""
    aligned = aligner.batch(batch.messages(), committed.get)
    writes = {
        partition: [
            (w.table, w.key, None if w.value is None else table_bytes(w.value)) for w in partition_writes
        ]
        for partition, partition_writes in aligned.writes.items()
    }
    rows = {
        partition: [
            encode_rows(partition_rows[start : start + per_message])
            for start in range(0, len(partition_rows), per_message)
        ]
        for partition, partition_rows in aligned.rows.items()
    }
    return AlignedMessages(
        writes,
        rows,
        sum(len(r) for r in aligned.rows.values()),
        aligned.late,
        sum(len(r.solar) + len(r.weather) for r in aligner.states.values()),
    )


# --- write: rows messages -> the rows to upsert ---------------------------------------------------------


def rows_to_write(messages: Iterable[MessageLike]) -> list[FeatureRow]:
    """The rows of a batch of the rows topic, one per key: the latest computed.

    A message this version cannot read (written by another version with a column this one lacks) is
    logged and left out rather than stopping the writer; ``replay`` computes its rows again.
    """
    rows: list[FeatureRow] = []
    for message in messages:
        if message.value is None:
            continue
        try:
            rows.extend(decode_rows(message.value))
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "rows_message_unreadable", partition=message.partition, offset=message.offset, error=str(exc)
            )
    return latest_per_key(rows)
