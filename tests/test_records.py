"""Message schemas: what is accepted, what becomes a dead letter with which reason, internal encodings."""

from __future__ import annotations

import json
from dataclasses import asdict, astuple, fields

import pytest
from state_util import through_tables

from solar_agents.features import FeatureRow
from solar_agents.hours import Position, RegionHours, Solar, Weather
from solar_agents.records import (
    InvalidMessage,
    RegionResolver,
    block_hours,
    block_key,
    block_of,
    block_value,
    day_key,
    dead_letter,
    decode_records,
    decode_rows,
    encode_records,
    encode_rows,
    hour_key,
    load_block,
    load_hour,
    load_region,
    parse_solar,
    parse_weather,
    region_value,
    split_table_key,
    table_bytes,
    table_value,
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


def test_internal_encodings_round_trip() -> None:
    solar = Solar(430_000, Position(5, 6, 7), 1.5)
    weather = Weather(430_001, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    assert decode_records(encode_records([solar, weather])) == [solar, weather]
    state = RegionHours("R|x")
    state.solar[solar.hour] = solar
    state.weather[weather.hour] = weather
    assert through_tables(state) == state
    assert split_table_key(block_key("R|x", 8_958)) == ("R|x", 8_958, "block")
    assert block_of(solar.hour) == 430_000 // 48
    assert split_table_key(day_key("R|x", 17_916)) == ("R|x", 17_916, "day")
    # An hour entry of an earlier version still loads.
    older = RegionHours("R|x")
    load_hour(older, solar.hour, json.loads(json.dumps([[5, 6, 7, 1.5], None])))
    assert older.solar == state.solar
    assert split_table_key(hour_key("R|x", 430_000)) == ("R|x", 430_000, "hour")
    row = FeatureRow("R", 1, 1.0, None, 2.0, 3.0, 4.0, 5.0, 6.0, None, 7.0, None, 8.0, 1, 3, False)
    assert decode_rows(encode_rows([row])) == [row]


def test_halves_are_named_and_earlier_short_names_still_read() -> None:
    solar = Solar(430_000, Position(5, 6, 7), 1.5)
    weather = Weather(430_001, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    message = json.loads(encode_records([solar, weather]))
    assert sorted(message) == ["solar", "weather"]
    earlier = {"s": message["solar"], "w": message["weather"]}  # as versions before named them
    assert decode_records(json.dumps(earlier).encode()) == [solar, weather]
    state = RegionHours("R")
    state.solar[solar.hour] = solar
    state.weather[weather.hour] = weather
    block = block_value(state, block_of(solar.hour))
    assert block is not None and sorted(block) == ["solar", "weather"]
    loaded = RegionHours("R")
    load_block(loaded, {"s": block["solar"], "w": block["weather"]})
    assert (loaded.solar, loaded.weather) == (state.solar, state.weather)
    assert block_hours({"s": block["solar"], "w": block["weather"]}) == {solar.hour, weather.hour}


ROWS = [
    FeatureRow("R", 1, 1.0, None, 2.0, 3.0, 4.0, 5.0, 6.0, None, 7.0, None, 8.0, 1, 3, False),
    FeatureRow("S|x", 2, 0.5, -1.5, None, 0.0, 53.6, 9.9, 0.75, -1.5, None, 1.0, None, 2, 6, True),
]


def test_rows_message_names_its_columns() -> None:
    data = json.loads(encode_rows(ROWS))
    assert data["columns"] == [f.name for f in fields(FeatureRow)]
    assert [dict(zip(data["columns"], v, strict=True)) for v in data["rows"]] == [asdict(r) for r in ROWS]
    assert decode_rows(encode_rows(ROWS)) == ROWS
    assert decode_rows(encode_rows([])) == []


def test_rows_message_of_earlier_versions_still_decodes() -> None:
    # Before the named form, a message was a list of rows, each its values in field order.
    positional = json.dumps([[*astuple(r)] for r in ROWS]).encode()
    assert decode_rows(positional) == ROWS


def test_rows_message_is_read_by_name() -> None:
    names = [f.name for f in fields(FeatureRow)]
    # Another order: read by name, not shifted.
    backwards = {"columns": names[::-1], "rows": [[*astuple(r)][::-1] for r in ROWS]}
    assert decode_rows(json.dumps(backwards).encode()) == ROWS
    # A column this version does not have (a message of a later one): left out.
    wider = {"columns": ["extra", *names], "rows": [["x", *astuple(r)] for r in ROWS]}
    assert decode_rows(json.dumps(wider).encode()) == ROWS
    # A field this version needs and the message lacks: refused, never made up or shifted.
    narrower = {"columns": names[:-1], "rows": [[*astuple(r)][:-1] for r in ROWS]}
    with pytest.raises(ValueError, match="is_weekend"):
        decode_rows(json.dumps(narrower).encode())


def test_region_values_round_trip_and_read_older_ones() -> None:
    # Every scalar field of the state, each with its own value, so a field the encoding forgot shows up.
    scalars = [f.name for f in fields(RegionHours) if f.name not in ("region", "solar", "weather")]
    assert {"latest_solar", "latest_weather", "pruned_below", "applied_through", "scan_from"} <= set(scalars)
    state = RegionHours("R", **{name: 430_000 + i for i, name in enumerate(scalars)})
    restored = load_region("R", json.loads(json.dumps(region_value(state))))
    for name in scalars:
        assert getattr(restored, name) == getattr(state, name), name
    assert restored == state
    assert load_region("R", [430_010, 430_008]).applied_through is None


def test_table_values_are_compact_json_and_read_what_faust_wrote() -> None:
    # Earlier versions let Faust's JSON codec encode the table values; a changelog they wrote still restores.
    from faust.serializers import codecs

    state = RegionHours("R", latest_solar=430_001, pruned_below=429_900)
    value = region_value(state)
    assert table_bytes(value) == json.dumps(value, separators=(",", ":")).encode()
    assert table_value(table_bytes(value)) == value
    assert table_value(codecs.dumps("json", value)) == value
    block = {"solar": [[430_001, 12.5]], "weather": []}
    assert table_value(codecs.dumps("json", block)) == table_value(table_bytes(block)) == block


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
