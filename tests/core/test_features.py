"""Feature rows from kept hours: the seed's unit cases, computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import COLUMNS, FIELDS, SPEC_ROWS, feature_row
from solar_agents.core.hours import Position, RegionHours, Retention, Solar, Weather

# 2019-01-05 was a Saturday.
SATURDAY_NOON = int(datetime(2019, 1, 5, 12, tzinfo=UTC).timestamp()) // 3600
P = Position(0, 0, 0)
RETENTION = Retention(reach=24, lateness_hours=48)  # 72 h behind the watermark


def state_with(solar: dict[int, float], weather: dict[int, tuple[float | None, float | None]]) -> RegionHours:
    state = RegionHours("R")
    for hour, mw in solar.items():
        state.solar[hour] = Solar(hour, P, mw)
    for hour, (temp, cloud) in weather.items():
        state.weather[hour] = Weather(hour, P, temp, cloud, 100.0, 53.6, 9.9)
    return state


def test_columns_are_the_row_type_key_first() -> None:
    # The full list is held to the contract, the table and the reference in test_spec.
    assert COLUMNS[:2] == ("region", "timestamp")
    assert tuple("timestamp" if name == "hour" else name for name in FIELDS) == COLUMNS
    row = feature_row(state_with({5: 1.0}, {5: (None, None)}), 5, SPEC_ROWS)
    assert row is not None
    assert row.as_tuple() == tuple(getattr(row, name) for name in FIELDS)


def test_moving_average_full_window() -> None:
    h = SATURDAY_NOON
    state = state_with({h - k: float(k) for k in range(30)}, {h: (1.0, 2.0)})
    row = feature_row(state, h, SPEC_ROWS)
    assert row is not None
    assert row.production_ma_24h == pytest.approx(sum(range(24)) / 24)


def test_moving_average_partial_window_skips_missing_hours() -> None:
    h = SATURDAY_NOON
    # Hours h, h-1, h-5 exist; h-30 is outside the window and must not count.
    state = state_with(
        {h: 10.0, h - 1: 20.0, h - 5: 60.0, h - 30: 1000.0}, {h: (5.0, None), h - 2: (7.0, 50.0)}
    )
    row = feature_row(state, h, SPEC_ROWS)
    assert row is not None
    assert row.production_ma_24h == pytest.approx(30.0)
    assert row.temperature_ma_24h == pytest.approx(6.0)
    assert row.cloud_cover_ma_24h == pytest.approx(50.0)  # NULL cloud cover at h is skipped


def test_all_null_weather_gives_null_means() -> None:
    h = SATURDAY_NOON
    row = feature_row(state_with({h: 1.0}, {h: (None, None)}), h, SPEC_ROWS)
    assert row is not None
    assert row.temperature_ma_24h is None and row.cloud_cover_ma_24h is None
    assert row.temperature_c is None


def test_alignment_needs_both_halves() -> None:
    h = SATURDAY_NOON
    state = state_with({h: 1.0, h + 1: 2.0}, {h: (1.0, 1.0), h + 2: (3.0, 3.0)})
    assert feature_row(state, h, SPEC_ROWS) is not None
    assert feature_row(state, h + 1, SPEC_ROWS) is None  # weather missing
    assert feature_row(state, h + 2, SPEC_ROWS) is None  # solar missing


def test_time_columns() -> None:
    h = SATURDAY_NOON
    row = feature_row(state_with({h: 1.0, h + 48: 1.0}, {h: (1.0, 1.0), h + 48: (1.0, 1.0)}), h, SPEC_ROWS)
    assert row is not None
    assert (row.hour_of_day, row.day_of_week, row.is_weekend) == (12, 5, True)
    monday = feature_row(state_with({h + 48: 1.0}, {h + 48: (1.0, 1.0)}), h + 48, SPEC_ROWS)
    assert monday is not None
    assert (monday.hour_of_day, monday.day_of_week, monday.is_weekend) == (12, 0, False)


def test_lags_present_and_absent() -> None:
    h = SATURDAY_NOON
    row = feature_row(state_with({h: 5.0, h - 1: 4.0, h - 24: 3.0}, {h: (1.0, 1.0)}), h, SPEC_ROWS)
    assert row is not None
    assert (row.production_lag_1h, row.production_lag_24h) == (4.0, 3.0)
    row = feature_row(state_with({h: 5.0, h - 2: 4.0, h - 25: 3.0}, {h: (1.0, 1.0)}), h, SPEC_ROWS)
    assert row is not None
    assert (row.production_lag_1h, row.production_lag_24h) == (None, None)


def test_affected_hours_cover_window_and_lags() -> None:
    assert FeatureSet.of(3).affected_hours([10], []) == {10, 11, 12, 34}
    assert FeatureSet.of(3).affected_hours([], [10]) == {10, 11, 12}
    assert FeatureSet.of(30).affected_hours([10], []) == set(range(10, 40))
