"""The pure core against the independent reference: random regions and hours with gaps, NULL weather,
duplicates, corrections and off-hour times, fed in any order, in any batches, across restarts."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import Declared, RawMessage, assert_rows_equal, reference_features
from state_util import through_tables

from solar_agents.core.feature_set import Feature, FeatureSet
from solar_agents.core.features import FeatureRow, row_type
from solar_agents.core.hours import Record, RegionHours, hour_start
from solar_agents.core.records import InvalidMessage, RegionResolver, parse_solar, parse_weather
from solar_agents.core.wire import decode_records, encode_records
from solar_agents.steps.align import align_batch

SOLAR, WEATHER = "solar_production_raw", "weather_raw"
BASE = int(datetime(2019, 3, 30, tzinfo=UTC).timestamp())  # spans a weekend and a DST change (UTC ignores it)

maybe_float = st.one_of(st.none(), st.floats(-20, 35, allow_nan=False).map(lambda x: round(x, 2)))


@st.composite
def feeds(draw: st.DrawFn) -> list[RawMessage]:
    """Messages as produced: offsets count per (topic, partition) in production order."""
    regions = draw(st.lists(st.sampled_from(["A", "B", "C|x"]), min_size=1, max_size=3, unique=True))
    payloads: list[tuple[str, bytes | None, bytes]] = []
    for region in regions:
        solar_hours = draw(st.sets(st.integers(0, 100), max_size=draw(st.sampled_from([8, 30, 60]))))
        weather_hours = draw(st.sets(st.integers(0, 100), max_size=draw(st.sampled_from([8, 30, 60]))))
        for hour in solar_hours:
            minutes = draw(st.sampled_from([0, 0, 0, 7, -12, 29]))
            ts = BASE + hour * 3600 + minutes * 60
            mw = draw(st.floats(0, 5000, allow_nan=False).map(lambda x: round(x, 3)))
            stamp: object = ts if draw(st.booleans()) else datetime.fromtimestamp(ts, UTC).isoformat()
            payloads.append((SOLAR, region.encode(), json.dumps({"timestamp": stamp, "production_mw": mw,
                                                                  "region": region}).encode()))  # fmt: skip
            if draw(st.integers(0, 9)) == 0:  # a correction: same time, new value, later in the log
                payloads.append((SOLAR, region.encode(), json.dumps({"timestamp": stamp,
                                 "production_mw": mw + 1, "region": region}).encode()))  # fmt: skip
        for hour in weather_hours:
            minutes = draw(st.sampled_from([0, 0, 3, -20]))
            body = {
                "timestamp": BASE + hour * 3600 + minutes * 60,
                "temperature_c": draw(maybe_float),
                "cloud_cover_pct": draw(st.one_of(st.none(), st.sampled_from([0.0, 12.5, 50.0, 100.0]))),
                "solar_radiation_wm2": draw(st.one_of(st.none(), st.floats(0, 900, allow_nan=False))),
                "latitude": 53.6,
                "longitude": 9.9,
            }
            keyed = draw(st.booleans())
            if not keyed:
                body["region"] = region
            payloads.append((WEATHER, region.encode() if keyed else None, json.dumps(body).encode()))
    payloads.append((SOLAR, None, b"{broken"))
    # Exact duplicates, then a production order: the log order of each partition.
    dupes = draw(st.lists(st.sampled_from(payloads), max_size=10))
    order = draw(st.permutations(payloads + dupes))
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    messages = []
    for topic, key, value in order:
        partition = draw(st.integers(0, 1))
        messages.append(RawMessage(topic, partition, offsets[topic, partition], key, value))
        offsets[topic, partition] += 1
    return messages


def run_core(
    arrival: list[RawMessage],
    batch: int,
    restart_at: int | None,
    window: int = 24,
    declared: tuple[Declared, ...] = (),
) -> dict[tuple[str, datetime], dict[str, object]]:
    """What the agents do, minus Kafka: parse, group by region, align, keep the latest row per key."""
    resolver = RegionResolver({}, "DE")
    features = FeatureSet.of(window, (Feature(*d) for d in declared))  # type: ignore[arg-type]
    rows = row_type(features)
    states: dict[str, RegionHours] = {}
    sink: dict[tuple[str, int], FeatureRow] = {}
    for start in range(0, len(arrival), batch):
        if restart_at is not None and start >= restart_at:
            # A restart: state comes back only from what the tables hold.
            restored = {region: through_tables(state) for region, state in states.items()}
            states, restart_at = restored, None
        by_region: dict[str, list[Record]] = defaultdict(list)
        for m in arrival[start : start + batch]:
            try:
                if m.topic == SOLAR:
                    record, region = parse_solar(m.value, m.partition, m.offset)
                else:
                    record, region = parse_weather(m.value, m.key, m.partition, m.offset, resolver)  # type: ignore[assignment]
            except InvalidMessage:
                continue
            by_region[region].append(record)
        for region, records in by_region.items():
            state = states.setdefault(region, RegionHours(region))
            aligned = align_batch(
                state, decode_records(encode_records(records)), rows, features.retention(10_000)
            )
            for row in aligned.rows:
                sink[row.key] = row
    out = {}
    for (region, hour), row in sink.items():
        values = dict(zip(rows.columns, row.as_tuple(), strict=True))
        values["timestamp"] = hour_start(hour)
        out[(region, hour_start(hour))] = values
    return out


# Feature sets beside SPEC's own: every kind, nulls in the weather fields, windows longer than the history
# kept between batches, and a SPEC column redefined.
DECLARED: tuple[tuple[Declared, ...], ...] = (
    (),
    (),
    (
        ("production_ma_168h", "mean", "production_mw", 168),
        ("cloud_cover_max_6h", "max", "cloud_cover_pct", 6),
        ("temperature_lag_24h", "lag", "temperature_c", 24),
        ("production_sum_3h", "sum", "production_mw", 3),
    ),
    (
        ("temperature_min_5h", "min", "temperature_c", 5),
        ("radiation_count_30h", "count", "solar_radiation_wm2", 30),
        ("production_lag_1h", "lag", "production_mw", 2),
        ("cloud_cover_lag_1h", "lag", "cloud_cover_pct", 1),
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(messages=feeds(), data=st.data())
def test_core_equals_reference_in_any_order(messages: list[RawMessage], data: st.DataObject) -> None:
    window = data.draw(st.sampled_from([24, 24, 3, 1]))
    declared = data.draw(st.sampled_from(DECLARED))
    expected = reference_features(messages, window_hours=window, features=declared)
    arrival = data.draw(st.permutations(messages))
    batch = data.draw(st.integers(1, 40))
    restart = data.draw(st.one_of(st.none(), st.integers(0, len(messages))))
    assert_rows_equal(expected.rows, run_core(arrival, batch, restart, window, declared))
