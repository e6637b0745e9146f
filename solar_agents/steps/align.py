"""The align step: records per region -> the rows they complete or change, and the table writes that keep
its state. One batch of the records topic at a time, message by message, in order.

Pure: no Faust, no broker. ``runtime.align`` writes the tables, sends the rows and acks the batch. The row
arithmetic itself is ``core.features``; which record counts for an hour, and retention, ``core.hours``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import Row, RowType, feature_rows, row_type
from solar_agents.core.hours import Record, RegionHours, Retention, Solar, Uncommitted
from solar_agents.core.messages import MessageBatch, MessageLike
from solar_agents.core.read_progress import (
    NOT_YET_READ,
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
    block_fields,
    block_of,
    decode_message_records,
    encode_rows,
    load_block,
    load_region,
    split_block_key,
    table_bytes,
    table_value,
)
from solar_agents.observe.log import get_logger
from solar_agents.steps.held_writes import HeldWrites, Home, Table, TableWrite

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
    # Records messages the step could not apply (a bug, a corrupt message): (partition, offset, reason).
    # They go to the dead-letter topic; the rest of the batch is applied.
    failed: list[tuple[int, int, str]] = field(default_factory=list)
    # Raw records of new regions past the limit: their original messages go to the dead-letter topic.
    refused: list[Refused] = field(default_factory=list)


def read_states(
    hours: Iterable[tuple[str, Any]], regions: Iterable[tuple[str, Any]]
) -> dict[str, RegionHours]:
    """The regions' kept hours as the tables hold them."""
    return read_tables(hours, regions)[0]


def read_tables(
    hours: Iterable[tuple[str, Any]], regions: Iterable[tuple[str, Any]]
) -> tuple[dict[str, RegionHours], dict[str, Home]]:
    """The regions' kept hours as the tables hold them, and where each one's fields were read from (its home
    block, or None for the regions table) with their value.

    A flush that died part way may leave a region's fields in two places (it writes the new home before it
    clears the old one): the copy of the later batch counts (``applied_through``), then the later block.
    """
    found: dict[str, tuple[tuple[int, int], Home]] = {}

    def offer(region: str, home: int | None, fields: dict[str, int | None]) -> None:
        applied = fields.get("applied_through")
        rank = (-1 if applied is None else applied, -1 if home is None else home)
        if region not in found or rank > found[region][0]:
            found[region] = (rank, (home, fields))

    for region, value in regions:
        offer(region, None, value)
    blocks: dict[str, list[Any]] = defaultdict(list)
    for key, value in hours:
        region, block = split_block_key(key)
        blocks[region].append(value)
        fields = block_fields(value)
        if fields is not None:
            offer(region, block, fields)
    states, homes = {}, {}
    for region in found.keys() | blocks.keys():
        chosen = found.get(region)
        state = RegionHours(region) if chosen is None else load_region(region, chosen[1][1])
        for value in blocks.get(region, ()):
            load_block(state, value)
        states[region] = state
        if chosen is not None:
            homes[region] = chosen[1]
    return states, homes


class Aligner:
    """The align step: every region's kept hours, the ingest's progress and the replays in progress.

    State changes message by message, in order; a region's rows are sent once per batch. Its table entries
    (each block changed, and the region's fields) are held until a flush, however many batches changed them:
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
        a records partition: batches from there on may be read again after a crash."""
        out = AlignedBatch()
        rows: dict[int, dict[tuple[str, int], Row]] = defaultdict(dict)
        for message in messages:
            partition = message.partition
            assert message.key is not None and message.value is not None
            if message.key == b"":  # a control message, not a region (regions have 1-64 characters)
                self._control(partition, message.value, self.writes.controls(partition))
                continue
            problems: list[str] = []
            try:
                groups = decode_message_records(message.key, message.value)
                lowest = self._lowest_uncommitted(partition, message.offset, groups, committed(partition))
            except Exception as exc:  # a corrupt message must not stop the worker: a dead letter
                log.exception("align_failed", partition=partition, offset=message.offset)
                groups, lowest = [], None
                problems.append(f"internal error: {type(exc).__name__}: {exc}")
            for region, records in groups:
                try:
                    if self._refused(region, records, out.refused):
                        continue
                    stored, late, new_rows = self._align(
                        region, records, partition, message.offset, lowest, self.writes.controls(partition)
                    )
                except Exception as exc:  # a bug must not stop the worker or lose the records
                    log.exception("align_failed", partition=partition, offset=message.offset, region=region)
                    problems.append(f"internal error in region {region!r}: {type(exc).__name__}: {exc}")
                    continue
                out.late += late
                self.writes.changed(partition, region, {block_of(hour) for hour in stored}, len(records))
                kept = rows[partition]
                for row in new_rows:
                    kept.pop(row.key, None)  # the latest computation of a row wins, and goes last
                    kept[row.key] = row
            if problems:  # the whole message goes to the dead letters; its other regions are applied
                out.failed.append((partition, message.offset, "; ".join(problems)))
        out.rows = {partition: list(by_key.values()) for partition, by_key in rows.items()}
        return out

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
        self,
        region: str,
        records: list[Record],
        partition: int,
        offset: int,
        lowest_uncommitted: int | None,
        writes: list[TableWrite],
    ) -> tuple[set[int], int, list[Row]]:
        """One region's records of a records message: (hours stored or pruned, late records, rows)."""
        state = self.state(region)
        kept = len(state.solar) + len(state.weather)
        aligned = align_batch(
            state,
            records,
            self.rows,
            self.retention,
            self.progress[partition].floor(),
            self._replay(partition, writes),
            lowest_uncommitted,
            offset,
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
    ``records_per_write`` per table entry to write (at most one changelog record per that many records);
    None flushes after every batch."""
    aligned = aligner.batch(batch.messages(), committed.get)
    flush = records_per_write is None or (
        aligner.writes.records >= records_per_write * aligner.writes.entries()
    )
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
        aligner.records_kept,
        aligned.failed,
        aligned.refused,
        added,
    )


# --- one region's records -------------------------------------------------------------------------------


@dataclass(slots=True)
class Aligned:
    """What one batch of a region's records changed: rows to (re)write, hours to store and to forget."""

    rows: list[Row]
    stored_hours: set[int]
    pruned_hours: list[int]
    late: int


def align_batch(
    state: RegionHours,
    records: list[Record],
    rows_of: RowType,
    retention: Retention,
    floor: int | None = None,
    replay: Replay | None = None,
    uncommitted: int | None = None,
    offset: int | None = None,
) -> Aligned:
    """The step of the align agent: fold records into the region's state, compute the rows they touch,
    then apply ``retention`` (the longest reach of the features and the allowed lateness). Rows come
    before retention, so a late record is still written from whatever history is kept (SPEC). ``floor``
    holds the watermark below raw partitions still being read; a ``replay`` in progress keeps rows before
    its start from being rewritten; ``uncommitted`` is the lowest hour that a crash could deliver again,
    whose rows' history must outlive it. ``offset`` is the batch's position in its records partition: one
    at or before the last applied is read again after a restart."""
    features = rows_of.features
    rereading = offset is not None and state.applied_through is not None and offset <= state.applied_through
    applied = state.apply(records, retention.lateness_hours, floor)
    touched = features.affected_hours(applied.solar_hours, applied.weather_hours)
    replayed = replay is not None and replay.covers(state.region)
    if (
        (applied.repeated_solar or applied.repeated_weather)
        and state.pruned_below is not None
        and not replayed
    ):
        # A record kept already (read again after a crash, or a duplicate) rewrites its rows in case their
        # first write was lost, but never from history cut short by retention: those rows were right. A
        # replay of this region is the exception: it reads again the history its rows need, and each row is
        # computed again as its inputs come back (a feature added since may have no value there yet).
        new = features.affected_hours(
            applied.solar_hours - applied.repeated_solar,
            applied.weather_hours - applied.repeated_weather,
        )
        touched = new | {h for h in touched if retention.history_kept(h, state.pruned_below)}
    if replay is not None:
        touched = {h for h in touched if not replay.hides(state.region, h)}
    rows = feature_rows(state, touched, rows_of)
    if rereading:
        # The batches up to the last one applied come back in order, each needing the history it had the
        # first time: nothing may be pruned until they are through.
        keep_from: int | None = NOT_YET_READ
    else:
        keep_from = None if uncommitted is None else retention.history_from(uncommitted)
        if offset is not None:
            state.applied_through = offset
    pruned = state.prune(retention, floor, applied.hours, keep_from)
    return Aligned(rows, applied.hours.difference(pruned), pruned, applied.late)
