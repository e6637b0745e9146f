"""The declared feature set: which aggregate columns a row has, each one line of kind, field and hours.

SPEC's own feature columns are declared here too (``builtin``); a user file (``FEATURES_FILE``, TOML) adds
features or redefines SPEC's by name. Everything that depends on the features derives from the set: the row
type, the DDL, the rows messages, the hours a record affects, and retention (the longest reach). Pure: the
file is read by the caller and handed in as text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from solar_agents.core.hours import Retention

Kind = Literal["mean", "sum", "min", "max", "count", "lag"]
KINDS: tuple[str, ...] = get_args(Kind)
# The fields a feature may read, and the half of the hour each comes from.
INPUT_FIELDS: dict[str, str] = {
    "production_mw": "solar",
    "temperature_c": "weather",
    "cloud_cover_pct": "weather",
    "solar_radiation_wm2": "weather",
}
MAX_HOURS = 8784  # a leap year
# Columns of every row that are not declared features: a feature may not take their names.
BASE_COLUMNS: tuple[str, ...] = (
    "region",
    "timestamp",
    "hour",
    "production_mw",
    "temperature_c",
    "cloud_cover_pct",
    "solar_radiation_wm2",
    "latitude",
    "longitude",
    "hour_of_day",
    "day_of_week",
    "is_weekend",
)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class FeatureFileError(ValueError):
    """A feature file that cannot be used; ``str()`` is one line naming the file, the entry, the problem."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One declared column: ``kind`` of ``field`` over the ``hours`` clock hours up to the row's hour (a
    window), or ``field`` ``hours`` hours before it (a lag)."""

    name: str
    kind: Kind
    field: str
    hours: int

    @property
    def is_lag(self) -> bool:
        return self.kind == "lag"

    @property
    def reach(self) -> int:
        """How many hours before the row's hour it reads."""
        return self.hours if self.is_lag else self.hours - 1

    @property
    def sql_type(self) -> str:
        return "INTEGER" if self.kind == "count" else "DOUBLE PRECISION"

    @property
    def python_type(self) -> str:
        return "int" if self.kind == "count" else "float | None"

    def definition(self) -> str:
        """``mean(production_mw, 24 h)``: how a definition is shown to people."""
        return f"{self.kind}({self.field}, {self.hours} h)"

    def offsets(self) -> range:
        """The rows that read an input of hour h are those of h + each offset."""
        return range(self.hours, self.hours + 1) if self.is_lag else range(self.hours)


def builtin(window_hours: int) -> tuple[Feature, ...]:
    """SPEC's feature columns, in SPEC's order; ``window_hours`` is ``FEATURE_WINDOW_HOURS``."""
    return (
        Feature("production_ma_24h", "mean", "production_mw", window_hours),
        Feature("temperature_ma_24h", "mean", "temperature_c", window_hours),
        Feature("cloud_cover_ma_24h", "mean", "cloud_cover_pct", window_hours),
        Feature("production_lag_1h", "lag", "production_mw", 1),
        Feature("production_lag_24h", "lag", "production_mw", 24),
    )


# SPEC's feature columns, in its order.
SPEC_FEATURES: tuple[str, ...] = tuple(f.name for f in builtin(24))


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """The features of a row, in column order: SPEC's (some maybe redefined), then the user's added ones."""

    features: tuple[Feature, ...]
    # For each half (solar, weather), how many hours later the rows that read an hour of it are, as runs of
    # consecutive shifts (first, last): asked for every region of every batch, so worked out once.
    _shifts: tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        offsets: dict[str, set[int]] = {half: {0} for half in ("solar", "weather")}
        for f in self.features:
            offsets[INPUT_FIELDS[f.field]].update(f.offsets())
        shifts = (_runs(offsets["solar"]), _runs(offsets["weather"]))
        object.__setattr__(self, "_shifts", shifts)  # frozen

    @classmethod
    def of(cls, window_hours: int, user: Iterable[Feature] = ()) -> FeatureSet:
        """SPEC's set with ``user``'s features: one of SPEC's names redefines that column in place, any other
        is added after them."""
        added = {feature.name: feature for feature in user}
        spec = tuple(added.pop(f.name, f) for f in builtin(window_hours))
        return cls(spec + tuple(added.values()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def reach(self) -> int:
        """How far back the rows read: the longest window or lag."""
        return max((f.reach for f in self.features), default=0)

    def retention(self, lateness_hours: int) -> Retention:
        """What a region keeps of its history for these features: lateness plus the longest reach."""
        return Retention(self.reach, lateness_hours)

    def by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def affected_hours(self, solar_hours: Iterable[int], weather_hours: Iterable[int]) -> set[int]:
        """Rows that depend on the given halves: their own hour (a row needs both halves), and the later
        hours whose windows or lags read them."""
        out: set[int] = set()
        for hours, runs in ((solar_hours, self._shifts[0]), (weather_hours, self._shifts[1])):
            ordered = sorted(set(hours))
            for first, last in runs:
                # Each hour's reach overlaps the previous one's: only what it adds is added.
                done = None
                for hour in ordered:
                    start = hour + first if done is None else max(hour + first, done + 1)
                    done = hour + last
                    out.update(range(start, done + 1))
        return out


def _runs(shifts: set[int]) -> tuple[tuple[int, int], ...]:
    """``shifts`` as runs of consecutive numbers: {0, 1, 2, 5} -> ((0, 2), (5, 5))."""
    runs: list[tuple[int, int]] = []
    for shift in sorted(shifts):
        if runs and shift == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], shift)
        else:
            runs.append((shift, shift))
    return tuple(runs)


def parse(text: str, source: str, window_hours: int) -> FeatureSet:
    """The set of a feature file's text; ``source`` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FeatureFileError(f"{source}: not TOML: {exc}") from None
    unknown = sorted(set(data) - {"features"})
    if unknown:
        raise FeatureFileError(f"{source}: unknown table {unknown[0]!r} (only [[features]] entries)")
    entries = data.get("features", [])
    if not isinstance(entries, list):
        raise FeatureFileError(f"{source}: 'features' must be a list of [[features]] entries")
    features: list[Feature] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, 1):
        feature = _feature(entry, f"{source}: [[features]] entry {number}")
        if feature.name in seen:
            raise FeatureFileError(f"{source}: [[features]] entry {number}: duplicate name {feature.name!r}")
        seen.add(feature.name)
        features.append(feature)
    return FeatureSet.of(window_hours, features)


def _feature(entry: Any, where: str) -> Feature:
    if not isinstance(entry, Mapping):
        raise FeatureFileError(f"{where}: not a table")
    name = entry.get("name")
    if isinstance(name, str):
        where = f"{where} ({name!r})"
    unknown = sorted(set(entry) - {"name", "kind", "field", "hours"})
    if unknown:
        raise FeatureFileError(f"{where}: unknown key {unknown[0]!r} (name, kind, field, hours)")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FeatureFileError(
            f"{where}: name must be a column name: lower case letters, digits and _, starting with a letter,"
            " at most 63 characters"
        )
    if name in BASE_COLUMNS:
        raise FeatureFileError(f"{where}: name {name!r} is a base column of every row; choose another")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise FeatureFileError(f"{where}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    field = entry.get("field")
    if field not in INPUT_FIELDS:
        raise FeatureFileError(f"{where}: unknown field {field!r}; one of {', '.join(INPUT_FIELDS)}")
    hours = entry.get("hours")
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
        raise FeatureFileError(f"{where}: hours must be a whole number from 1 to {MAX_HOURS}, not {hours!r}")
    return Feature(name, kind, field, hours)
