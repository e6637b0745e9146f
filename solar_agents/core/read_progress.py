"""The ingest's read progress as the align agent learns it: the control messages of the records topic.

The ingest agents tell every records partition how far they have read each raw partition (a progress
report); the replay command tells them which raw partitions it moved back (a replay marker). Both are control
messages of the records topic: an empty key (a region has 1-64 characters) and a JSON object with a "type".

Pure: no Kafka, no database. Hours are integer hours since the epoch, as in ``hours``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

K = TypeVar("K")

# A raw partition that has not told how far it is may still hold anything: it holds every watermark back.
NOT_YET_READ = -(10**12)


class Feed(StrEnum):
    """A raw topic of the service, one half of an hour. The value is its name wherever a message or a table
    value names it: records messages, block values, control messages."""

    SOLAR = "solar"
    WEATHER = "weather"


@dataclass(frozen=True, slots=True, order=True)
class RawPartition:
    """One partition of a raw topic."""

    feed: Feed
    partition: int


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """How far the ingest has read one raw partition."""

    latest_hour: int | None  # the latest hour of a valid record read; None: none read yet
    caught_up: bool  # read to its end
    next_offset: int = 0  # the next offset the ingest reads
    # The lowest hour of the records read but not committed yet: what a crash would bring back.
    uncommitted_hour: int | None = None


# --- progress reports ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgressReport:
    """A report of the ingest on one raw topic: how many partitions it has, and how far this worker has read
    those it reads (by partition number)."""

    feed: Feed
    count: int
    partitions: Mapping[int, PartitionProgress]

    def encode(self) -> bytes:
        return _dumps(
            {
                "type": "progress",
                "feed": self.feed.value,
                "count": self.count,
                "partitions": [
                    {
                        "partition": partition,
                        "latest_hour": report.latest_hour,
                        "caught_up": report.caught_up,
                        "next_offset": report.next_offset,
                        "uncommitted_hour": report.uncommitted_hour,
                    }
                    for partition, report in sorted(self.partitions.items())
                ],
            }
        )

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> ProgressReport:
        partitions: dict[int, PartitionProgress] = {}
        for entry in data["partitions"]:
            partitions[entry["partition"]] = PartitionProgress(
                latest_hour=entry["latest_hour"],
                caught_up=entry["caught_up"],
                next_offset=entry["next_offset"],
                uncommitted_hour=entry["uncommitted_hour"],
            )
        return cls(Feed(data["feed"]), data["count"], partitions)


@dataclass(slots=True)
class FeedProgress:
    """How far the ingest has read each raw partition, in event time, as one records partition saw it.

    A consumer reads partitions at different speeds: in a backfill one partition can be months ahead of
    another, and records still unread in the slow one are not late in any sense a user means. So the
    watermark of a region is also held below the progress of every raw partition not yet read to its end.
    """

    partitions: dict[RawPartition, PartitionProgress] = field(default_factory=dict)
    counts: dict[Feed, int] = field(default_factory=dict)  # partitions of each raw topic
    # ``floor()`` as last worked out; cleared by every change. The align step asks for it for every region
    # of every message, and working it out over every raw partition was half its time at 5,000 regions.
    _floor: tuple[int | None] | None = field(default=None, repr=False, compare=False)

    def set_count(self, feed: Feed, count: int) -> bool:
        if self.counts.get(feed) == count:
            return False
        self.counts[feed] = count
        self._floor = None
        return True

    def update(self, raw: RawPartition, progress: PartitionProgress) -> bool:
        """Record a partition's progress (the latest wins: a replay moves it back); returns whether it
        changed."""
        if self.partitions.get(raw) == progress:
            return False
        self.partitions[raw] = progress
        self._floor = None
        return True

    def apply(self, report: ProgressReport) -> bool:
        """Record a report of the ingest; returns whether anything changed."""
        changed = self.set_count(report.feed, report.count)
        for partition, progress in report.partitions.items():
            changed = self.update(RawPartition(report.feed, partition), progress) or changed
        return changed

    def restart(self, starts: Mapping[RawPartition, int]) -> None:
        """A replay moved these partitions back to ``starts``: they are read again from there, and nothing is
        known of them until the ingest reports again."""
        for raw, start in starts.items():
            self.update(raw, PartitionProgress(latest_hour=None, caught_up=False, next_offset=start))

    def offset(self, raw: RawPartition) -> int | None:
        """The next offset the ingest reads in ``raw``; None before its first report."""
        progress = self.partitions.get(raw)
        return None if progress is None else progress.next_offset

    def floor(self) -> int | None:
        """The lowest hour a raw partition still being read may deliver; None when all are caught up.

        A feed, or a partition of it, that has not reported yet may hold anything: NOT_YET_READ.
        """
        if self._floor is None:
            self._floor = (self._lowest(),)
        return self._floor[0]

    def _lowest(self) -> int | None:
        lowest: int | None = None
        for feed in Feed:
            count = self.counts.get(feed)
            if count is None:
                return NOT_YET_READ
            for partition in range(count):
                progress = self.partitions.get(RawPartition(feed, partition))
                if progress is not None and progress.caught_up:
                    continue
                if progress is None or progress.latest_hour is None:
                    return NOT_YET_READ
                lowest = progress.latest_hour if lowest is None else min(lowest, progress.latest_hour)
        return lowest

    def uncommitted(self) -> int | None:
        """The lowest hour a crash of the ingest could deliver again; None when all read is committed."""
        hours = [p.uncommitted_hour for p in self.partitions.values() if p.uncommitted_hour is not None]
        return min(hours) if hours else None


def ahead_of_slowest(behind: Mapping[K, int], max_skew_hours: int) -> set[K]:
    """The partitions to stop fetching for now: of those with records left to read (``behind``: partition ->
    the latest hour read of it), each more than ``max_skew_hours`` past the slowest one.

    The align step keeps every hour above the slowest partition's (``FeedProgress.floor``), so a read that
    lets one partition run months ahead of another keeps months of records in memory. Holding the ones ahead
    reads a backlog in event-time order, within the skew; the slowest is never held, so the read always
    moves on. Partitions read to their end (live input) are never held: there is nothing to fetch there.
    """
    if len(behind) < 2:
        return set()
    limit = min(behind.values()) + max_skew_hours
    return {partition for partition, hour in behind.items() if hour > limit}


# --- replays ------------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Replay:
    """A replay in progress in one records partition: rows before ``from_hour`` (of ``region``, or of all)
    are history only, not rewritten, until the ingest has read every moved raw partition up to ``until``.

    Rows before the replay's start would be computed from a window cut short; they were right already.
    """

    from_hour: int | None
    region: str | None
    until: Mapping[RawPartition, int]  # the offset the ingest must reach in each moved raw partition

    def done(self, progress: FeedProgress) -> bool:
        for raw, end in self.until.items():
            offset = progress.offset(raw)
            if offset is None or offset < end:
                return False
        return True

    def covers(self, region: str) -> bool:
        """Whether the replay reads this region's history again (a replay of one region moves the offsets
        to that region's records: the others' are read again only from there on)."""
        return self.region in (None, region)

    def hides(self, region: str, hour: int) -> bool:
        return self.from_hour is not None and hour < self.from_hour and self.covers(region)


@dataclass(slots=True, frozen=True)
class ReplayMarker:
    """The replay command's message: the replay, and where each moved raw partition now starts."""

    replay: Replay
    starts: Mapping[RawPartition, int]

    def encode(self) -> bytes:
        replay = self.replay
        return _dumps(
            {
                "type": "replay",
                "from": replay.from_hour,
                "region": replay.region,
                "moved": [
                    {**_raw_json(raw), "start": self.starts[raw], "until": end}
                    for raw, end in sorted(replay.until.items())
                ],
            }
        )

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> ReplayMarker:
        until: dict[RawPartition, int] = {}
        starts: dict[RawPartition, int] = {}
        for entry in data["moved"]:
            raw = _raw(entry)
            until[raw], starts[raw] = entry["until"], entry["start"]
        return cls(Replay(data["from"], data["region"], until), starts)


def replay_value(replay: Replay) -> dict[str, Any]:
    """Value of the replays table: the replay in progress of one records partition."""
    return {
        "from": replay.from_hour,
        "region": replay.region,
        "until": [{**_raw_json(raw), "offset": end} for raw, end in sorted(replay.until.items())],
    }


def load_replay(value: Mapping[str, Any]) -> Replay:
    until: dict[RawPartition, int] = {}
    for entry in value["until"]:
        until[_raw(entry)] = entry["offset"]
    return Replay(value["from"], value["region"], until)


# --- control messages ---------------------------------------------------------------------------------------


def decode_control(value: bytes) -> ProgressReport | ReplayMarker | None:
    """A control message of the records topic; None for a type this version does not know (ignored, so
    that a newer producer of control messages does not stop an older worker)."""
    data: dict[str, Any] = json.loads(value)
    kind = data.get("type")
    if kind == "progress":
        return ProgressReport.decode(data)
    if kind == "replay":
        return ReplayMarker.decode(data)
    return None


def _raw_json(raw: RawPartition) -> dict[str, Any]:
    return {"feed": raw.feed.value, "partition": raw.partition}


def _raw(entry: Mapping[str, Any]) -> RawPartition:
    return RawPartition(Feed(entry["feed"]), entry["partition"])


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
