"""Feature rows, computed from a region's kept hours for a declared feature set. Pure logic: no I/O.

The row type follows the feature set (``core.feature_set``): the base columns of SPEC, SPEC's feature columns,
the time columns, then the features a user added. ``FeatureRow`` is the row type of SPEC's own set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, make_dataclass
from functools import cache, partial
from itertools import repeat
from operator import attrgetter, is_not
from types import SimpleNamespace
from typing import Any

from solar_agents.core.feature_set import INPUT_FIELDS, SPEC_FEATURES, Feature, FeatureSet
from solar_agents.core.hours import RegionHours

# Monday 1970-01-05 00:00 UTC is hour 96: day_of_week counts from there.
_MONDAY_HOUR = 96

# The columns every row has, with their Python types; ``hour`` is the hour index of column ``timestamp``.
BASE_FIELDS: tuple[tuple[str, str], ...] = (
    ("region", "str"),
    ("hour", "int"),
    ("production_mw", "float"),
    ("temperature_c", "float | None"),
    ("cloud_cover_pct", "float | None"),
    ("solar_radiation_wm2", "float | None"),
    ("latitude", "float"),
    ("longitude", "float"),
)
TIME_FIELDS: tuple[tuple[str, str], ...] = (
    ("hour_of_day", "int"),
    ("day_of_week", "int"),
    ("is_weekend", "bool"),
)
# A row's base columns, read from its two records, by the half they come from.
_WEATHER_BASE = ("temperature_c", "cloud_cover_pct", "solar_radiation_wm2", "latitude", "longitude")


class Row:
    """The base of every row type: one row of the output table, column for column."""

    __slots__ = ()
    region: str
    hour: int

    @property
    def key(self) -> tuple[str, int]:
        return self.region, self.hour

    def as_tuple(self) -> tuple[Any, ...]:
        """The values in field order."""
        fields: dict[str, Any] = getattr(self, "__dataclass_fields__", {})
        return tuple(getattr(self, name) for name in fields)


@dataclass(frozen=True, eq=False)
class RowType:
    """The row type of a feature set: its fields in column order and how to read and build rows.

    The rows topic, the sink's statements and the table's DDL are all derived from it; tests hold SPEC's
    table and the reference to it.
    """

    features: FeatureSet
    cls: type[Row]
    fields: tuple[str, ...]  # field names in column order; "hour" where the table has "timestamp"
    types: tuple[str, ...]  # Python type of each field, as text ("float | None")
    values: Callable[[Row], tuple[Any, ...]]  # a row's values in field order

    @property
    def columns(self) -> tuple[str, ...]:
        """The output table's column names: the hour index is stored as its start, column ``timestamp``."""
        return tuple("timestamp" if name == "hour" else name for name in self.fields)

    def make(self, *values: Any) -> Row:
        make: Callable[..., Row] = self.cls
        return make(*values)


@cache
def row_type(features: FeatureSet) -> RowType:
    """The row type of ``features`` (one class per distinct set, built once)."""
    spec = [f for f in features.features if f.name in SPEC_FEATURES]
    added = [f for f in features.features if f.name not in SPEC_FEATURES]
    typed = [
        *BASE_FIELDS,
        *((f.name, f.python_type) for f in spec),
        *TIME_FIELDS,
        *((f.name, f.python_type) for f in added),
    ]
    names = tuple(name for name, _ in typed)
    cls = _row_class(tuple(typed))
    # Not ``dataclasses.astuple``: it deep-copies every value, and was a visible share of the worker's
    # profile; a getter built once reads the flat fields directly.
    return RowType(features, cls, names, tuple(t for _, t in typed), attrgetter(*names))


@cache
def _row_class(typed: tuple[tuple[str, str], ...]) -> type[Row]:
    """One class per list of columns: sets that differ only in definitions share their rows' class."""
    cls = make_dataclass("FeatureRow", typed, bases=(Row,), frozen=True, slots=True)
    cls.__module__ = __name__
    return cls


SPEC_ROWS = row_type(FeatureSet.of(24))
FeatureRow: type[Row] = SPEC_ROWS.cls  # SPEC's row type: its columns do not depend on the window's length
FIELDS = SPEC_ROWS.fields
COLUMNS = SPEC_ROWS.columns
field_values = SPEC_ROWS.values


def latest_per_key(rows: list[Row]) -> list[Row]:
    """The last row of each (region, hour): a batch must never write an older value after a newer one, and
    PostgreSQL refuses to update one row twice in one statement."""
    return list({row.key: row for row in rows}.values())


def _mean(values: list[Any]) -> float | None:
    return sum(values) / len(values) if values else None


def _sum(values: list[Any]) -> float | None:
    return sum(values) if values else None


def _min(values: list[Any]) -> float | None:
    return min(values) if values else None


def _max(values: list[Any]) -> float | None:
    return max(values) if values else None


# How each kind of window folds the non-null values of its hours (in hour order, as SPEC's definition reads).
_FOLD: dict[str, Callable[[list[Any]], Any]] = {
    "mean": _mean,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "count": len,
}


def feature_row(state: RegionHours, hour: int, rows: RowType) -> Row | None:
    """The row of (region, hour), or None while one half of the hour is missing."""
    found = feature_rows(state, (hour,), rows)
    return found[0] if found else None


def feature_rows(state: RegionHours, hours: Iterable[int], rows: RowType) -> list[Row]:
    """The rows of the given hours that exist (both halves present), in hour order."""
    solar, weather = state.solar, state.weather
    ordered = [hour for hour in sorted(hours) if hour in solar and hour in weather]
    plan = _plan(rows)
    span = plan.span
    out: list[Row] = []
    # Hours closer than a window share one read of the hours their windows cover.
    start = 0
    while start < len(ordered):
        end = start + 1
        while end < len(ordered) and ordered[end] - ordered[end - 1] < span:
            end += 1
        out.extend(_rows_of_run(state, ordered[start:end], rows, plan))
        start = end
    return out


# A row's base columns from its weather record, in column order.
_weather_base: Callable[[Any], tuple[Any, ...]] = attrgetter(*_WEATHER_BASE)

# What a missing hour reads: every input field None (an hour without its record, never an older one).
_MISSING = SimpleNamespace(**dict.fromkeys(INPUT_FIELDS))

# A value that is not None (``is_not(None, value)``): observed.
_observed: Callable[[Any], bool] = partial(is_not, None)

# One feature column, as computed: (is a lag, the field it reads, its half, how to read it, the fold of a
# window, its hours).
_Column = tuple[bool, str, str, Callable[[Any], Any], Callable[[list[Any]], Any], int]


@dataclass(frozen=True, slots=True)
class _Plan:
    """How the rows of a feature set are computed, worked out once per row type: at thousands of regions a
    region brings an hour or two to a batch, and working this out per run was a visible part of its cost."""

    span: int  # the longest window: hours closer than this share one read
    series: tuple[tuple[str, str, Callable[[Any], Any]], ...]  # (field, half, read) of the windows' fields
    spec: tuple[_Column, ...]  # SPEC's feature columns, in column order
    added: tuple[_Column, ...]  # the user's, after the time columns


@cache
def _plan(rows: RowType) -> _Plan:
    features = rows.features.features

    def column(f: Feature) -> _Column:
        return (
            f.is_lag,
            f.field,
            INPUT_FIELDS[f.field],
            attrgetter(f.field),
            _FOLD.get(f.kind, len),
            f.hours,
        )

    windows = {f.field: INPUT_FIELDS[f.field] for f in features if not f.is_lag}
    return _Plan(
        span=max((f.hours for f in features if not f.is_lag), default=1),
        series=tuple((name, half, attrgetter(name)) for name, half in windows.items()),
        spec=tuple(column(f) for f in features if f.name in SPEC_FEATURES),
        added=tuple(column(f) for f in features if f.name not in SPEC_FEATURES),
    )


def _rows_of_run(state: RegionHours, hours: list[int], rows: RowType, plan: _Plan) -> Iterator[Row]:
    """The rows of ``hours`` (ascending, each with both halves), from one list per field of the hours their
    windows cover: a window is then a slice, folded in hour order as SPEC's definition reads."""
    first = hours[0] - plan.span + 1
    covered = range(first, hours[-1] + 1)
    # Clock hours, not records: a missing hour is None here and skipped, never replaced by an older one. The
    # lists are built in C (map, filter): at thousands of regions they are most of what a region costs.
    gets: dict[str, Callable[[int, Any], Any]] = {"solar": state.solar.get, "weather": state.weather.get}
    covering = {half: list(map(get, covered, repeat(_MISSING, len(covered)))) for half, get in gets.items()}
    series = {name: list(map(read, covering[half])) for name, half, read in plan.series}

    def values(columns: tuple[_Column, ...], hour: int) -> list[Any]:
        end = hour - first + 1
        return [
            read(gets[half](hour - hours_, _MISSING))
            if lag
            else fold(list(filter(_observed, series[name][end - hours_ : end])))
            for lag, name, half, read, fold, hours_ in columns
        ]

    region = state.region
    make: Callable[..., Row] = rows.cls
    solar_at, weather_at = state.solar, state.weather
    spec, added = plan.spec, plan.added
    for hour in hours:
        day_of_week = ((hour - _MONDAY_HOUR) // 24) % 7
        yield make(
            region,
            hour,
            solar_at[hour].production_mw,
            *_weather_base(weather_at[hour]),
            *values(spec, hour),
            hour % 24,
            day_of_week,
            day_of_week >= 5,
            *(values(added, hour) if added else ()),
        )
