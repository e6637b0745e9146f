"""Feature rows, computed from a region's kept hours for a declared feature set. Pure logic: no I/O.

The row type follows the feature set (``core.feature_set``): the base columns of SPEC, SPEC's feature columns,
the time columns, then the features a user added. ``FeatureRow`` is the row type of SPEC's own set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, make_dataclass
from functools import cache
from operator import attrgetter
from typing import Any

from solar_agents.core.feature_set import SPEC_FEATURES, Feature, FeatureSet
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
    windows = [f for f in rows.features.features if not f.is_lag]
    span = max((f.hours for f in windows), default=1)
    out: list[Row] = []
    # Hours closer than a window share one read of the hours their windows cover.
    start = 0
    while start < len(ordered):
        end = start + 1
        while end < len(ordered) and ordered[end] - ordered[end - 1] < span:
            end += 1
        out.extend(_rows_of_run(state, ordered[start:end], rows, span))
        start = end
    return out


def _value_of(state: RegionHours, field: str) -> Callable[[int], Any]:
    """The value of ``field`` at an hour: None where its record is missing (or the value not observed)."""
    records = state.solar if field == "production_mw" else state.weather
    get, read = records.get, attrgetter(field)
    return lambda hour: None if (record := get(hour)) is None else read(record)


def _series(state: RegionHours, field: str, hours: range) -> list[Any]:
    """``field`` over ``hours``, one value an hour: None where the record is missing or the value null."""
    records = state.solar if field == "production_mw" else state.weather
    get, read = records.get, attrgetter(field)
    return [None if (record := get(hour)) is None else read(record) for hour in hours]


# A row's base columns from its weather record, in column order.
_weather_base: Callable[[Any], tuple[Any, ...]] = attrgetter(*_WEATHER_BASE)


def _rows_of_run(state: RegionHours, hours: list[int], rows: RowType, span: int) -> Iterator[Row]:
    """The rows of ``hours`` (ascending, each with both halves), from one list per field of the hours their
    windows cover: a window is then a slice, folded in hour order as SPEC's definition reads."""
    first = hours[0] - span + 1
    covered = range(first, hours[-1] + 1)
    features = rows.features.features
    # Clock hours, not records: a missing hour is None here and skipped, never replaced by an older one.
    series = {f.field: _series(state, f.field, covered) for f in features if not f.is_lag}
    lags = {f.field: _value_of(state, f.field) for f in features if f.is_lag}
    spec_plan = [_plan(f, series, lags, first) for f in features if f.name in SPEC_FEATURES]
    added_plan = [_plan(f, series, lags, first) for f in features if f.name not in SPEC_FEATURES]
    region = state.region
    make: Callable[..., Row] = rows.cls
    solar_at, weather_at = state.solar, state.weather
    for hour in hours:
        day_of_week = ((hour - _MONDAY_HOUR) // 24) % 7
        yield make(
            region,
            hour,
            solar_at[hour].production_mw,
            *_weather_base(weather_at[hour]),
            *[compute(hour) for compute in spec_plan],
            hour % 24,
            day_of_week,
            day_of_week >= 5,
            *[compute(hour) for compute in added_plan],
        )


def _plan(
    feature: Feature, series: dict[str, list[Any]], lags: dict[str, Callable[[int], Any]], first: int
) -> Callable[[int], Any]:
    """How one feature's value is computed for an hour of the run."""
    if feature.is_lag:
        value_at, back = lags[feature.field], feature.hours
        return lambda hour: value_at(hour - back)
    values, fold, width = series[feature.field], _FOLD[feature.kind], feature.hours

    def window(hour: int) -> Any:
        end = hour - first + 1
        return fold([v for v in values[end - width : end] if v is not None])

    return window
