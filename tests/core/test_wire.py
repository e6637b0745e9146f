"""Wire encodings of the internal topics and tables: records messages, hour blocks, rows, region values."""

from __future__ import annotations

import json
from dataclasses import asdict, astuple, fields

import pytest
from state_util import through_tables

from solar_agents.core.features import SPEC_ROWS, FeatureRow
from solar_agents.core.hours import Position, RegionHours, Solar, Weather
from solar_agents.core.wire import (
    REGIONS_KEY,
    block_fields,
    block_hours,
    block_key,
    block_of,
    block_value,
    decode_message_records,
    decode_records,
    decode_rows,
    encode_records,
    encode_region_records,
    encode_rows,
    home_block,
    load_block,
    load_region,
    region_value,
    split_block_key,
    table_bytes,
    table_value,
)


def test_internal_encodings_round_trip() -> None:
    solar = Solar(430_000, Position(5, 6, 7), 1.5)
    weather = Weather(430_001, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    assert decode_records(encode_records([solar, weather])) == [solar, weather]
    state = RegionHours("R|x")
    state.solar[solar.hour] = solar
    state.weather[weather.hour] = weather
    assert through_tables(state) == state
    assert split_block_key(block_key("R|x", 8_958)) == ("R|x", 8_958)
    assert block_of(solar.hour) == 430_000 // 48
    row = FeatureRow("R", 1, 1.0, None, 2.0, 3.0, 4.0, 5.0, 6.0, None, 7.0, None, 8.0, 1, 3, False)
    assert decode_rows(encode_rows([row], SPEC_ROWS), SPEC_ROWS) == [row]


def test_halves_are_named() -> None:
    solar = Solar(430_000, Position(5, 6, 7), 1.5)
    weather = Weather(430_001, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    message = json.loads(encode_records([solar, weather]))
    assert sorted(message) == ["solar", "weather"]
    state = RegionHours("R")
    state.solar[solar.hour] = solar
    state.weather[weather.hour] = weather
    block = block_value(state, block_of(solar.hour))
    assert block is not None and sorted(block) == ["solar", "weather"]
    loaded = RegionHours("R")
    load_block(loaded, block)
    assert (loaded.solar, loaded.weather) == (state.solar, state.weather)
    assert block_hours(block) == {solar.hour, weather.hour}


ROWS = [
    FeatureRow("R", 1, 1.0, None, 2.0, 3.0, 4.0, 5.0, 6.0, None, 7.0, None, 8.0, 1, 3, False),
    FeatureRow("S|x", 2, 0.5, -1.5, None, 0.0, 53.6, 9.9, 0.75, -1.5, None, 1.0, None, 2, 6, True),
]


def test_rows_message_names_its_columns() -> None:
    data = json.loads(encode_rows(ROWS, SPEC_ROWS))
    assert data["columns"] == [f.name for f in fields(FeatureRow)]
    assert [dict(zip(data["columns"], v, strict=True)) for v in data["rows"]] == [asdict(r) for r in ROWS]
    assert decode_rows(encode_rows(ROWS, SPEC_ROWS), SPEC_ROWS) == ROWS
    assert decode_rows(encode_rows([], SPEC_ROWS), SPEC_ROWS) == []


def test_rows_message_is_read_by_name() -> None:
    names = [f.name for f in fields(FeatureRow)]
    # Another order: read by name, not shifted.
    backwards = {"columns": names[::-1], "rows": [[*astuple(r)][::-1] for r in ROWS]}
    assert decode_rows(json.dumps(backwards).encode(), SPEC_ROWS) == ROWS
    # A column this version does not have (a message of a later one): left out.
    wider = {"columns": ["extra", *names], "rows": [["x", *astuple(r)] for r in ROWS]}
    assert decode_rows(json.dumps(wider).encode(), SPEC_ROWS) == ROWS
    # A field this version needs and the message lacks: refused, never made up or shifted.
    narrower = {"columns": names[:-1], "rows": [[*astuple(r)][:-1] for r in ROWS]}
    with pytest.raises(ValueError, match="is_weekend"):
        decode_rows(json.dumps(narrower).encode(), SPEC_ROWS)


def test_region_values_round_trip() -> None:
    # Every scalar field of the state, each with its own value, so a field the encoding forgot shows up.
    scalars = [f.name for f in fields(RegionHours) if f.name not in ("region", "solar", "weather")]
    assert {"latest_solar", "latest_weather", "pruned_below", "applied_through", "scan_from"} <= set(scalars)
    state = RegionHours("R", **{name: 430_000 + i for i, name in enumerate(scalars)})
    restored = load_region("R", json.loads(json.dumps(region_value(state))))
    for name in scalars:
        assert getattr(restored, name) == getattr(state, name), name
    assert restored == state


def test_table_values_are_compact_json_as_faust_writes_it() -> None:
    # The same JSON as Faust's own codec writes: a table value reads the same either way.
    from faust.serializers import codecs

    state = RegionHours("R", latest_solar=430_001, pruned_below=429_900)
    value = region_value(state)
    assert table_bytes(value) == json.dumps(value, separators=(",", ":")).encode()
    assert table_value(table_bytes(value)) == value
    assert table_value(codecs.dumps("json", value)) == value
    block = {"solar": [[430_001, 12.5]], "weather": []}
    assert table_value(codecs.dumps("json", block)) == table_value(table_bytes(block)) == block


def test_a_records_message_of_several_regions_round_trips_and_the_earlier_forms_are_still_read() -> None:
    weather = Weather(430_001, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    a = [Solar(430_000, Position(5, 6, 7), 1.5), weather]
    b = [Solar(430_002, Position(0, 9, 1), 0.0)]
    value = encode_region_records([("R|x", a), ("DE", b)])
    assert decode_message_records(REGIONS_KEY, value) == [("R|x", a), ("DE", b)]
    # The names once, each record with its region's index.
    assert json.loads(value) == {
        "regions": ["R|x", "DE"],
        "solar": [[0, 430_000, 5, 6, 7, 1.5], [1, 430_002, 0, 9, 1, 0.0]],
        "weather": [[0, 430_001, 1, 2, 3, None, 50.0, 0.0, 53.6, 9.9]],
    }
    # As earlier versions wrote them: region by region, and one region's keyed by it.
    region_by_region = json.dumps(
        [
            [
                "R|x",
                {
                    "solar": [[430_000, 5, 6, 7, 1.5]],
                    "weather": [[430_001, 1, 2, 3, None, 50.0, 0.0, 53.6, 9.9]],
                },
            ],
            ["DE", {"solar": [[430_002, 0, 9, 1, 0.0]], "weather": []}],
        ]
    ).encode()
    assert decode_message_records(REGIONS_KEY, region_by_region) == [("R|x", a), ("DE", b)]
    assert decode_message_records(b"DE", encode_records(b)) == [("DE", b)]


def test_a_regions_fields_are_in_the_block_of_its_latest_hour() -> None:
    state = RegionHours("R", latest_solar=430_049, latest_weather=430_050, applied_through=7)
    state.solar[430_000] = Solar(430_000, Position(5, 6, 7), 1.5)
    state.solar[430_049] = Solar(430_049, Position(5, 7, 7), 2.5)
    state.weather[430_050] = Weather(430_050, Position(1, 2, 3), None, 50.0, 0.0, 53.6, 9.9)
    home = home_block(state)
    assert home == block_of(430_050) == block_of(430_000) + 1
    value = block_value(state, home, home=True)
    assert value is not None and block_fields(value) == state.snapshot() == region_value(state)
    other = block_value(state, block_of(430_000))
    assert other is not None and block_fields(other) is None
    assert home_block(RegionHours("S", latest_solar=430_000)) is None, "no hours kept: the regions table"
