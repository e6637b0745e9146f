"""The feature rows of SPEC, computed from a region's kept hours. Pure logic: no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from solar_agents.core.hours import RegionHours

# Monday 1970-01-05 00:00 UTC is hour 96: day_of_week counts from there.
_MONDAY_HOUR = 96


@dataclass(slots=True, frozen=True)
class FeatureRow:
    """One row of the output table, column for column; ``hour`` is the hour index of ``timestamp``."""

    region: str
    hour: int
    production_mw: float
    temperature_c: float | None
    cloud_cover_pct: float | None
    solar_radiation_wm2: float | None
    latitude: float
    longitude: float
    production_ma_24h: float
    temperature_ma_24h: float | None
    cloud_cover_ma_24h: float | None
    production_lag_1h: float | None
    production_lag_24h: float | None
    hour_of_day: int
    day_of_week: int
    is_weekend: bool

    @property
    def key(self) -> tuple[str, int]:
        return self.region, self.hour

    def as_tuple(self) -> tuple[Any, ...]:
        """The values in field order (``FIELDS``)."""
        return field_values(self)


# The row type is the one list of columns: the rows topic, the sink's statements and the table's DDL are all
# derived from it, and tests hold the contract's table and the reference to it.
FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FeatureRow))
# The output table's column names: the hour index is stored as its start, column ``timestamp``.
COLUMNS: tuple[str, ...] = tuple("timestamp" if name == "hour" else name for name in FIELDS)

# The values of a row in field order. Not ``dataclasses.astuple``: it deep-copies every value, and was a
# visible share of the worker's profile; a getter built once reads the flat fields directly.
field_values: Callable[[FeatureRow], tuple[Any, ...]] = attrgetter(*FIELDS)


def latest_per_key(rows: list[FeatureRow]) -> list[FeatureRow]:
    """The last row of each (region, hour): a batch must never write an older value after a newer one, and
    PostgreSQL refuses to update one row twice in one statement."""
    return list({row.key: row for row in rows}.values())


def affected_hours(solar_hours: Iterable[int], weather_hours: Iterable[int], window_hours: int) -> set[int]:
    """Rows that depend on the given halves: their own hour, the window's later hours and the lags."""
    out: set[int] = set()
    for hour in solar_hours:
        out.update(range(hour, hour + window_hours))
        out.add(hour + 1)
        out.add(hour + 24)
    for hour in weather_hours:
        out.update(range(hour, hour + window_hours))
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def feature_row(state: RegionHours, hour: int, window_hours: int) -> FeatureRow | None:
    """The row of (region, hour), or None while one half of the hour is missing."""
    rows = feature_rows(state, (hour,), window_hours)
    return rows[0] if rows else None


def feature_rows(state: RegionHours, hours: Iterable[int], window_hours: int) -> list[FeatureRow]:
    """The rows of the given hours that exist (both halves present), in hour order."""
    solar, weather = state.solar, state.weather
    ordered = [hour for hour in sorted(hours) if hour in solar and hour in weather]
    rows: list[FeatureRow] = []
    # Hours closer than a window share one read of the hours their windows cover.
    start = 0
    while start < len(ordered):
        end = start + 1
        while end < len(ordered) and ordered[end] - ordered[end - 1] < window_hours:
            end += 1
        rows.extend(_rows_of_run(state, ordered[start:end], window_hours))
        start = end
    return rows


def _rows_of_run(state: RegionHours, hours: list[int], window_hours: int) -> Iterator[FeatureRow]:
    """The rows of ``hours`` (ascending, each with both halves), from one list per column of the hours
    their windows cover: a window is then a slice, summed in hour order as SPEC's definition reads."""
    solar_of, weather_of = state.solar.get, state.weather.get
    first = hours[0] - window_hours + 1
    span = range(first, hours[-1] + 1)
    # Clock hours, not records: a missing hour is None here and skipped, never replaced by an older one.
    productions = [None if (s := solar_of(h)) is None else s.production_mw for h in span]
    weathers = [weather_of(h) for h in span]
    temperatures = [None if w is None else w.temperature_c for w in weathers]
    clouds = [None if w is None else w.cloud_cover_pct for w in weathers]
    region = state.region
    for hour in hours:
        window = slice(hour - first - window_hours + 1, hour - first + 1)
        produced = [v for v in productions[window] if v is not None]
        solar, weather = state.solar[hour], state.weather[hour]
        lag_1 = solar_of(hour - 1)
        lag_24 = solar_of(hour - 24)
        day_of_week = ((hour - _MONDAY_HOUR) // 24) % 7
        yield FeatureRow(
            region=region,
            hour=hour,
            production_mw=solar.production_mw,
            temperature_c=weather.temperature_c,
            cloud_cover_pct=weather.cloud_cover_pct,
            solar_radiation_wm2=weather.solar_radiation_wm2,
            latitude=weather.latitude,
            longitude=weather.longitude,
            production_ma_24h=sum(produced) / len(produced),
            temperature_ma_24h=_mean([v for v in temperatures[window] if v is not None]),
            cloud_cover_ma_24h=_mean([v for v in clouds[window] if v is not None]),
            production_lag_1h=None if lag_1 is None else lag_1.production_mw,
            production_lag_24h=None if lag_24 is None else lag_24.production_mw,
            hour_of_day=hour % 24,
            day_of_week=day_of_week,
            is_weekend=day_of_week >= 5,
        )
