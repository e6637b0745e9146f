"""Faust wiring: topics, tables and the agents that move records through them (``topology`` at the end).

    solar raw ──▶ ingest_solar ──┐                    ┌─▶ hours table (region|block → two days of hours)
                                 ├─▶ records topic ──▶ align ──▶ regions table (region → watermark, horizon)
    weather raw ─▶ ingest_weather┘   (key = region)       │
         │ bad messages ─▶ dead-letter topic              └─▶ rows topic ──▶ write ──▶ RisingWave / PostgreSQL

The steps themselves are in ``steps`` (and the logic under them in ``records``, ``hours`` and ``features``);
this module only moves bytes and state: sends, table writes and acks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import faust
from faust import Stream
from faust.types import TP, EventT, StreamT, TableT

from solar_agents.compat import (
    RangeReader,
    ack_offsets,
    committed_offsets,
    hold_fetches,
    range_reader,
    read_offsets,
    release_fetches,
    writing_in,
)
from solar_agents.helpers import Helper
from solar_agents.hours import RegionHours, Uncommitted
from solar_agents.log import get_logger
from solar_agents.offsets import Continuity, Hole, fill
from solar_agents.read_progress import Feed, PartitionProgress, ProgressReport, ahead_of_slowest
from solar_agents.records import (
    RegionResolver,
    dead_letter,
    table_value,
)
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo, FeatureSink, write_messages
from solar_agents.stats import Stats
from solar_agents.steps import (
    RECORDS_PER_MESSAGE,
    ROWS_PER_MESSAGE,
    AlignedMessages,
    Aligner,
    IngestedMessages,
    Message,
    MessageBatch,
    MessageLike,
    Table,
    align_messages,
    ingest_messages,
    load_aligner,
    read_states,
)

log = get_logger(__name__)
Event = EventT[bytes]
T = TypeVar("T")


@dataclass(slots=True)
class Taken:
    """A batch of one stream: its messages in order, with any that the hand-over dropped read again and put
    back (``offsets``), and the events to ack once its work is done."""

    messages: list[MessageLike]
    events: list[Event]
    read_again: dict[int, list[int]]  # per partition: offsets read again, acked with the events

    def last_events(self) -> dict[int, Event]:
        """The last event of each partition (table writes go to its changelog partition)."""
        return {event.message.partition: event for event in self.events}

    async def ack(self, stream: StreamT[bytes]) -> None:
        for event in self.events:
            await stream.ack(event)
        if self.read_again:
            consumer = stream.app.consumer
            topic = self.messages[0].topic
            for partition, offsets in self.read_again.items():
                ack_offsets(consumer, TP(topic, partition), offsets)


async def batches(
    stream: StreamT[bytes], size: int, within: float, holes: HoleFiller
) -> AsyncIterator[Taken]:
    """Batches of events that the caller acks after their work is done, holes filled (``HoleFiller``).

    ``take()`` would ack a batch even when the loop body raised; ``noack_take`` yields the events unacked.
    But when it ends (the worker stops) it turns the stream's acks back on, and its background drainer then
    acks every event still arriving, unprocessed: a graceful stop committed input nobody had read. So acks
    stay off once the batches end.
    """
    takes = cast(Stream[bytes], stream).noack_take(size, within=within)
    continuity = Continuity()
    try:
        async for events in takes:
            yield await holes.fill(stream, cast(list[Event], events), continuity)
    finally:
        await takes.aclose()
        stream.enable_acks = False


class HoleFiller:
    """Puts back the records a hand-over dropped (``offsets``): read again, in front of the record after."""

    def __init__(self, reader: RangeReader, stats: Stats) -> None:
        self.reader = reader
        self.stats = stats

    async def fill(self, stream: StreamT[bytes], events: list[Event], continuity: Continuity) -> Taken:
        messages: list[MessageLike] = [event.message for event in events]
        if not messages:
            return Taken(messages, events, {})
        topic = messages[0].topic
        committed = committed_offsets(stream.app.consumer)
        holes = continuity.holes(messages, lambda partition: committed.get(TP(topic, partition)))
        if not holes:
            return Taken(messages, events, {})
        found: dict[Hole, list[MessageLike]] = {}
        again: dict[int, list[int]] = defaultdict(list)
        for hole in holes:
            found[hole] = read = await self._read(topic, hole)
            again[hole.partition].extend(m.offset for m in read)
            absent = hole.end - hole.start - len(read)
            self.stats.records_read_again += len(read)
            self.stats.offsets_absent += absent
            fields = {"topic": topic, "partition": hole.partition, "start": hole.start, "end": hole.end}
            if read:  # records the hand-over dropped: without this, lost
                log.warning("records_read_again", **fields, records=len(read))
            else:  # transaction markers, a compacted or expired range: nothing to read
                log.debug("offsets_absent", **fields, offsets=absent)
        return Taken(fill(messages, found), events, dict(again))

    async def _read(self, topic: str, hole: Hole) -> list[MessageLike]:
        read: list[MessageLike] = []

        async def attempt() -> None:
            records = await self.reader.read(TP(topic, hole.partition), hole.start, hole.end)
            read[:] = [Message(topic, r.partition, r.offset, r.key, r.value) for r in records]

        await retrying("read_again_failed", attempt)
        return read


class Applying:
    """The batch before, being written, sent and acked on the event loop while its helper computes the next:
    one batch applied at a time, in order, and never two computed ahead."""

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None

    async def settled(self) -> None:
        """Wait until the batch before is applied (its failure is the agent's)."""
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def start(self, work: Awaitable[None]) -> None:
        await self.settled()
        self._task = asyncio.ensure_future(work)

    def cancel(self) -> None:
        """On stop: a batch not applied is not acked either, and is read again at the next start."""
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def overlapped(
    stream: StreamT[bytes],
    size: int,
    within: float,
    compute: Callable[[Taken], Awaitable[T]],
    apply: Callable[[Taken, T], Awaitable[None]],
    applying: Applying,
    holes: HoleFiller,
) -> None:
    """Batches of ``stream``: each ``compute``d (in a helper) while the batch before is ``apply``ed here."""
    try:
        async for taken in batches(stream, size, within, holes):
            result = await compute(taken)
            await applying.start(apply(taken, result))
    finally:
        applying.cancel()


async def retrying(event: str, attempt: Callable[[], Awaitable[object]], max_delay: float = 10.0) -> None:
    """Run ``attempt`` until it succeeds, backing off; a failure is logged, never raised, so the agent
    lives on and its unacked input is neither lost nor skipped."""
    delay = 0.2
    failures = 0
    while True:
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            log.warning(
                event,
                attempt=failures,
                error=f"{type(exc).__name__}: {str(exc).strip()}"[:300],
                retry_in=round(delay, 2),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if failures:
            log.info(event.replace("_failed", "_recovered"), attempts=failures + 1)
        return


# A raw partition with a backlog that delivered nothing for this long no longer holds others back.
READ_IDLE_SECONDS = 5.0

# Changelog records that may wait to be sent before Faust holds the streams (``compat.install_producer``).
# A table write cannot wait, so Faust holds every topic's delivery while more than this many changelog records
# wait to be sent (100 by default). One align batch writes a few hundred at once, bounded by its blocks, and
# the hold cost each of them a pause of the whole worker.
PRODUCER_BUFFER_MESSAGES = 5000

# The state is small (bounded by event time) and read from the stores only after a rebalance: the align
# step keeps it in memory. RocksDB's defaults (64 MB write buffers, a block cache per partition's store)
# would let memory grow with the history written instead.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 256 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 1024**2,
    "block_cache_compressed_size": 0,
}


class Pipeline:
    """The topology of one app: built once from settings, then only driven by Faust."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.stats = Stats()
        partitions = settings.topic_partitions

        def topic(name: str, partitions: int | None = None) -> faust.TopicT:
            # Bytes in, bytes out: validation is ours (pydantic), so that a bad message is a dead letter
            # rather than an exception inside Faust.
            return app.topic(
                name,
                partitions=partitions,
                internal=partitions is not None,
                key_serializer="raw",
                value_serializer="raw",
            )

        self.solar_topic = topic(settings.kafka_topic_solar)
        self.weather_topic = topic(settings.kafka_topic_weather)
        self.deadletter_topic = topic(settings.deadletter_topic, partitions=1)
        self.records_topic = topic(settings.records_topic, partitions)
        self.rows_topic = topic(settings.rows_topic, partitions)

        # Hour tables: one entry per (region, hour) with both halves, and one per region with the latest
        # hours seen (the watermark). Both live on the records topic's partitions, keyed by region.
        def table(name: str) -> TableT[str, bytes]:
            # Values are bytes (``table_bytes``): Faust then neither encodes them on a write nor decodes
            # every changelog record during a restore. Keys stay JSON, as earlier versions wrote them.
            return app.Table(
                name,
                partitions=partitions,
                value_type=bytes,
                schema=faust.Schema(key_serializer="json", value_serializer="raw"),
                options=ROCKSDB_OPTIONS,
            )

        self.hour_table = table("hours")
        self.region_table = table("regions")
        # Replays in progress, per records partition (see ``Replay``).
        self.replay_table = table("replays")
        self.hour_table.on_recover(self._on_recovered)

        self._tables: dict[Table, TableT[str, bytes]] = {
            "hours": self.hour_table,
            "regions": self.region_table,
            "replays": self.replay_table,
        }

        # The align step and its state (``steps.Aligner``) live in a helper process of their own; loaded from
        # the tables after every rebalance. Only the table writes and the sends are this process's.
        self._aligner = Helper(
            "align",
            Aligner,
            (settings.retention,),
            processes=settings.step_processes,
            log_level=settings.log_level,
        )
        self._states_generation: int | None = None
        self._applying = Applying()  # the align agent's batch before, being written and sent
        self._records_kept = 0
        # What a crash of the ingest would bring back: records read but not committed, per raw partition.
        # Retention keeps the history they need.
        self._raw_uncommitted: dict[TP, Uncommitted] = defaultdict(Uncommitted)
        # Ingest side: the latest valid hour and offset read from each raw partition by this process.
        self._read_hour: dict[TP, int] = {}
        self._read_offset: dict[TP, int] = {}
        self._read_at: dict[TP, float] = {}  # monotonic time of the latest batch read of a raw partition
        self._held: set[TP] = set()  # raw partitions whose fetches wait for the slowest (hold_ahead)
        self._held_generation: int | None = None
        self._last_report: dict[str, bytes] = {}
        self._last_progress: tuple[str, ...] = ()
        self._caught_up_checks = 0
        self._recovered_once = False
        self._started = time.monotonic()

        # The parse of raw messages, and the writer's statements with its database connection (psycopg2
        # blocks; the event loop must not), each in a helper process too (``helpers``).
        self._parser = Helper(
            "ingest",
            RegionResolver,
            (dict(settings.region_locations), settings.default_region),
            processes=settings.step_processes,
            log_level=settings.log_level,
        )
        # Records the hand-over dropped, read again (``offsets``).
        self._reader = range_reader(app)
        self._holes = HoleFiller(self._reader, self.stats)
        self._sink = Helper(
            "sink",
            FeatureSink,
            (ConnectionInfo.of(settings), settings.features_table),
            processes=settings.step_processes,
            blocking=True,
            log_level=settings.log_level,
        )

        topology(app, self)

    # --- ingest ---------------------------------------------------------------------------------------------

    async def ingest_solar(self, stream: StreamT[bytes]) -> None:
        await self._ingest_feed(stream, solar=True)

    async def ingest_weather(self, stream: StreamT[bytes]) -> None:
        await self._ingest_feed(stream, solar=False)

    async def _ingest_feed(self, stream: StreamT[bytes], *, solar: bool) -> None:
        """Each batch parsed in the ingest helper while the batch before is sent on and acked."""
        settings = self.settings
        await overlapped(
            stream,
            settings.ingest_batch_size,
            settings.ingest_batch_max_wait_seconds,
            partial(self._parse, solar=solar),
            partial(self._ingest, stream, solar=solar),
            Applying(),
            self._holes,
        )

    async def start(self) -> None:
        """With the worker: the helper processes started (each takes a second) rather than at the first
        batch."""
        await asyncio.gather(self._parser.start(), self._aligner.start(), self._sink.start())

    async def _parse(self, taken: Taken, *, solar: bool) -> IngestedMessages:
        """A raw batch validated and encoded per region, in the ingest helper."""
        topic = self.settings.kafka_topic_solar if solar else self.settings.kafka_topic_weather
        raw = MessageBatch.of(topic, taken.messages)
        parsed: list[IngestedMessages] = []

        async def parse() -> None:
            parsed.append(await self._parser.run(ingest_messages, raw, solar, RECORDS_PER_MESSAGE))

        await retrying("ingest_failed", parse)  # only a helper that died fails: bad input is a dead letter
        return parsed[0]

    async def _ingest(
        self, stream: StreamT[bytes], taken: Taken, batch: IngestedMessages, *, solar: bool
    ) -> None:
        """Send a parsed batch's dead letters aside and its records on, one message per region; then ack.

        Offsets are committed only after the producer has delivered what was sent here (Faust flushes the
        producer before every commit), so a crash re-reads the batch: at least once, never lost.
        """
        topic = self.settings.kafka_topic_solar if solar else self.settings.kafka_topic_weather
        if batch.rejected:
            at = {(message.partition, message.offset): message for message in taken.messages}
            for partition, offset, reason in batch.rejected:
                await self._dead_letter(at[partition, offset], reason)
        for partition, low in batch.lowest_hour.items():
            self._raw_uncommitted[TP(topic, partition)].add(batch.last_offset[partition], low)
        feed = Feed.SOLAR if solar else Feed.WEATHER
        # Before the records: their partitions are not read to the end yet. The align agent must not apply
        # them under an older report that says "caught up".
        reading = {TP(topic, partition) for partition in batch.last_offset}
        await self._report_progress(topic, feed, reading=reading)
        for region, value in batch.messages:
            send = partial(self.records_topic.send, key=region.encode(), value=value)
            await retrying("records_send_failed", send)  # a raise here would end the agent, the batch unread
        # Progress counts a batch only once its records are on their way (a report may go out meanwhile).
        now = time.monotonic()
        for partition, offset in batch.last_offset.items():
            self._read_offset[TP(topic, partition)] = offset
            self._read_at[TP(topic, partition)] = now
        for partition, hour in batch.latest_hour.items():
            tp = TP(topic, partition)
            self._read_hour[tp] = max(hour, self._read_hour.get(tp, hour))
        await self._report_progress(topic, feed)
        self._hold_ahead()
        self.stats.ingested[topic] += batch.count
        await taken.ack(stream)

    def _hold_ahead(self) -> None:
        """Hold the fetches of raw partitions read too far ahead of the slowest (``ahead_of_slowest``).

        A partition counts as behind while it has records left (below its high-water mark) and has delivered
        some lately: one that stops delivering (a broker's gap, a marker at the end) soon holds nobody back.
        """
        if self.app.in_recovery:  # Faust ignores holds then; decide once the streams run again
            return
        consumer = self.app.consumer
        generation = self.app.consumer_generation_id
        if generation != self._held_generation:  # a rebalance resets the consumer's flow state
            self._held, self._held_generation = set(), generation
        raw = (self.settings.kafka_topic_solar, self.settings.kafka_topic_weather)
        now = time.monotonic()
        behind: dict[TP, int] = {}
        for tp in consumer.assignment():
            hour, last = self._read_hour.get(tp), self._read_offset.get(tp)
            if tp.topic not in raw or hour is None or last is None:
                continue
            lately = tp in self._held or now - self._read_at.get(tp, 0.0) <= READ_IDLE_SECONDS
            if lately and not self._read_to_end(tp, last):
                behind[tp] = hour
        hold = ahead_of_slowest(behind, self.settings.max_read_skew_hours)
        for tp in hold - self._held:
            hold_fetches(consumer, tp)
            self.stats.reads_held += 1
        for tp in self._held - hold:
            release_fetches(consumer, tp)
        if hold != self._held:
            log.debug("reads_held", held=sorted(f"{tp.topic}:{tp.partition}" for tp in hold))
        self._held = hold

    async def report_progress(self) -> None:
        await self._report_progress(self.settings.kafka_topic_solar, Feed.SOLAR)
        await self._report_progress(self.settings.kafka_topic_weather, Feed.WEATHER)
        self._hold_ahead()  # also when no batch comes: a partition gone idle releases the held ones

    def _read_to_end(self, tp: TP, last: int) -> bool:
        """Whether ``last`` is the last offset of ``tp`` the consumer knows of (from fetch responses: right
        even where ListOffsets is not)."""
        highwater = self.app.consumer.highwater(tp)
        return highwater is not None and last + 1 >= highwater

    def _read_position(self, tp: TP) -> PartitionProgress:
        """How far the ingest has read a raw partition: the latest hour, the next offset and whether that is
        its end, and the lowest hour read since the last commit."""
        consumer = self.app.consumer
        highwater = consumer.highwater(tp)  # from fetch responses: right even where ListOffsets is not
        committed = committed_offsets(consumer).get(tp)
        tracker = self._raw_uncommitted.get(tp)
        uncommitted = None if tracker is None else tracker.lowest(committed)
        last = self._read_offset.get(tp)
        if last is not None:
            next_offset, caught_up = last + 1, self._read_to_end(tp, last)
        else:
            # Nothing read here yet: only a partition the group had read to its end is caught up, and only
            # while nothing of it is on its way to the ingest agent.
            in_flight = read_offsets(consumer).get(tp) is not None
            caught_up = (
                highwater is not None and committed is not None and committed >= highwater and not in_flight
            )
            next_offset = committed or 0
        return PartitionProgress(
            latest_hour=self._read_hour.get(tp),
            caught_up=caught_up,
            next_offset=next_offset,
            uncommitted_hour=uncommitted,
        )

    async def _report_progress(self, topic: str, feed: Feed, reading: set[TP] | None = None) -> None:
        """Tell every records partition how far each raw partition of ``topic`` has been read.

        Sent before a batch's records (the raw partitions in ``reading`` are then not caught up, whatever an
        older report said) and after them, so in each records partition the records sit between the two.
        """
        consumer = self.app.consumer
        partitions: dict[int, PartitionProgress] = {}
        for tp in consumer.assignment():
            if tp.topic == topic:
                progress = self._read_position(tp)
                if reading and tp in reading:
                    progress = replace(progress, caught_up=False)  # records of it are on their way
                partitions[tp.partition] = progress
        count = consumer.topic_partitions(topic)
        if count is None:
            return  # no metadata yet: the next report will say
        value = ProgressReport(feed, count, partitions).encode()
        if value == self._last_report.get(topic):
            return
        self._last_report[topic] = value
        for partition in range(self.settings.topic_partitions):
            send = partial(self.records_topic.send, key=b"", value=value, partition=partition)
            await retrying("progress_send_failed", send)

    async def _dead_letter(self, message: MessageLike, reason: str) -> None:
        """Send a rejected message aside. Retried until it is sent: its offset is acked only after, and a
        letter too large for the broker goes out without the bytes that do not fit (``dead_letter``)."""
        letter = dead_letter(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            reason,
            self.settings.deadletter_max_bytes,
        )
        await retrying(
            "dead_letter_send_failed",
            partial(self.deadletter_topic.send, key=letter.key, value=letter.value, headers=letter.headers),
        )
        self.stats.dead_letter(message.topic, message.partition, message.offset, reason, message.value)
        log.warning(
            "dead_letter",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            size=-1 if message.value is None else len(message.value),
            reason=reason,
            dropped=letter.headers.get("dropped", b"").decode() or None,
        )

    # --- align ----------------------------------------------------------------------------------------------

    async def _on_recovered(self) -> None:
        """After every rebalance's restore: say how long the worker took to get its tables back."""
        if self._recovered_once:
            return
        self._recovered_once = True
        log.info(
            "tables_recovered",
            seconds_since_start=round(time.monotonic() - self._started, 2),
            hour_blocks_kept=len(self.hour_table),
        )

    async def _ensure_loaded(self) -> None:
        """The aligner starts from the tables after every rebalance (and after its helper died)."""
        generation = self.app.consumer_generation_id
        if generation == self._states_generation:
            return
        await self._applying.settled()  # the tables must hold the batch before first
        started = time.perf_counter()
        regions, hours = await self._aligner.run(
            load_aligner,
            list(self.hour_table.items()),
            list(self.region_table.items()),
            list(self.replay_table.items()),
        )
        self._states_generation = generation
        log.info(
            "state_loaded", regions=regions, hours=hours, seconds=round(time.perf_counter() - started, 3)
        )

    async def _align(self, taken: Taken) -> AlignedMessages:
        """One batch through the align step, in its helper; a helper that died is started again from the
        tables, which hold every batch but this one, and the batch is run again."""
        records_topic = self.settings.records_topic
        batch = MessageBatch.of(records_topic, taken.messages)
        committed = committed_offsets(self.app.consumer)
        aligned: list[AlignedMessages] = []

        async def attempt() -> None:
            await self._ensure_loaded()
            at = {p: committed.get(TP(records_topic, p)) for p in set(batch.partitions)}
            try:
                aligned.append(await self._aligner.run(align_messages, batch, at, ROWS_PER_MESSAGE))
            except Exception:
                self._states_generation = None  # its state is gone with it: load again from the tables
                raise

        await retrying("align_step_failed", attempt)
        return aligned[0]

    async def align(self, stream: StreamT[bytes]) -> None:
        """Each batch is computed in the align helper while the batch before it is written, sent and acked
        here (``_apply``): one batch computed and one applied at a time, in order."""
        settings = self.settings
        await overlapped(
            stream,
            settings.ingest_batch_size,
            settings.ingest_batch_max_wait_seconds,
            self._align,
            partial(self._apply, stream),
            self._applying,
            self._holes,
        )

    async def _apply(self, stream: StreamT[bytes], taken: Taken, batch: AlignedMessages) -> None:
        """An aligned batch's table writes and rows messages, then its acks."""
        self.stats.late += batch.late
        self.stats.rows_emitted += batch.rows_count
        self._records_kept = batch.records_kept
        last_event = taken.last_events()
        for partition, writes in batch.writes.items():
            # Table writes go to the changelog partition of the current event: here, this partition's.
            with writing_in(last_event[partition]):
                for name, key, value in writes:
                    table = self._tables[name]
                    if value is None:
                        table.pop(key, None)
                    else:
                        table[key] = value
        for partition, messages in batch.rows.items():
            for value in messages:
                await retrying(
                    "rows_send_failed",
                    partial(self.rows_topic.send, key=None, value=value, partition=partition),
                )
        # Only now, with the tables and rows of the whole batch on their way, may its offsets commit.
        await taken.ack(stream)

    # --- write ----------------------------------------------------------------------------------------------

    async def write(self, stream: StreamT[bytes]) -> None:
        settings = self.settings
        taking = batches(stream, settings.batch_size, settings.batch_max_wait_seconds, self._holes)
        async for taken in taking:
            await self.write_rows(MessageBatch.of(settings.rows_topic, taken.messages))
            # Only now may the offsets behind these rows be committed.
            await taken.ack(stream)

    async def write_rows(self, batch: MessageBatch) -> None:
        """Write the rows of a batch of rows messages (``sink.write_messages``, in the sink's helper),
        retrying with backoff until it succeeds; each retry is logged once."""

        async def attempt() -> None:
            try:
                written = await self._sink.run(write_messages, batch, self.settings.batch_size)
            except Exception:
                self.stats.write_failures += 1
                raise
            for rows, seconds in written:
                self.stats.observe_write(rows, seconds)

        await retrying("sink_write_failed", attempt, self.settings.db_retry_max_seconds)

    async def log_progress(self) -> None:
        """One line every few seconds while work flows, so long backfills show where they are."""
        fields = self.stats_fields()
        snapshot = tuple(str(v) for v in fields.values())
        if snapshot == self._last_progress:
            return
        self._last_progress = snapshot
        log.info("progress", **fields, rss_mib=resident_mib())

    # --- caught up? -----------------------------------------------------------------------------------------

    def lag(self) -> dict[TP, int | None]:
        """Messages not yet committed per source partition of this worker; None while its end is unknown.

        The end is the high-water mark of fetch responses, not ListOffsets (wrong on some brokers), and
        "committed" means processed through to the sink: the writer commits only after the write.
        """
        consumer = self.app.consumer
        committed = committed_offsets(consumer)
        sources = {
            self.settings.kafka_topic_solar,
            self.settings.kafka_topic_weather,
            self.settings.records_topic,
            self.settings.rows_topic,
        }
        out: dict[TP, int | None] = {}
        for tp in consumer.assignment():
            if tp.topic in sources:
                highwater = consumer.highwater(tp)
                out[tp] = None if highwater is None else max(0, highwater - (committed.get(tp) or 0))
        return out

    async def exit_when_caught_up(self) -> None:
        """Backfill mode: once every source partition is processed to its end and written, say so and stop."""
        lag = self.lag()
        if not lag or any(v != 0 for v in lag.values()):
            self._caught_up_checks = 0
            return
        self._caught_up_checks += 1
        if self._caught_up_checks < 3:  # the same answer three times in a row, a second apart
            return
        await self._sink.run(FeatureSink.flush)
        # The real stdout: the worker redirects print() into its log.
        out = sys.__stdout__ or sys.stderr
        out.write(self.summary())
        out.flush()
        log.info("backfill_done", **self.stats_fields())
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop: commit, close, exit 0

    def stats_fields(self) -> dict[str, Any]:
        s = self.stats
        return {
            "ingested": dict(s.ingested),
            "dead_letters": sum(s.dead_letters.values()),
            "late": s.late,
            "reads_held": s.reads_held,
            "records_read_again": s.records_read_again,
            "offsets_absent": s.offsets_absent,
            "rows_emitted": s.rows_emitted,
            "rows_written": s.rows_written,
            "write_failures": s.write_failures,
            # What the aligner holds in memory: bounded by retention, whatever the history's length.
            "records_kept": self._records_kept,
        }

    def summary(self) -> str:
        s = self.stats
        seconds = time.monotonic() - self._started
        read = sum(s.ingested.values()) + sum(s.dead_letters.values())
        lines = ["", "backfill done", f"  {'elapsed':<24}{seconds:,.1f} s"]
        for topic in (self.settings.kafka_topic_solar, self.settings.kafka_topic_weather):
            lines.append(f"  {'read ' + topic:<24}{s.ingested[topic] + s.dead_letters[topic]:,}")
        lines += [
            f"  {'dead letters':<24}{sum(s.dead_letters.values()):,}  ({self.settings.deadletter_topic})",
            f"  {'late records':<24}{s.late:,}",
            f"  {'rows written':<24}{s.rows_written:,}  ({self.settings.features_table})",
            f"  {'rate':<24}{read / seconds if seconds else 0:,.0f} messages/s",
            "",
        ]
        return "\n".join(lines)

    async def close(self, _sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """On worker shutdown: close the database connection, then stop the helpers."""
        with contextlib.suppress(Exception):  # a helper that died has nothing left to close
            await self._sink.run(FeatureSink.close)
        await asyncio.gather(*(h.close() for h in (self._sink, self._parser, self._aligner)))
        await self._reader.close()

    # --- read-only views (web) ------------------------------------------------------------------------------

    def region_states(self) -> dict[str, RegionHours]:
        """Every region's kept hours on this worker, from the tables: after each batch they hold what the
        align step holds (its helper's memory is not this process's), and during a recovery what is back."""
        return read_states(decoded(self.hour_table), decoded(self.region_table))[0]


def resident_mib() -> float | None:
    """This process's resident memory now, in MiB (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def decoded(table: TableT[str, bytes]) -> Iterator[tuple[str, Any]]:
    """A table's entries, values decoded."""
    return ((key, table_value(value)) for key, value in table.items())


def topology(app: faust.App, pipeline: Pipeline) -> None:
    """The agents and timers of the app, as the picture at the top of this module draws them."""
    p = pipeline
    app.task(p.start)
    app.agent(p.solar_topic, name="ingest_solar")(p.ingest_solar)  # solar raw -> records
    app.agent(p.weather_topic, name="ingest_weather")(p.ingest_weather)  # weather raw -> records
    app.agent(p.records_topic, name="align")(p.align)  # records -> hour tables + rows
    app.agent(p.rows_topic, name="write")(p.write)  # rows -> database
    # Progress reports also go out on a timer, so an idle or empty raw topic still tells it is caught up
    # (and held reads are looked at again).
    app.timer(2.0, name="report_progress")(p.report_progress)
    app.timer(10.0, name="progress")(p.log_progress)
    if p.settings.exit_when_caught_up:
        app.timer(1.0, name="exit_when_caught_up")(p.exit_when_caught_up)
    app.on_before_shutdown.connect(p.close)
