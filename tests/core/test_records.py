"""Message schemas: what is accepted, what becomes a dead letter with which reason."""

from __future__ import annotations

import json

import pytest

from solar_agents.core.hours import Position
from solar_agents.core.records import (
    InvalidMessage,
    RegionResolver,
    dead_letter,
    parse_solar,
    parse_weather,
)

NONE = RegionResolver({}, "DE")
SOLAR = {"timestamp": "2019-01-01T00:00:00Z", "production_mw": 12.5, "region": "DE_50hertz"}
WEATHER = {
    "timestamp": 1546300800,
    "temperature_c": 8.1,
    "cloud_cover_pct": None,
    "solar_radiation_wm2": 0,
    "latitude": 53.6,
    "longitude": 9.9,
}


def b(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_valid_solar() -> None:
    record, region = parse_solar(b({**SOLAR, "extra": [1, 2]}), partition=3, offset=7)
    assert region == "DE_50hertz"
    assert record.production_mw == 12.5 and record.position == Position(0, 7, 3)


def test_valid_weather_region_from_payload_key_location_default() -> None:
    record, region = parse_weather(b({**WEATHER, "region": "X"}), b"K", 0, 0, NONE)
    assert region == "X" and record.cloud_cover_pct is None and record.solar_radiation_wm2 == 0.0
    assert parse_weather(b(WEATHER), b"K", 0, 0, NONE)[1] == "K"
    assert parse_weather(b({**WEATHER, "region": None}), b"K", 0, 0, NONE)[1] == "K"
    assert parse_weather(b(WEATHER), None, 0, 0, NONE)[1] == "DE"
    near = RegionResolver({"HAMBURG": (53.6, 10.0), "MUNICH": (48.1, 11.6)}, "DE")
    assert parse_weather(b(WEATHER), None, 0, 0, near)[1] == "HAMBURG"
    assert parse_weather(b(WEATHER), b"\xff", 0, 0, near)[1] == "HAMBURG"  # not UTF-8: not a region


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b({k: v for k, v in SOLAR.items() if k != "production_mw"}), "missing field 'production_mw'"),
        (b({**SOLAR, "production_mw": "12"}), "production_mw"),
        (b({**SOLAR, "production_mw": True}), "production_mw"),
        (b({**SOLAR, "production_mw": -1}), "greater than or equal to 0"),
        (b({**SOLAR, "production_mw": 1.7e308}), "less than or equal to 10000000"),
        (b'{"timestamp": "2019-01-01T00:00:00Z", "production_mw": NaN, "region": "R"}', "production_mw"),
        (b({**SOLAR, "timestamp": "yesterday"}), "timestamp"),
        (b({**SOLAR, "timestamp": False}), "timestamp"),
        (b({**SOLAR, "region": ""}), "region"),
        (b({**SOLAR, "region": "x" * 65}), "region"),
        (b({**SOLAR, "region": "a\u0000b"}), "region"),
    ],
)
def test_bad_solar(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        parse_solar(value, 0, 0)
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature_c": 120}, "temperature_c"),
        ({"cloud_cover_pct": 101}, "cloud_cover_pct"),
        ({"solar_radiation_wm2": 2001}, "solar_radiation_wm2"),
        ({"latitude": 91}, "latitude"),
        ({"longitude": None}, "longitude"),
        ({"region": 7}, "region"),
    ],
)
def test_bad_weather(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidMessage, match=field):
        parse_weather(b({**WEATHER, **change}), None, 0, 0, NONE)


def test_dead_letters_carry_what_fits_and_always_the_facts() -> None:
    whole = dead_letter("raw", 2, 41, b"k", b"not json", "not JSON", 1_000_000)
    assert (whole.key, whole.value) == (b"k", b"not json") and "dropped" not in whole.headers
    assert whole.headers["source_size"] == b"8" and whole.headers["source_offset"] == b"41"

    big = dead_letter("raw", 0, 7, b"k", b"x" * 5_000_000, "not JSON", 1_000_000)
    assert (big.key, big.value, big.headers["dropped"]) == (b"k", b"", b"value")
    assert big.headers["source_size"] == b"5000000" and big.headers["reason"] == b"not JSON"

    huge_key = dead_letter("raw", 0, 8, b"k" * 2_000_000, b"v", "reason", 1_000_000)
    assert (huge_key.key, huge_key.value, huge_key.headers["dropped"]) == (None, b"", b"key,value")

    tombstone = dead_letter("raw", 0, 9, None, None, "empty message (no value)", 1_000_000)
    assert (tombstone.key, tombstone.value, tombstone.headers["source_size"]) == (None, b"", b"-1")

    # Whatever is cut, the letter itself (bytes and headers) stays within the limit.
    for letter in (whole, big, huge_key, tombstone):
        size = len(letter.key or b"") + len(letter.value)
        size += sum(len(k) + len(v) for k, v in letter.headers.items())
        assert size < 1_000_000
    long_reason = dead_letter("raw", 0, 1, None, b"v", "r" * 10_000, 1_000_000)
    assert len(long_reason.headers["reason"]) == 500
