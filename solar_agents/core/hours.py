"""Hour alignment and per-region hour state: which record counts for an hour, watermark, retention.

Pure logic: no Kafka, no database. Time is integer microseconds since the epoch; an hour is the integer
number of hours since the epoch (``hour * 3600`` is its start in epoch seconds).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime

HOUR_US = 3_600_000_000
HALF_HOUR_US = HOUR_US // 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Years 1 to 9999, what a datetime (and so a TIMESTAMPTZ column read back in Python) can hold.
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999


class InvalidTimestamp(ValueError):
    """The value is neither an ISO 8601 string nor epoch seconds."""


def to_micros(value: object) -> int:
    """Microseconds since the epoch of an ISO 8601 string (no offset means UTC) or of epoch seconds."""
    if isinstance(value, bool):  # bool is an int in Python, never a time
        raise InvalidTimestamp("is a boolean, not an ISO 8601 string or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidTimestamp("is not a finite number")
        scaled = value * 1_000_000
        if not math.isfinite(scaled):
            raise InvalidTimestamp(f"epoch seconds out of range: {value}")
        us = round(scaled)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidTimestamp(f"is not an ISO 8601 time: {value[:40]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - _EPOCH
        us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    else:
        raise InvalidTimestamp(f"is a {type(value).__name__}, not an ISO 8601 string or epoch seconds")
    # The hour must be a storable time too: 9999-12-31T23:45 would round into year 10000.
    if not _MIN_US <= us <= _MAX_US or nearest_hour(us)[0] * HOUR_US > _MAX_US:
        raise InvalidTimestamp(f"out of range (years 1 to 9999): {str(value)[:40]}")
    return us


def nearest_hour(us: int) -> tuple[int, int]:
    """The hour nearest ``us`` (exactly half past rounds up) and the distance to it in microseconds."""
    hour = (us + HALF_HOUR_US) // HOUR_US
    return hour, abs(us - hour * HOUR_US)


def hour_start(hour: int) -> datetime:
    """The hour's start as an aware UTC datetime."""
    return datetime.fromtimestamp(hour * 3600, tz=UTC)


def hour_label(hour: int) -> str:
    """``2019-01-01T05:00Z``: how an hour is shown to people."""
    return hour_start(hour).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(slots=True, frozen=True)
class Retention:
    """What a region keeps of its history, by event time only: the one rule that align (which forgets) and
    the web view (which tells which rows it can still compute exactly) share.

    A row reads ``reach`` hours back (its longest window or lag, from the feature set), and a record up to
    ``lateness_hours`` behind the watermark must still find the history of the rows it touches: so a region
    keeps ``hours`` (lateness plus reach) behind its watermark, and further back where records that may be
    read again need it.
    """

    reach: int
    lateness_hours: int

    @property
    def hours(self) -> int:
        """How many hours behind the watermark are kept."""
        return self.lateness_hours + self.reach

    def history_from(self, hour: int) -> int:
        """The oldest hour the row of ``hour`` reads (later rows read no further back)."""
        return hour - self.reach

    def horizon(self, watermark: int | None, keep_from: int | None = None) -> int | None:
        """The oldest hour kept behind ``watermark``, never above ``keep_from``; None while there is no
        watermark (nothing is forgotten then)."""
        if watermark is None:
            return None
        horizon = watermark - self.hours
        return horizon if keep_from is None else min(horizon, keep_from)

    def history_kept(self, hour: int, horizon: int | None) -> bool:
        """Whether the row of ``hour`` reads only hours at or after ``horizon`` (None: nothing forgotten)."""
        return horizon is None or self.history_from(hour) >= horizon


@dataclass(slots=True, frozen=True)
class Position:
    """Where a record stood in its raw topic, and how far its time was from its hour."""

    distance_us: int
    offset: int
    partition: int

    def beats(self, other: Position) -> bool:
        """SPEC: the nearest to the hour wins; between equally near, the later in its partition.

        Across partitions (unkeyed producers) "later" has no meaning: the greater partition decides, so the
        choice is still a function of the set of records. An exact duplicate never beats its original's
        position, and replacing a record with an identical one changes nothing anyway.
        """
        if self.distance_us != other.distance_us:
            return self.distance_us < other.distance_us
        if self.offset != other.offset:
            return self.offset > other.offset
        return self.partition > other.partition


@dataclass(slots=True, frozen=True)
class Solar:
    """The solar half of an hour."""

    hour: int
    position: Position
    production_mw: float


@dataclass(slots=True, frozen=True)
class Weather:
    """The weather half of an hour; None means not observed."""

    hour: int
    position: Position
    temperature_c: float | None
    cloud_cover_pct: float | None
    solar_radiation_wm2: float | None
    latitude: float
    longitude: float


Record = Solar | Weather


def same_reading(kept: Record, record: Record) -> bool:
    """Whether ``record`` says exactly what ``kept`` says, as near its hour: an exact duplicate, wherever it
    stands in the log (a message produced twice has two offsets)."""
    return (
        kept.position.distance_us == record.position.distance_us
        and replace(record, position=kept.position) == kept
    )


class Uncommitted:
    """The lowest hour among records read from one partition at offsets not committed yet.

    After a crash the consumer reads again from the committed offset, so these records come back, and the
    history their rows need must still be kept. Entries are (last offset, lowest hour) with hours rising
    left to right: an entry behind a later one with a lower hour can never be the answer.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: deque[tuple[int, int]] = deque()

    def add(self, offset: int, hour: int) -> None:
        entries = self._entries
        while entries and entries[-1][0] >= offset:  # read again from an earlier offset
            entries.pop()
        while entries and entries[-1][1] >= hour:
            entries.pop()
        entries.append((offset, hour))

    def lowest(self, committed: int | None) -> int | None:
        """The lowest hour read at or after ``committed`` (the next offset the group would read)."""
        entries = self._entries
        if committed is not None:
            while entries and entries[0][0] < committed:
                entries.popleft()
        return entries[0][1] if entries else None


@dataclass(slots=True)
class Applied:
    """What one batch of records did to a region's state."""

    solar_hours: set[int] = field(default_factory=set)  # hours whose solar record is (again) the best
    weather_hours: set[int] = field(default_factory=set)
    late: int = 0  # records older than the watermark minus the allowed lateness
    # Of those, the hours where the record was the very one already kept: a duplicate, or a record read
    # again after a crash.
    repeated_solar: set[int] = field(default_factory=set)
    repeated_weather: set[int] = field(default_factory=set)

    @property
    def hours(self) -> set[int]:
        return self.solar_hours | self.weather_hours


@dataclass(slots=True)
class RegionHours:
    """The kept hours of one region: the chosen solar and weather record per hour, and the watermark.

    ``latest_solar`` / ``latest_weather`` are the latest hours ever seen, kept with the state so that the
    watermark survives restarts and retention.
    """

    region: str
    solar: dict[int, Solar] = field(default_factory=dict)
    weather: dict[int, Weather] = field(default_factory=dict)
    latest_solar: int | None = None
    latest_weather: int | None = None
    # History below this hour may have been pruned: rows that read it are no longer computed exactly.
    pruned_below: int | None = None
    # Position (in its records partition) of the last batch applied: a batch at or before it is read again
    # after a restart, and must find the history it found the first time.
    applied_through: int | None = None
    # The last prune's horizon: the next prune only looks at the hours since (it can be below pruned_below
    # while history is held back for records that may be read again).
    scan_from: int | None = None

    def snapshot(self) -> dict[str, int | None]:
        """Every field but the kept hours (the hour table holds those, a day a value): what a restart must
        get back to behave as if it never happened. New fields are included without being named here."""
        return {name: getattr(self, name) for name in _SNAPSHOT_FIELDS}

    @classmethod
    def restore(cls, region: str, snapshot: dict[str, int | None]) -> RegionHours:
        """The region as ``snapshot`` left it, its hours still to be loaded."""
        state = cls(region)
        for name in _SNAPSHOT_FIELDS:
            setattr(state, name, snapshot.get(name))
        return state

    @property
    def watermark(self) -> int | None:
        """SPEC: the smaller of the latest solar hour and the latest weather hour."""
        if self.latest_solar is None or self.latest_weather is None:
            return None
        return min(self.latest_solar, self.latest_weather)

    def effective_watermark(self, floor: int | None = None) -> int | None:
        """The watermark, held below ``floor`` (the progress of raw partitions still being read)."""
        watermark = self.watermark
        if watermark is None or floor is None:
            return watermark
        return min(watermark, floor)

    def apply(
        self,
        records: list[Record],
        lateness_hours: int,
        floor: int | None = None,
        floors: list[tuple[int, int | None]] | None = None,
    ) -> Applied:
        """Fold records in. A record that is (again) the best for its hour is reported as applied.

        Re-reporting an identical record matters: after a crash the same records come again, and their table
        entries and rows must be written again in case the first writes were lost with the process.

        ``floors``: records of several messages, each message's (first index, floor when it was read). A
        record is then late as it was when its own message came, against the watermark of the records
        before it and that message's floor, not the batch's last (which counted records late that the floor
        had held on time).
        """
        applied = Applied()
        starts = dict(floors or [(0, floor)])
        watermark = None
        for index, record in enumerate(records):
            if index in starts:
                watermark = self.effective_watermark(starts[index])
            hour = record.hour
            if watermark is not None and hour < watermark - lateness_hours:
                applied.late += 1
            if isinstance(record, Solar):
                current_solar = self.solar.get(hour)
                if current_solar is None or not current_solar.position.beats(record.position):
                    if current_solar is not None and same_reading(current_solar, record):
                        applied.repeated_solar.add(hour)
                    self.solar[hour] = record
                    applied.solar_hours.add(hour)
                if self.latest_solar is None or hour > self.latest_solar:
                    self.latest_solar = hour
            else:
                current_weather = self.weather.get(hour)
                if current_weather is None or not current_weather.position.beats(record.position):
                    if current_weather is not None and same_reading(current_weather, record):
                        applied.repeated_weather.add(hour)
                    self.weather[hour] = record
                    applied.weather_hours.add(hour)
                if self.latest_weather is None or hour > self.latest_weather:
                    self.latest_weather = hour
        return applied

    def horizon(
        self, retention: Retention, floor: int | None = None, keep_from: int | None = None
    ) -> int | None:
        """The oldest hour still kept, or None while there is no watermark; never above ``keep_from``."""
        return retention.horizon(self.effective_watermark(floor), keep_from)

    def prune(
        self,
        retention: Retention,
        floor: int | None = None,
        touched: Iterable[int] = (),
        keep_from: int | None = None,
    ) -> list[int]:
        """Forget hours older than the horizon (event time, never the wall clock); return them.

        ``keep_from`` holds history that records which may still be read again need. Costs the hours the
        horizon moved over (plus ``touched``, where a late record may have put one back below it), not the
        size of the state.
        """
        horizon = self.horizon(retention, floor, keep_from)
        if horizon is None:
            return []
        start = self.scan_from
        candidates: Iterable[int]
        if start is None or horizon - start > len(self.solar) + len(self.weather):
            candidates = set(self.solar) | set(self.weather)
        else:
            candidates = range(start, horizon)
        self.scan_from = horizon
        if self.pruned_below is None or horizon > self.pruned_below:
            self.pruned_below = horizon
        old = {h for h in candidates if h < horizon} | {h for h in touched if h < horizon}
        gone = []
        for hour in old:
            had_solar = self.solar.pop(hour, None) is not None
            if self.weather.pop(hour, None) is not None or had_solar:
                gone.append(hour)
        return sorted(gone)


# The scalar fields of a region's state: everything but its name and its hours.
_SNAPSHOT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(RegionHours) if f.name not in ("region", "solar", "weather")
)
