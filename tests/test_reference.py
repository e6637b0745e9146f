"""Tests of the independent reference (tests/reference.py) and the scenario feed (tests/scenario.py).

Expected values are computed by hand from SPEC; nothing here imports ``solar_agents``.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from reference import COLUMNS, RawMessage, Reference, assert_rows_equal, reference_features
from scenario import build_feed, interleave, load_rows

SOLAR = "solar_production_raw"
WEATHER = "weather_raw"
# 2019-03-02 is a Saturday.
T0 = datetime(2019, 3, 2, 0, 0, tzinfo=UTC)


def at(hour: float, minutes: float = 0.0) -> datetime:
    return T0 + timedelta(hours=hour, minutes=minutes)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def solar_payload(hour: float, mw: float, region: str = "R", *, minutes: float = 0.0) -> dict[str, Any]:
    return {"timestamp": iso(at(hour, minutes)), "region": region, "production_mw": mw}


def weather_payload(
    hour: float,
    temp: float | None = 10.0,
    cloud: float | None = 50.0,
    rad: float | None = 100.0,
    region: str | None = "R",
    *,
    minutes: float = 0.0,
    lat: float = 53.6,
    lon: float = 10.0,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "timestamp": iso(at(hour, minutes)),
        "temperature_c": temp,
        "cloud_cover_pct": cloud,
        "solar_radiation_wm2": rad,
        "latitude": lat,
        "longitude": lon,
    }
    if region is not None:
        payload["region"] = region
    return payload


@dataclass
class Log:
    """Builds RawMessages with offsets counting up per (topic, partition)."""

    messages: list[RawMessage] = field(default_factory=list)
    next_offset: Counter[tuple[str, int]] = field(default_factory=Counter)

    def add(
        self,
        topic: str,
        payload: dict[str, Any] | bytes,
        key: bytes | None = None,
        *,
        partition: int = 0,
        offset: int | None = None,
    ) -> RawMessage:
        value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if offset is None:
            offset = self.next_offset[(topic, partition)]
        self.next_offset[(topic, partition)] = max(self.next_offset[(topic, partition)], offset + 1)
        message = RawMessage(topic, partition, offset, key, value)
        self.messages.append(message)
        return message

    def solar(self, hour: float, mw: float, region: str = "R", **kwargs: Any) -> RawMessage:
        minutes = kwargs.pop("minutes", 0.0)
        return self.add(SOLAR, solar_payload(hour, mw, region, minutes=minutes), **kwargs)

    def weather(self, hour: float, *args: Any, **kwargs: Any) -> RawMessage:
        key = kwargs.pop("key", None)
        partition = kwargs.pop("partition", 0)
        offset = kwargs.pop("offset", None)
        return self.add(
            WEATHER, weather_payload(hour, *args, **kwargs), key, partition=partition, offset=offset
        )

    def run(self, **kwargs: Any) -> Reference:
        return reference_features(self.messages, **kwargs)


def row(ref: Reference, hour: int, region: str = "R") -> dict[str, object]:
    return ref.rows[(region, at(hour))]


# --- moving averages ----------------------------------------------------------------------------------------


def test_production_ma_full_and_partial_window() -> None:
    log = Log()
    for h in range(30):
        log.solar(h, float(h))
        log.weather(h)
    ref = log.run()
    assert not ref.rejected
    assert len(ref.rows) == 30
    assert row(ref, 0)["production_ma_24h"] == 0.0  # window of one record
    assert row(ref, 5)["production_ma_24h"] == pytest.approx(2.5)  # partial: hours 0..5
    assert row(ref, 23)["production_ma_24h"] == pytest.approx(11.5)  # exactly full: 0..23
    assert row(ref, 29)["production_ma_24h"] == pytest.approx(17.5)  # 6..29


def test_production_ma_skips_missing_hour_inside_window() -> None:
    log = Log()
    for h in range(30):
        if h != 20:
            log.solar(h, float(h))
        log.weather(h)
    ref = log.run()
    assert ("R", at(20)) not in ref.rows
    # hours 2..25 without 20: (sum(2..25) - 20) / 23, never an older hour in place of the missing one
    assert row(ref, 25)["production_ma_24h"] == pytest.approx((324 - 20) / 23)
    assert row(ref, 29)["production_ma_24h"] == pytest.approx((sum(range(6, 30)) - 20) / 23)


def test_window_hours_setting() -> None:
    log = Log()
    for h in range(12):
        log.solar(h, float(h))
        log.weather(h, temp=float(h))
    ref = log.run(window_hours=3)
    assert row(ref, 10)["production_ma_24h"] == pytest.approx(9.0)
    assert row(ref, 10)["temperature_ma_24h"] == pytest.approx(9.0)
    assert row(ref, 1)["production_ma_24h"] == pytest.approx(0.5)
    ref1 = log.run(window_hours=1)
    assert row(ref1, 7)["production_ma_24h"] == 7.0
    with pytest.raises(ValueError):
        log.run(window_hours=0)


def test_weather_ma_excludes_null_and_missing_hours() -> None:
    log = Log()
    temps = [10.0, None, 14.0, 12.0, None]
    for h in range(5):
        log.solar(h, 1.0)
        log.weather(h, temp=temps[h], cloud=None)
    ref = log.run()
    assert row(ref, 3)["temperature_ma_24h"] == pytest.approx(12.0)  # (10 + 14 + 12) / 3
    assert row(ref, 4)["temperature_ma_24h"] == pytest.approx(12.0)
    assert row(ref, 4)["temperature_c"] is None  # NULL kept, never invented
    assert row(ref, 1)["temperature_ma_24h"] == pytest.approx(10.0)
    assert row(ref, 3)["cloud_cover_pct"] is None
    assert row(ref, 3)["cloud_cover_ma_24h"] is None  # all NULL -> NULL

    log2 = Log()
    log2.weather(0, temp=None, cloud=None)
    log2.solar(1, 1.0)
    log2.weather(1, temp=None, cloud=None)
    assert row(log2.run(), 1)["temperature_ma_24h"] is None


def test_weather_ma_missing_weather_hour_is_skipped() -> None:
    log = Log()
    for h in range(4):
        log.solar(h, 1.0)
        if h != 1:
            log.weather(h, temp=float(10 * (h + 1)), cloud=float(h))
    ref = log.run()
    assert ("R", at(1)) not in ref.rows
    assert row(ref, 3)["temperature_ma_24h"] == pytest.approx((10 + 30 + 40) / 3)
    assert row(ref, 3)["cloud_cover_ma_24h"] == pytest.approx((0 + 2 + 3) / 3)
    assert row(ref, 3)["production_ma_24h"] == pytest.approx(1.0)  # solar at 1 exists and counts


def test_weather_ma_uses_window_and_not_beyond() -> None:
    log = Log()
    log.weather(0, temp=-50.0)  # 25 hours before hour 25: outside the window of hour 25 (2..25)
    log.weather(1, temp=-50.0)
    for h in range(2, 26):
        log.weather(h, temp=5.0)
    log.solar(25, 3.0)
    ref = log.run()
    assert list(ref.rows) == [("R", at(25))]
    assert row(ref, 25)["temperature_ma_24h"] == pytest.approx(5.0)
    assert row(ref, 25)["production_ma_24h"] == 3.0


# --- lags ---------------------------------------------------------------------------------------------------


def test_lags_present_and_absent() -> None:
    log = Log()
    for h in range(27):
        log.solar(h, 100.0 + h)
        log.weather(h)
    ref = log.run()
    assert row(ref, 0)["production_lag_1h"] is None
    assert row(ref, 0)["production_lag_24h"] is None
    assert row(ref, 1)["production_lag_1h"] == 100.0
    assert row(ref, 23)["production_lag_24h"] is None  # hour -1 does not exist
    assert row(ref, 24)["production_lag_24h"] == 100.0
    assert row(ref, 26)["production_lag_1h"] == 125.0
    assert row(ref, 26)["production_lag_24h"] == 102.0


def test_lags_count_solar_records_without_weather_and_skip_missing() -> None:
    log = Log()
    log.solar(0, 7.0)  # no weather at hour 0: no row, but it is the lag-24 input of hour 24
    log.solar(23, 9.0)  # no weather at 23: still the lag-1 input of 24
    log.solar(24, 11.0)
    log.weather(24)
    log.solar(26, 13.0)  # hour 25 missing: lag 1 of 26 is NULL, not hour 24's value
    log.weather(26)
    ref = log.run()
    assert set(ref.rows) == {("R", at(24)), ("R", at(26))}
    assert row(ref, 24)["production_lag_1h"] == 9.0
    assert row(ref, 24)["production_lag_24h"] == 7.0
    assert row(ref, 26)["production_lag_1h"] is None
    assert row(ref, 26)["production_lag_24h"] is None
    assert row(ref, 24)["production_ma_24h"] == pytest.approx((9.0 + 11.0) / 2)  # hour 0 is outside 1..24
    assert row(ref, 26)["production_ma_24h"] == pytest.approx((9.0 + 11.0 + 13.0) / 3)


def test_lag_24_is_fixed_even_with_other_window() -> None:
    log = Log()
    log.solar(0, 5.0)
    log.solar(24, 6.0)
    log.weather(24)
    ref = log.run(window_hours=3)
    assert row(ref, 24)["production_lag_24h"] == 5.0
    assert row(ref, 24)["production_ma_24h"] == 6.0


# --- calendar -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "hour_of_day", "day_of_week", "weekend"),
    [
        (-1, 23, 4, False),  # Friday 2019-03-01 23:00
        (0, 0, 5, True),  # Saturday 2019-03-02 00:00
        (13, 13, 5, True),
        (23, 23, 5, True),
        (24 + 7, 7, 6, True),  # Sunday
        (48, 0, 0, False),  # Monday
        (48 + 72 + 12, 12, 3, False),  # Thursday
    ],
)
def test_calendar_columns(hour: int, hour_of_day: int, day_of_week: int, weekend: bool) -> None:
    log = Log()
    log.solar(hour, 1.0)
    log.weather(hour)
    r = row(log.run(), hour)
    assert r["hour_of_day"] == hour_of_day and type(r["hour_of_day"]) is int
    assert r["day_of_week"] == day_of_week and type(r["day_of_week"]) is int
    assert r["is_weekend"] is weekend


def test_row_has_exactly_the_spec_columns_and_types() -> None:
    log = Log()
    log.solar(5, 120)  # JSON int is a number
    log.weather(5, temp=-3, cloud=0, rad=0, lat=53, lon=10)
    ref = log.run()
    r = row(ref, 5)
    assert tuple(r) == COLUMNS
    assert r == {
        "region": "R",
        "timestamp": at(5),
        "production_mw": 120.0,
        "temperature_c": -3.0,
        "cloud_cover_pct": 0.0,
        "solar_radiation_wm2": 0.0,
        "latitude": 53.0,
        "longitude": 10.0,
        "production_ma_24h": 120.0,
        "temperature_ma_24h": -3.0,
        "cloud_cover_ma_24h": 0.0,
        "production_lag_1h": None,
        "production_lag_24h": None,
        "hour_of_day": 5,
        "day_of_week": 5,
        "is_weekend": True,
    }
    stamp = r["timestamp"]
    assert isinstance(stamp, datetime) and stamp.utcoffset() == timedelta(0)
    for column in COLUMNS[2:11]:
        assert type(r[column]) is float, column


# --- pairing ------------------------------------------------------------------------------------------------


def test_row_needs_both_halves() -> None:
    log = Log()
    log.solar(1, 1.0)  # solar only
    log.weather(2)  # weather only
    log.solar(3, 3.0)
    log.weather(3)
    log.solar(4, 4.0, region="OTHER")  # weather of another region at the same hour
    log.weather(4, region="R")
    ref = log.run()
    assert set(ref.rows) == {("R", at(3))}
    assert not ref.rejected


def test_regions_are_independent() -> None:
    log = Log()
    for h in range(3):
        log.solar(h, 10.0, region="A")
        log.weather(h, temp=1.0, region="A")
        log.solar(h, 1000.0, region="B")
        log.weather(h, temp=30.0, region="B")
    ref = log.run()
    assert len(ref.rows) == 6
    assert row(ref, 2, "A")["production_ma_24h"] == 10.0
    assert row(ref, 2, "B")["production_lag_1h"] == 1000.0
    assert row(ref, 2, "B")["temperature_ma_24h"] == 30.0


# --- hours and selection ------------------------------------------------------------------------------------


def test_nearest_hour_selection() -> None:
    log = Log()
    log.solar(10, 1.0, minutes=20)  # hour 10, 20 min off
    log.solar(10, 2.0, minutes=50)  # hour 11, 10 min off
    log.solar(11, 3.0, minutes=5)  # hour 11, 5 min off: nearest, wins although earlier in nothing
    log.solar(11, 4.0, minutes=-8)  # hour 11, 8 min off, later offset: still loses on distance
    for h in (10, 11):
        log.weather(h)
    ref = log.run()
    assert row(ref, 10)["production_mw"] == 1.0
    assert row(ref, 11)["production_mw"] == 3.0
    assert row(ref, 11)["production_lag_1h"] == 1.0
    assert row(ref, 11)["production_ma_24h"] == pytest.approx(2.0)  # one record per hour counts


def test_half_past_rounds_up() -> None:
    log = Log()
    log.add(SOLAR, {"timestamp": "2019-03-02T12:30:00Z", "region": "R", "production_mw": 1.0})
    log.add(SOLAR, {"timestamp": "2019-03-02T14:29:59.999999Z", "region": "R", "production_mw": 2.0})
    log.add(SOLAR, {"timestamp": at(15, 30).timestamp(), "region": "R", "production_mw": 3.0})  # epoch 15:30
    log.add(SOLAR, {"timestamp": "2019-03-02T18:29:59+00:00", "region": "R", "production_mw": 4.0})
    for h in range(12, 19):
        log.weather(h)
    ref = log.run()
    assert {k[1].hour for k in ref.rows} == {13, 14, 16, 18}
    assert row(ref, 13)["production_mw"] == 1.0
    assert row(ref, 14)["production_mw"] == 2.0
    assert row(ref, 16)["production_mw"] == 3.0
    assert row(ref, 18)["production_mw"] == 4.0


def test_timestamp_forms() -> None:
    log = Log()
    forms: list[object] = [
        "2019-03-02T03:00:00+02:00",  # 01:00Z
        "2019-03-02T02:00:00",  # naive = UTC
        "2019-03-01T22:00:00-05:00",  # 03:00Z
        int(at(4).timestamp()),
        float(at(5).timestamp()) + 0.25,
        "2019-03-02 06:00:00Z",
        "2019-03-02T07:10:00.5+00:00",
    ]
    for index, stamp in enumerate(forms):
        log.add(SOLAR, {"timestamp": stamp, "region": "R", "production_mw": float(index + 1)})
    for h in range(1, 8):
        log.weather(h)
    ref = log.run()
    assert not ref.rejected
    assert [row(ref, h)["production_mw"] for h in range(1, 8)] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]


def test_tie_goes_to_later_offset_then_greater_partition() -> None:
    log = Log()
    log.solar(10, 5.0, minutes=10, offset=5)  # distance 10 min, offset 5
    log.solar(10, 3.0, minutes=-10, offset=3)  # distance 10 min, offset 3, arrives later
    log.weather(10, temp=1.0, offset=8, partition=1)
    log.weather(10, temp=2.0, offset=8, partition=2)
    log.weather(10, temp=0.5, offset=8, partition=0)
    ref = log.run()
    assert row(ref, 10)["production_mw"] == 5.0
    assert row(ref, 10)["temperature_c"] == 2.0
    for _ in range(5):  # independent of arrival order
        shuffled = log.messages[:]
        random.Random(_).shuffle(shuffled)
        assert reference_features(shuffled).rows == ref.rows


def test_correction_with_equal_distance_replaces() -> None:
    log = Log()
    log.solar(10, 5.0)
    log.solar(10, 6.0)  # same hour, same distance, later: the correction
    log.weather(10)
    assert row(log.run(), 10)["production_mw"] == 6.0


def test_exact_duplicates_change_nothing() -> None:
    base = Log()
    for h in range(30):
        base.solar(h, float(h % 7), minutes=(h % 5) - 2)
        base.weather(h, temp=float(h % 11), key=b"R")
    dup = Log()
    rng = random.Random(3)
    for message in base.messages:
        dup.add(message.topic, message.value, message.key)
        if rng.random() < 0.4:
            dup.add(message.topic, message.value, message.key)
    assert len(dup.messages) > len(base.messages)
    assert dup.run().rows == base.run().rows


def test_result_independent_of_order() -> None:
    log = Log()
    rng = random.Random(11)
    for h in range(60):
        for _ in range(rng.randint(0, 2)):
            log.solar(
                h, round(rng.uniform(0, 100), 2), minutes=rng.randint(-29, 29), partition=rng.randint(0, 2)
            )
        for _ in range(rng.randint(0, 2)):
            log.weather(
                h, rng.choice([None, 5.0, 7.5]), minutes=rng.randint(-29, 29), partition=rng.randint(0, 2)
            )
    expected = log.run()
    for seed in range(5):
        shuffled = log.messages[:]
        random.Random(seed).shuffle(shuffled)
        assert_rows_equal(expected.rows, reference_features(shuffled).rows, rel=0.0, abs_tol=0.0)


# --- regions ------------------------------------------------------------------------------------------------


def test_region_from_key_when_payload_has_none() -> None:
    log = Log()
    log.solar(1, 1.0, region="NORTH", key=b"SOUTH")  # solar: payload wins over key
    log.weather(1, region=None, key=b"NORTH")
    log.solar(2, 2.0, region="EAST")
    log.weather(2, region="EAST", key=b"WEST")  # weather: payload wins over key
    ref = log.run()
    assert set(ref.rows) == {("NORTH", at(1)), ("EAST", at(2))}


def test_weather_region_null_counts_as_absent() -> None:
    log = Log()
    log.solar(1, 1.0, region="NORTH")
    log.add(WEATHER, {**weather_payload(1), "region": None}, key=b"NORTH")
    ref = log.run()
    assert not ref.rejected
    assert set(ref.rows) == {("NORTH", at(1))}


def test_region_fallbacks_without_key() -> None:
    locations = {"HAMBURG": (53.6, 10.0), "MUNICH": (48.1, 11.6)}
    log = Log()
    log.weather(1, region=None, lat=52.5, lon=13.4)  # Berlin: nearer Hamburg
    log.weather(2, region=None, lat=47.0, lon=12.0)  # nearer Munich
    log.weather(3, region=None, key=b"\xff\xfe", lat=47.0, lon=12.0)  # key not UTF-8: ignored
    log.weather(4, region=None, key=b"", lat=47.0, lon=12.0)  # empty key: ignored
    log.weather(5, region=None, key=b"K" * 65, lat=47.0, lon=12.0)  # key too long: ignored
    log.weather(6, region=None, key=b"K" * 64, lat=47.0, lon=12.0)  # a valid key beats the locations
    for h in range(1, 7):
        for region in ("HAMBURG", "MUNICH", "K" * 64):
            log.solar(h, 1.0, region=region)
    ref = reference_features(log.messages, region_locations=locations)
    assert not ref.rejected
    assert {(k[1].hour, k[0]) for k in ref.rows} == {
        (1, "HAMBURG"),
        (2, "MUNICH"),
        (3, "MUNICH"),
        (4, "MUNICH"),
        (5, "MUNICH"),
        (6, "K" * 64),
    }
    # none configured: DEFAULT_REGION
    log2 = Log()
    log2.weather(1, region=None)
    log2.solar(1, 1.0, region="DE")
    log2.weather(2, region=None)
    log2.solar(2, 1.0, region="XX")
    assert set(log2.run().rows) == {("DE", at(1))}
    assert set(log2.run(default_region="XX").rows) == {("XX", at(2))}


def test_nearest_region_tie_takes_smallest_name() -> None:
    log = Log()
    log.weather(1, region=None, lat=0.0, lon=12.0)
    log.solar(1, 1.0, region="ALPHA")
    log.solar(1, 1.0, region="ZED")
    ref = reference_features(log.messages, region_locations={"ZED": (0.0, 10.0), "ALPHA": (0.0, 14.0)})
    assert set(ref.rows) == {("ALPHA", at(1))}


def test_missing_optional_weather_fields_are_null_and_extra_fields_ignored() -> None:
    log = Log()
    log.add(
        WEATHER, {"timestamp": iso(at(1)), "latitude": 1.0, "longitude": 2.0, "region": "R", "x": [1, {}]}
    )
    log.add(SOLAR, {"timestamp": iso(at(1)), "region": "R", "production_mw": 0, "unit": "MW"})
    ref = log.run()
    assert not ref.rejected
    r = row(ref, 1)
    assert r["temperature_c"] is None and r["cloud_cover_pct"] is None and r["solar_radiation_wm2"] is None
    assert r["temperature_ma_24h"] is None and r["cloud_cover_ma_24h"] is None
    assert r["production_mw"] == 0.0


@pytest.mark.parametrize(
    "payload",
    [
        {
            "temperature_c": -90,
            "cloud_cover_pct": 0,
            "solar_radiation_wm2": 0,
            "latitude": -90,
            "longitude": -180,
        },
        {
            "temperature_c": 70,
            "cloud_cover_pct": 100,
            "solar_radiation_wm2": 2000,
            "latitude": 90,
            "longitude": 180,
        },
        {"temperature_c": 1.5, "latitude": 0, "longitude": 0, "region": "x" * 64},
        {"temperature_c": None, "latitude": 0.0, "longitude": 0.0, "region": "é"},
    ],
)
def test_boundaries_accepted(payload: dict[str, Any]) -> None:
    log = Log()
    log.add(WEATHER, {"timestamp": iso(at(0)), **payload})
    log.add(SOLAR, {"timestamp": iso(at(0)), "region": "s" * 64, "production_mw": 0.0})
    assert not log.run().rejected


# --- malformed ----------------------------------------------------------------------------------------------

_S = json.dumps(solar_payload(1, 5.0))
_W = json.dumps(weather_payload(1))


def _solar(**changes: Any) -> bytes:
    payload = {**solar_payload(1, 5.0), **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


def _weather(**changes: Any) -> bytes:
    payload = {**weather_payload(1), **changes}
    return json.dumps({k: v for k, v in payload.items() if v is not ...}).encode()


MALFORMED: list[tuple[str, str, bytes, str]] = [
    ("not utf-8", SOLAR, b"\xff" + _S.encode(), "UTF-8"),
    (
        "latin-1",
        WEATHER,
        json.dumps({**weather_payload(1), "region": "Köln"}, ensure_ascii=False).encode("latin-1"),
        "UTF-8",
    ),
    ("not json", SOLAR, b"{timestamp: 1}", "not JSON"),
    ("truncated json", WEATHER, _W.encode()[:-3], "not JSON"),
    ("utf-8 bom", SOLAR, b"\xef\xbb\xbf" + _S.encode(), "not JSON"),
    ("empty", WEATHER, b"", "not JSON"),
    ("array", SOLAR, b"[1, 2]", "not a JSON object"),
    ("scalar", WEATHER, b"42", "not a JSON object"),
    ("null", SOLAR, b"null", "not a JSON object"),
    ("missing production", SOLAR, _solar(production_mw=...), "missing field 'production_mw'"),
    ("production null", SOLAR, _solar(production_mw=None), "production_mw"),
    ("production string", SOLAR, _solar(production_mw="5.0"), "production_mw"),
    ("production bool", SOLAR, _solar(production_mw=True), "production_mw"),
    ("production object", SOLAR, _solar(production_mw={"v": 1}), "production_mw"),
    ("negative production", SOLAR, _solar(production_mw=-0.1), "production_mw"),
    ("NaN literal", SOLAR, _S.replace("5.0", "NaN").encode(), "not JSON"),
    (
        "Infinity literal",
        WEATHER,
        _W.replace('"temperature_c": 10.0', '"temperature_c": Infinity').encode(),
        "not JSON",
    ),
    (
        "-Infinity literal",
        WEATHER,
        _W.replace('"solar_radiation_wm2": 100.0', '"solar_radiation_wm2": -Infinity').encode(),
        "not JSON",
    ),
    ("overflowing float", SOLAR, _S.replace("5.0", "1e400").encode(), "production_mw"),
    ("overflowing int", SOLAR, _S.replace("5.0", "9" * 400).encode(), "production_mw"),
    ("temperature 120", WEATHER, _weather(temperature_c=120), "temperature_c"),
    ("temperature -90.5", WEATHER, _weather(temperature_c=-90.5), "temperature_c"),
    ("temperature string", WEATHER, _weather(temperature_c="10"), "temperature_c"),
    ("cloud 101", WEATHER, _weather(cloud_cover_pct=101), "cloud_cover_pct"),
    ("cloud negative", WEATHER, _weather(cloud_cover_pct=-1), "cloud_cover_pct"),
    ("radiation 2001", WEATHER, _weather(solar_radiation_wm2=2000.5), "solar_radiation_wm2"),
    ("radiation bool", WEATHER, _weather(solar_radiation_wm2=False), "solar_radiation_wm2"),
    ("latitude 91", WEATHER, _weather(latitude=91), "latitude"),
    ("longitude -181", WEATHER, _weather(longitude=-180.5), "longitude"),
    ("missing latitude", WEATHER, _weather(latitude=...), "missing field 'latitude'"),
    ("latitude null", WEATHER, _weather(longitude=None), "longitude"),
    ("timestamp yesterday", SOLAR, _solar(timestamp="yesterday"), "timestamp"),
    ("timestamp bool", WEATHER, _weather(timestamp=True), "timestamp"),
    ("timestamp null", SOLAR, _solar(timestamp=None), "timestamp"),
    ("timestamp list", SOLAR, _solar(timestamp=[2019, 3, 2]), "timestamp"),
    ("timestamp missing", WEATHER, _weather(timestamp=...), "missing field 'timestamp'"),
    ("timestamp bad date", SOLAR, _solar(timestamp="2019-02-30T00:00:00Z"), "timestamp"),
    ("timestamp year 10000", SOLAR, _solar(timestamp=1e12), "timestamp"),
    ("timestamp huge float", SOLAR, _solar(timestamp=1e305), "timestamp"),
    ("timestamp before year 1", WEATHER, _weather(timestamp="0001-01-01T00:30:00+01:00"), "timestamp"),
    ("hour beyond year 9999", SOLAR, _solar(timestamp="9999-12-31T23:45:00Z"), "timestamp"),
    ("region empty", SOLAR, _solar(region=""), "region"),
    ("region 65 chars", WEATHER, _weather(region="r" * 65), "region"),
    ("region number", SOLAR, _solar(region=7), "region"),
    ("solar region missing", SOLAR, _solar(region=...), "missing field 'region'"),
    ("region with NUL", SOLAR, _solar(region="a\u0000b"), "region"),
]


@pytest.mark.parametrize(
    ("topic", "value", "reason_part"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_rejected(topic: str, value: bytes, reason_part: str) -> None:
    log = Log()
    bad = log.add(topic, value, b"R")
    log.solar(1, 5.0)
    log.weather(1)
    ref = log.run()
    assert [m for m, _ in ref.rejected] == [bad]
    reason = ref.rejected[0][1]
    assert reason_part in reason
    assert "\n" not in reason and reason.strip() == reason and len(reason) < 200
    # the rejected message does not disturb the good pair
    assert set(ref.rows) == {("R", at(1))}
    assert row(ref, 1)["production_mw"] == 5.0


def test_rejections_are_listed_in_input_order_and_other_topics_are_an_error() -> None:
    log = Log()
    first = log.add(SOLAR, b"x")
    log.solar(1, 1.0)
    second = log.add(WEATHER, b"[]")
    assert [m for m, _ in log.run().rejected] == [first, second]
    with pytest.raises(ValueError, match="unexpected topic"):
        reference_features([RawMessage("other", 0, 0, None, b"{}")])
    log3 = Log()
    log3.add("s2", solar_payload(1, 1.0))
    log3.add("w2", weather_payload(1))
    assert len(reference_features(log3.messages, solar_topic="s2", weather_topic="w2").rows) == 1


# --- assert_rows_equal --------------------------------------------------------------------------------------


def _rows() -> dict[tuple[str, datetime], dict[str, object]]:
    log = Log()
    for h in range(5):
        log.solar(h, 10.0 * h)
        log.weather(h, temp=None if h == 2 else 1.0)
    return log.run().rows


def test_assert_rows_equal_passes_on_equal_and_close() -> None:
    expected = _rows()
    actual = {k: dict(v) for k, v in expected.items()}
    first = next(iter(actual.values()))
    first["production_ma_24h"] = 0.0 + 1e-12  # absolute tolerance near zero
    row4 = actual[("R", at(4))]
    row4["production_ma_24h"] = float(row4["production_ma_24h"]) * (1 + 1e-12)  # type: ignore[arg-type]
    # a database may hand timestamps back in another zone: same instant, same key
    cet = timezone(timedelta(hours=1))
    moved = {
        (k[0], k[1].astimezone(cet)): {**v, "timestamp": k[1].astimezone(cet)} for k, v in actual.items()
    }
    assert_rows_equal(expected, moved)


def test_assert_rows_equal_reports_missing_extra_and_cells() -> None:
    expected = _rows()
    actual = {k: dict(v) for k, v in expected.items()}
    del actual[("R", at(0))]
    actual[("R", at(9))] = dict(actual[("R", at(1))])
    actual[("R", at(1))]["production_mw"] = 11.0
    actual[("R", at(2))]["temperature_c"] = 0.0  # NULL vs 0.0 differs
    actual[("R", at(3))]["is_weekend"] = 1  # bool column must be a bool
    del actual[("R", at(4))]["hour_of_day"]
    with pytest.raises(AssertionError) as info:
        assert_rows_equal(expected, actual)
    text = str(info.value)
    assert "1 missing, 1 extra, 4 differing cells in 4 rows" in text
    assert repr(("R", at(0))) in text and repr(("R", at(9))) in text
    assert "production_mw: expected 10.0, actual 11.0" in text
    assert "temperature_c: expected None, actual 0.0" in text
    assert "is_weekend: expected True, actual 1" in text
    assert "hour_of_day: expected 4, actual <no such column>" in text


def test_assert_rows_equal_limits_cells_listed() -> None:
    expected = _rows()
    actual = {k: {c: (v + 1 if type(v) is float else v) for c, v in r.items()} for k, r in expected.items()}
    with pytest.raises(AssertionError) as info:
        assert_rows_equal(expected, actual, limit=3)
    text = str(info.value)
    assert "differing cells (first 3 of" in text
    assert len([line for line in text.splitlines() if ": expected" in line]) == 3


# --- the realistic scenario ---------------------------------------------------------------------------------


def produce(order: list[tuple[str, bytes | None, bytes]], partitions: int = 1) -> list[RawMessage]:
    """Offsets as a producer gets them: per topic and partition, in production order (partition by key)."""
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for topic, key, value in order:
        partition = (sum(key) % partitions) if key else 0
        out.append(RawMessage(topic, partition, offsets[(topic, partition)], key, value))
        offsets[(topic, partition)] += 1
    return out


@pytest.fixture(scope="module")
def full_feed_result() -> tuple[Any, list[RawMessage], Reference]:
    feed = build_feed()
    messages = produce(interleave(feed), partitions=3)
    return feed, messages, reference_features(messages)


def test_full_dataset_rows_and_rejections(full_feed_result: tuple[Any, list[RawMessage], Reference]) -> None:
    feed, messages, ref = full_feed_result
    assert len(ref.rows) == 5088
    assert len(feed.malformed) >= 12
    rejected = Counter((m.topic, m.key, m.value) for m, _ in ref.rejected)
    assert rejected == Counter(feed.malformed)
    assert len(messages) == len(feed.solar) + len(feed.weather) + len(feed.malformed)
    assert {reason.split(":")[0] for _, reason in ref.rejected}.__len__() >= 10  # different kinds


def test_full_dataset_values_match_csv(full_feed_result: tuple[Any, list[RawMessage], Reference]) -> None:
    _, _, ref = full_feed_result
    rows = load_rows()
    assert len(rows) == 5088
    production = [float(r["production_mw"]) for r in rows]  # type: ignore[arg-type]
    temps = [r["temperature_c"] for r in rows]
    clouds = [r["cloud_cover_pct"] for r in rows]
    expected: dict[tuple[str, datetime], dict[str, object]] = {}
    for i, r in enumerate(rows):
        stamp = r["timestamp"]
        assert isinstance(stamp, datetime)
        lo = max(0, i - 23)
        cloud_window = [c for c in clouds[lo : i + 1] if c is not None]
        expected[("DE_50hertz", stamp)] = {
            "region": "DE_50hertz",
            "timestamp": stamp,
            "production_mw": production[i],
            "temperature_c": temps[i],
            "cloud_cover_pct": clouds[i],
            "solar_radiation_wm2": r["solar_radiation_wm2"],
            "latitude": 53.6332,
            "longitude": 9.9881,
            "production_ma_24h": sum(production[lo : i + 1]) / (i + 1 - lo),
            "temperature_ma_24h": sum(temps[lo : i + 1]) / (i + 1 - lo),  # type: ignore[arg-type]
            "cloud_cover_ma_24h": sum(cloud_window) / len(cloud_window),  # type: ignore[arg-type]
            "production_lag_1h": production[i - 1] if i >= 1 else None,
            "production_lag_24h": production[i - 24] if i >= 24 else None,
            "hour_of_day": stamp.hour,
            "day_of_week": stamp.weekday(),
            "is_weekend": stamp.weekday() >= 5,
        }
    assert_rows_equal(expected, ref.rows)
    assert sum(1 for r in ref.rows.values() if r["cloud_cover_pct"] is None) == 5
    assert sum(1 for r in ref.rows.values() if r["solar_radiation_wm2"] is None) == 10


def test_feed_is_messy_as_promised() -> None:
    feed = build_feed()
    payloads = [json.loads(v) for _, v in feed.solar + feed.weather]
    stamps = [p["timestamp"] for p in payloads]
    assert sum(isinstance(s, int) for s in stamps) > 50
    assert sum(isinstance(s, float) for s in stamps) > 50
    assert sum(isinstance(s, str) and s.endswith("Z") for s in stamps) > 5000
    other_offsets = [s for s in stamps if isinstance(s, str) and s[-6] in "+-" and not s.endswith("+00:00")]
    assert len(other_offsets) > 200
    off_hour = [s for s in stamps if isinstance(s, str) and datetime.fromisoformat(s).minute != 0]
    assert len(off_hour) > 200
    for stamp in off_hour:  # off by less than 30 minutes: still the same hour
        moment = datetime.fromisoformat(stamp).replace(tzinfo=datetime.fromisoformat(stamp).tzinfo or UTC)
        assert abs(moment - _utc_hour(stamp)) < timedelta(minutes=30)
    duplicates = sum(n - 1 for n in Counter(feed.solar).values()) + sum(
        n - 1 for n in Counter(feed.weather).values()
    )
    assert 0.01 * 2 * 5088 < duplicates < 0.04 * 2 * 5088
    no_region = [(k, json.loads(v)) for k, v in feed.weather if "region" not in json.loads(v)]
    assert len(no_region) > 300 and all(k == b"DE_50hertz" for k, _ in no_region)
    assert sum(k == b"DE_50hertz" for k, _ in feed.solar + feed.weather) > 0.8 * len(payloads)
    # shuffled within blocks of 6 hours: out of hour order, yet never far from it (a duplicate may trail into
    # the next block by a few positions)
    hours = [_utc_hour(json.loads(v)["timestamp"]) for _, v in feed.solar]
    assert hours != sorted(hours)
    assert all(abs(h - sorted(hours)[i]) <= timedelta(hours=8) for i, h in enumerate(hours))


def _utc_hour(stamp: str | float) -> datetime:
    moment = (
        datetime.fromtimestamp(stamp, UTC)
        if isinstance(stamp, int | float)
        else datetime.fromisoformat(stamp).replace(tzinfo=datetime.fromisoformat(stamp).tzinfo or UTC)
    )
    return (moment + timedelta(minutes=30)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def test_feed_is_deterministic_and_interleave_keeps_everything() -> None:
    a, b = build_feed(hours=200, seed=1), build_feed(hours=200, seed=1)
    assert a == b
    assert build_feed(hours=200, seed=2).solar != a.solar
    order = interleave(a)
    expected = Counter(
        [(a.solar_topic, k, v) for k, v in a.solar] + [(a.weather_topic, k, v) for k, v in a.weather]
    )
    expected.update(a.malformed)
    assert Counter(order) == expected
    # weather trails solar: when the first weather message goes out, weather_lag_hours of solar are out
    first_weather = next(i for i, m in enumerate(order) if m[0] == a.weather_topic and m not in a.malformed)
    solar_before = sum(1 for m in order[:first_weather] if m[0] == a.solar_topic and m not in a.malformed)
    assert solar_before == a.weather_lag_messages + 1 == 7
    # malformed spread through, not bunched at one end
    positions = [i for i, m in enumerate(order) if m in a.malformed]
    assert positions[0] < len(order) // 5 and positions[-1] > 4 * len(order) // 5
    assert len(interleave(a, 0)) == len(order)


def test_multi_region_feed() -> None:
    regions = ("DE_50hertz", "DE_tennet", "DE_amprion")
    feed = build_feed(hours=300, regions=regions, seed=5)
    ref = reference_features(produce(interleave(feed), partitions=4))
    assert len(ref.rows) == 900
    assert Counter((m.topic, m.key, m.value) for m, _ in ref.rejected) == Counter(feed.malformed)
    stamp = datetime(2019, 1, 5, 12, tzinfo=UTC)
    base, derived = ref.rows[("DE_50hertz", stamp)], ref.rows[("DE_tennet", stamp)]
    assert derived["production_mw"] == pytest.approx(float(base["production_mw"]) * 0.8, abs=1e-3)  # type: ignore[arg-type]
    assert derived["temperature_c"] != base["temperature_c"]
    for r in ref.rows.values():
        assert -90 <= r["temperature_c"] <= 70  # type: ignore[operator]
        assert r["solar_radiation_wm2"] is None or 0 <= r["solar_radiation_wm2"] <= 2000  # type: ignore[operator]
    # the same rows whatever the interleaving
    other = reference_features(produce(interleave(feed, 40), partitions=2))
    assert_rows_equal(ref.rows, other.rows)


def test_nearest_location_on_real_feed() -> None:
    feed = build_feed(hours=48, regions=("A", "B"))
    # strip keys and regions from weather: the location decides (B's station is 1.1 deg south, 1.7 deg east)
    stripped = [
        (None, json.dumps({k: v for k, v in json.loads(v).items() if k != "region"}).encode())
        for _, v in feed.weather
    ]
    messages = produce([(WEATHER, k, v) for k, v in stripped] + [(SOLAR, k, v) for k, v in feed.solar])
    locations = {"A": (53.6332, 9.9881), "B": (52.5332, 11.6881)}
    ref = reference_features(messages, region_locations=locations)
    assert len(ref.rows) == 96
    assert not ref.rejected
