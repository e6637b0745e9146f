"""How far the ingest has read each raw partition: told to the align step as progress reports, and used to
hold back raw partitions read too far ahead of the slowest (``MAX_READ_SKEW_HOURS``)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import replace
from functools import partial

import faust
from faust.types import TP

from solar_agents.core.hours import Uncommitted
from solar_agents.core.read_progress import Feed, PartitionProgress, ProgressReport, ahead_of_slowest
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import retrying
from solar_agents.runtime.faust_compat import (
    committed_offsets,
    hold_fetches,
    read_offsets,
    release_fetches,
)
from solar_agents.settings import Settings
from solar_agents.steps.ingest import IngestedMessages

log = get_logger(__name__)

# A raw partition with a backlog that delivered nothing for this long no longer holds others back.
READ_IDLE_SECONDS = 5.0


class ReadTracker:
    """The ingest's read position per raw partition, its progress reports and its read holds."""

    def __init__(self, app: faust.App, settings: Settings, records_topic: faust.TopicT, stats: Stats) -> None:
        self.app = app
        self.settings = settings
        self.records_topic = records_topic
        self.stats = stats
        # What a crash of the ingest would bring back: records read but not committed, per raw partition.
        # Retention keeps the history they need.
        self._uncommitted: dict[TP, Uncommitted] = defaultdict(Uncommitted)
        # The latest valid hour and offset read from each raw partition by this process.
        self._hour: dict[TP, int] = {}
        self._offset: dict[TP, int] = {}
        self._at: dict[TP, float] = {}  # monotonic time of the latest batch read of a raw partition
        self._held: set[TP] = set()  # raw partitions whose fetches wait for the slowest (hold_ahead)
        self._held_generation: int | None = None
        self._last_report: dict[str, bytes] = {}

    def feeds(self) -> tuple[tuple[str, Feed], tuple[str, Feed]]:
        return (self.settings.kafka_topic_solar, Feed.SOLAR), (
            self.settings.kafka_topic_weather,
            Feed.WEATHER,
        )

    def reading(self, topic: str, batch: IngestedMessages) -> set[TP]:
        """A parsed batch is about to be sent on: what a crash would bring back grows by it. Returns its
        raw partitions, which are not read to their end while its records are on their way."""
        for partition, low in batch.lowest_hour.items():
            self._uncommitted[TP(topic, partition)].add(batch.last_offset[partition], low)
        return {TP(topic, partition) for partition in batch.last_offset}

    def read(self, topic: str, batch: IngestedMessages) -> None:
        """A batch's records are on their way: progress counts it from now on."""
        now = time.monotonic()
        for partition, offset in batch.last_offset.items():
            self._offset[TP(topic, partition)] = offset
            self._at[TP(topic, partition)] = now
        for partition, hour in batch.latest_hour.items():
            tp = TP(topic, partition)
            self._hour[tp] = max(hour, self._hour.get(tp, hour))

    async def report_all(self) -> None:
        """On a timer too, so an idle or empty raw topic still tells it is caught up."""
        for topic, feed in self.feeds():
            await self.report(topic, feed)
        self.hold_ahead()  # also when no batch comes: a partition gone idle releases the held ones

    async def report(self, topic: str, feed: Feed, reading: set[TP] | None = None) -> None:
        """Tell every records partition how far each raw partition of ``topic`` has been read.

        Sent before a batch's records (the raw partitions in ``reading`` are then not caught up, whatever an
        older report said) and after them, so in each records partition the records sit between the two.
        """
        consumer = self.app.consumer
        partitions: dict[int, PartitionProgress] = {}
        for tp in consumer.assignment():
            if tp.topic == topic:
                progress = self._position(tp)
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
            await retrying("progress_send_failed", send, self.stats.retrying)

    def hold_ahead(self) -> None:
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
            hour, last = self._hour.get(tp), self._offset.get(tp)
            if tp.topic not in raw or hour is None or last is None:
                continue
            lately = tp in self._held or now - self._at.get(tp, 0.0) <= READ_IDLE_SECONDS
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

    def ingested_to_end(self) -> bool:
        """Every assigned raw partition ingested to its end: its records on their way to the records topic,
        none fetched and waiting for the ingest agent or in a batch being parsed. A partition this process
        has ingested nothing of is at its end when the group's committed offset is (an empty one always),
        and nothing of it has been read."""
        consumer = self.app.consumer
        topics = {topic for topic, _ in self.feeds()}
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        except Exception:  # not started yet, or between generations
            return False
        committed, read = committed_offsets(consumer), read_offsets(consumer)
        for tp in assigned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                return False
            last = self._offset.get(tp)
            if last is not None:
                if last + 1 < highwater:
                    return False
            elif read.get(tp) is not None or (committed.get(tp) or 0) < highwater:
                return False
        return True

    def _read_to_end(self, tp: TP, last: int) -> bool:
        """Whether ``last`` is the last offset of ``tp`` the consumer knows of (from fetch responses: right
        even where ListOffsets is not)."""
        highwater = self.app.consumer.highwater(tp)
        return highwater is not None and last + 1 >= highwater

    def _position(self, tp: TP) -> PartitionProgress:
        """How far the ingest has read a raw partition: the latest hour, the next offset and whether that is
        its end, and the lowest hour read since the last commit."""
        consumer = self.app.consumer
        highwater = consumer.highwater(tp)  # from fetch responses: right even where ListOffsets is not
        committed = committed_offsets(consumer).get(tp)
        tracker = self._uncommitted.get(tp)
        uncommitted = None if tracker is None else tracker.lowest(committed)
        last = self._offset.get(tp)
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
            latest_hour=self._hour.get(tp),
            caught_up=caught_up,
            next_offset=next_offset,
            uncommitted_hour=uncommitted,
        )
