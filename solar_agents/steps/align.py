"""The align step: records per region -> the rows they complete or change, and the table writes that keep
its state. One batch of the records topic at a time: its control messages in order, each region's records
of the batch at once.

Pure: no Faust, no broker. ``runtime.align`` writes the tables, sends the rows and acks the batch. The row
arithmetic itself is ``core.features``; which record counts for an hour, and retention, ``core.hours``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import Row, row_type
from solar_agents.core.hours import Record, RegionHours, Solar, Uncommitted
from solar_agents.core.messages import MessageBatch, MessageLike
from solar_agents.core.read_progress import (
    Feed,
    FeedProgress,
    ProgressReport,
    Replay,
    ReplayMarker,
    decode_control,
    load_replay,
    replay_value,
)
from solar_agents.core.wire import (
    block_of,
    decode_message_records,
    encode_rows,
    table_bytes,
    table_value,
)
from solar_agents.observe.log import get_logger
from solar_agents.steps.align_region import align_batch
from solar_agents.steps.align_tables import read_tables
from solar_agents.steps.held_writes import HeldWrites, Table, TableWrite

log = get_logger(__name__)

# Rows messages stay well below the consumer's fetch size: about 200 bytes a row.
ROWS_PER_MESSAGE = 250

# A raw record refused (the region limit): its feed, raw partition and offset, and the reason.
Refused = tuple[Feed, int, int, str]


@dataclass(slots=True)
class AlignedBatch:
    """What one batch of the records topic yields, per records partition. Its table writes are held in the
    aligner until a flush (``steps.held_writes``)."""

    rows: dict[int, list[Row]] = field(default_factory=dict)  # in order; one per key, the latest
    late: int = 0
    regions: int = 0  # region groups applied (a region's records of the batch, or of one message in a replay)
    records: int = 0  # records in them
    # Records messages the step could not apply (a bug, a corrupt message): (partition, offset, reason).
    # They go to the dead-letter topic; the rest of the batch is applied.
    failed: list[tuple[int, int, str]] = field(default_factory=list)
    # Raw records of new regions past the limit: their original messages go to the dead-letter topic.
    refused: list[Refused] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    """A region's records of one batch, from its messages in order: applied at once after the batch."""

    first: int  # the offset of its first message (one read again after a crash is at or before it)
    last: int
    lowest: int | None  # the lowest hour a crash could deliver again (``Aligner._lowest_uncommitted``)
    records: list[Record]
    offsets: list[int]
    floors: list[tuple[int, int | None]]  # per message: (its first record's index, the floor when it came)

    def add(self, offset: int, lowest: int | None, floor: int | None, records: list[Record]) -> None:
        """The region's records of a later message."""
        self.last = offset
        if lowest is not None and (self.lowest is None or lowest < self.lowest):
            self.lowest = lowest
        self.floors.append((len(self.records), floor))
        self.records += records  # its own list (``Aligner.batch`` copies the first message's)
        self.offsets.append(offset)


@dataclass(slots=True)
class _Outcome:
    """A batch being applied: the regions' records held until its end, the rows (the latest per key, in
    order) and the reasons each message failed."""

    out: AlignedBatch = field(default_factory=AlignedBatch)
    pending: dict[tuple[int, str], _Pending] = field(default_factory=dict)
    rows: dict[int, dict[tuple[str, int], Row]] = field(default_factory=lambda: defaultdict(dict))
    problems: dict[tuple[int, int], list[str]] = field(default_factory=lambda: defaultdict(list))

    def fail(self, partition: int, offsets: list[int], reason: str) -> None:
        for offset in offsets:
            self.problems[partition, offset].append(reason)

    def add(self, partition: int, late: int, rows: list[Row]) -> None:
        self.out.late += late
        kept = self.rows[partition]
        for row in rows:
            kept.pop(row.key, None)  # the latest computation of a row wins, and goes last
            kept[row.key] = row

    def result(self) -> AlignedBatch:
        out = self.out
        out.failed = [(p, offset, "; ".join(reasons)) for (p, offset), reasons in self.problems.items()]
        out.rows = {partition: list(by_key.values()) for partition, by_key in self.rows.items()}
        return out


class Aligner:
    """The align step: every region's kept hours, the ingest's progress and the replays in progress.

    A region's records of a batch are applied at once, its rows computed and sent once per batch. Its table
    entries (each block changed, and the region's fields) are held until a flush, however many batches changed
    them:
    with thousands of regions, each batch touches most of them, and writing them per batch cost about one
    changelog record per raw record (docs/DESIGN.md, "Table writes held until a flush").
    """

    def __init__(self, features: FeatureSet, lateness_hours: int, max_regions: int | None = None) -> None:
        self.rows = row_type(features)
        self.retention = features.retention(lateness_hours)
        self.max_regions = max_regions  # regions held at most; a new one past it is refused
        self.states: dict[str, RegionHours] = {}
        self.progress: dict[int, FeedProgress] = defaultdict(FeedProgress)
        self.replays: dict[int, Replay] = {}
        # Per records partition: its batches not committed yet (what a crash would bring back).
        self._uncommitted: dict[int, Uncommitted] = defaultdict(Uncommitted)
        self.writes = HeldWrites(self.state)  # the table writes held until the next flush
        self.added: list[str] = []  # regions new since the last batch was encoded (for the web view's index)
        self.records_kept = 0  # over every region, kept up as they change: a sum per batch costs per region

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
        self.states, homes = read_tables(hours, regions)
        self.records_kept = sum(len(s.solar) + len(s.weather) for s in self.states.values())
        self.writes.reset(homes)
        self.added.clear()

    def state(self, region: str) -> RegionHours:
        state = self.states.get(region)
        if state is None:
            state = self.states[region] = RegionHours(region)
            self.added.append(region)
        return state

    def batch(self, messages: Iterable[MessageLike], committed: Callable[[int], int | None]) -> AlignedBatch:
        """Apply a batch of the records topic. ``committed(partition)`` is the group's committed offset of
        a records partition: batches from there on may be read again after a crash.

        A region's records of the whole batch are applied at once, after the batch's last message
        (``_Pending``), as one larger message would be: its rows are then computed once per batch. Message
        by message, each record recomputed the rows of the window after it, which the region's next record,
        in the next message, computed again (docs/DESIGN.md, "A region's records once per batch"). While a
        replay is in progress in a partition its messages are applied one by one, as the replay needs."""
        o = _Outcome()
        for message in messages:
            partition = message.partition
            assert message.key is not None and message.value is not None
            if message.key == b"":  # a control message, not a region (regions have 1-64 characters)
                control = decode_control(message.value)
                if control is None:  # a type this version does not know: ignored
                    continue
                if isinstance(control, ReplayMarker):  # what came before is applied before the replay
                    self._apply_pending(o, partition)
                self._control(partition, control, self.writes.controls(partition))
                continue
            try:
                groups = decode_message_records(message.key, message.value)
                lowest = self._lowest_uncommitted(partition, message.offset, groups, committed(partition))
            except Exception as exc:  # a corrupt message must not stop the worker: a dead letter
                log.exception("align_failed", partition=partition, offset=message.offset)
                groups, lowest = [], None
                o.fail(partition, [message.offset], f"internal error: {type(exc).__name__}: {exc}")
            offset = message.offset
            floor = self.progress[partition].floor()  # the same for every region of the message
            if self.replays.get(partition) is not None:  # one by one
                for region, records in groups:
                    if not self._refused(region, records, o.out.refused):
                        self._apply(
                            partition,
                            region,
                            _Pending(offset, offset, lowest, records, [offset], [(0, floor)]),
                            o,
                        )
                continue
            pending = o.pending
            for region, records in groups:
                # With thousands of regions this runs for every record or two: kept to a lookup and appends.
                held = pending.get((partition, region))
                if held is not None:
                    held.add(offset, lowest, floor, records)
                elif not self._refused(region, records, o.out.refused):
                    self.state(region)  # held from now on: the region limit counts it
                    # A message's list is not ours to extend.
                    pending[partition, region] = _Pending(
                        offset, offset, lowest, list(records), [offset], [(0, floor)]
                    )
        self._apply_pending(o, None)
        return o.result()

    def _apply_pending(self, o: _Outcome, partition: int | None) -> None:
        """Apply the regions' records held so far in the batch: of ``partition``, or of every partition."""
        for key in [k for k in o.pending if partition is None or k[0] == partition]:
            self._apply(key[0], key[1], o.pending.pop(key), o)

    def _apply(self, partition: int, region: str, group: _Pending, o: _Outcome) -> None:
        """One region's records of one message or more; a failure sends each of them to the dead letters
        (their other regions are applied)."""
        try:
            stored, late, rows = self._align(region, group, partition, self.writes.controls(partition))
        except Exception as exc:  # a bug must not stop the worker or lose the records
            log.exception("align_failed", partition=partition, offsets=group.offsets, region=region)
            o.fail(
                partition, group.offsets, f"internal error in region {region!r}: {type(exc).__name__}: {exc}"
            )
            return
        self.writes.changed(partition, region, {block_of(hour) for hour in stored}, len(group.records))
        o.add(partition, late, rows)
        o.out.regions += 1
        o.out.records += len(group.records)

    def _refused(self, region: str, records: list[Record], refused: list[Refused]) -> bool:
        """Records of a new region when ``max_regions`` are held already: each is refused with the reason
        (their raw originals become dead letters), and none is applied."""
        if self.max_regions is None or region in self.states or len(self.states) < self.max_regions:
            return False
        reason = (
            f"region limit: this worker holds MAX_REGIONS={self.max_regions} regions, and {region!r} would "
            "be one more"
        )
        for record in records:
            feed = Feed.SOLAR if isinstance(record, Solar) else Feed.WEATHER
            refused.append((feed, record.position.partition, record.position.offset, reason))
        return True

    def _control(
        self, partition: int, message: ProgressReport | ReplayMarker, writes: list[TableWrite]
    ) -> None:
        """A progress report of the ingest, or a replay marker of the replay command."""
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
        self, region: str, group: _Pending, partition: int, writes: list[TableWrite]
    ) -> tuple[set[int], int, list[Row]]:
        """One region's records of a message or more: (hours stored or pruned, late records, rows)."""
        state = self.state(region)
        kept = len(state.solar) + len(state.weather)
        aligned = align_batch(
            state,
            group.records,
            self.rows,
            self.retention,
            self.progress[partition].floor(),
            self._replay(partition, writes),
            group.lowest,
            group.first,
            group.last,
            group.floors,
        )
        self.records_kept += len(state.solar) + len(state.weather) - kept
        return aligned.stored_hours | set(aligned.pruned_hours), aligned.late, aligned.rows

    def _lowest_uncommitted(
        self,
        partition: int,
        offset: int,
        groups: list[tuple[str, list[Record]]],
        committed: int | None,
    ) -> int | None:
        """The lowest hour a crash could deliver again to this records partition: of its own batches not
        committed yet (this message included), and of the raw records the ingest has not committed."""
        tracker = self._uncommitted[partition]
        hours = [record.hour for _, records in groups for record in records]
        if hours:
            tracker.add(offset, min(hours))
        lows = [tracker.lowest(committed), self.progress[partition].uncommitted()]
        present = [low for low in lows if low is not None]
        return min(present) if present else None


@dataclass(slots=True)
class AlignedMessages:
    """An aligned batch ready to write and send (``align_messages``): what crosses back from the align
    helper, already encoded."""

    # Per records partition: (table, key, value); with ``flushed``, every write held so far, else none.
    writes: dict[int, list[tuple[Table, str, bytes | None]]]
    flushed: bool  # the tables hold this batch's state (and every one's before) once ``writes`` are made
    rows: dict[int, list[bytes]]  # per records partition: rows messages, in order
    rows_count: int
    late: int
    regions: int  # region groups applied: what the batch cost is mostly made of when records are few a region
    records: int
    records_kept: int  # what the aligner holds in memory now
    failed: list[tuple[int, int, str]]  # (partition, offset, reason): records messages for the dead letters
    refused: list[Refused]  # raw records of new regions past the limit, for the dead letters
    added: list[str]  # regions new with this batch: the web view lists them before their first flush


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


EncodedWrites = dict[int, list[tuple[Table, str, bytes | None]]]


def encoded(writes: dict[int, list[TableWrite]]) -> EncodedWrites:
    """Table writes with their values as the tables store them."""
    return {
        partition: [
            (w.table, w.key, None if w.value is None else table_bytes(w.value)) for w in partition_writes
        ]
        for partition, partition_writes in writes.items()
    }


def flush_writes(aligner: Aligner) -> EncodedWrites:
    """``Aligner.flush``, encoded."""
    return encoded(aligner.writes.flush())


def flush_region_writes(aligner: Aligner, regions: list[str]) -> EncodedWrites:
    """``HeldWrites.flush_regions``, encoded."""
    return encoded(aligner.writes.flush_regions(regions))


def reapply(aligner: Aligner, batch: MessageBatch, committed: dict[int, int | None]) -> None:
    """Apply again a batch whose rows were sent but whose table writes were not made, to an aligner loaded
    from the tables (its helper died): its writes are held again for the next flush."""
    aligner.batch(batch.messages(), committed.get)


def align_messages(
    aligner: Aligner,
    batch: MessageBatch,
    committed: dict[int, int | None],
    per_message: int,
    records_per_write: int | None = None,
) -> AlignedMessages:
    """``Aligner.batch`` on a batch of the records topic, its table values and rows messages encoded
    (at most ``per_message`` rows a message). ``committed`` holds the group's committed offset of each
    records partition in the batch.

    The table writes held are flushed once the records applied since the last flush number at least
    ``records_per_write`` per table entry to write (at most one changelog record per that many records)
    and a block's worth per region (``HeldWrites.enough``); None flushes after every batch."""
    aligned = aligner.batch(batch.messages(), committed.get)
    flush = records_per_write is None or aligner.writes.enough(records_per_write)
    writes = flush_writes(aligner) if flush else {}
    added, aligner.added = aligner.added, []
    rows = {
        partition: [
            encode_rows(partition_rows[start : start + per_message], aligner.rows)
            for start in range(0, len(partition_rows), per_message)
        ]
        for partition, partition_rows in aligned.rows.items()
    }
    return AlignedMessages(
        writes,
        flush,
        rows,
        sum(len(r) for r in aligned.rows.values()),
        aligned.late,
        aligned.regions,
        aligned.records,
        aligner.records_kept,
        aligned.failed,
        aligned.refused,
        added,
    )
