"""Independent reference implementation of docs/SPEC.md.

Computes the ideal content of ``features_enriched`` and the set of rejected messages over a whole input at
once: no streaming, no lateness, no state. Written straight from SPEC and shares no code with ``solar_agents``
(do not import it here), so that the pipeline can be checked against it.

Decisions where SPEC is silent (the pipeline follows the same):

- A value must be UTF-8 (strictly; a UTF-8 BOM is not JSON) JSON text without NaN/Infinity literals, and an
  object. Duplicate object keys: the last one wins (``json.loads``). Unknown fields are ignored.
- Numbers are JSON int or float, never bool; a number is rejected unless it converts to a finite float.
- ``timestamp``: a ``datetime.fromisoformat`` string (naive means UTC) or epoch seconds (int/float). Time is
  integer microseconds since the epoch: ISO exactly, epoch ``x`` as ``round(x * 1_000_000)``. Instants (and
  their hours) outside years 1..9999 UTC are rejected.
- Hour: nearest hour, half past rounds up; distance ``abs(us - hour_us)``.
- Region: solar needs payload ``region``; weather takes payload ``region`` (a string of 1-64 characters if
  the field is there at all, JSON null included), else the key decoded as UTF-8 if it has 1-64 characters,
  else the nearest ``region_locations`` entry (haversine; ties -> smallest name), else ``default_region``.
- Per (topic, region, hour): smallest distance, then greater offset, then greater partition.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = [
    "COLUMNS",
    "RawMessage",
    "Reference",
    "assert_rows_equal",
    "declared_features",
    "reference_features",
]

COLUMNS: tuple[str, ...] = (
    "region",
    "timestamp",
    "production_mw",
    "temperature_c",
    "cloud_cover_pct",
    "solar_radiation_wm2",
    "latitude",
    "longitude",
    "production_ma_24h",
    "temperature_ma_24h",
    "cloud_cover_ma_24h",
    "production_lag_1h",
    "production_lag_24h",
    "hour_of_day",
    "day_of_week",
    "is_weekend",
)

HOUR_US = 3_600_000_000
HALF_HOUR_US = 1_800_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _ONE_US
_MAX_US = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_US
_EARTH_RADIUS_KM = 6371.0088

RowKey = tuple[str, datetime]


@dataclass(frozen=True)
class RawMessage:
    """One Kafka message as consumed: where it came from and its raw bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Reference:
    """The ideal result: rows keyed by (region, hour start in UTC) and the rejected messages with reasons."""

    rows: dict[RowKey, dict[str, object]] = field(default_factory=dict)
    rejected: list[tuple[RawMessage, str]] = field(default_factory=list)


class _Reject(Exception):
    """A message breaks a rule; the argument is the one-line reason."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _parse_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise _Reject("no value (a tombstone)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject("not valid UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise _Reject(f"not JSON: {first_line}") from None
    if not isinstance(obj, dict):
        raise _Reject(f"not a JSON object: {type(obj).__name__}")
    return obj


def _as_finite_float(name: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _Reject(f"field {name!r} is not a number: {_short(raw)}")
    try:
        number = float(raw)
    except OverflowError:
        raise _Reject(f"field {name!r} is not finite: {_short(raw)}") from None
    if not math.isfinite(number):
        raise _Reject(f"field {name!r} is not finite: {_short(raw)}")
    return number


def _number(
    obj: Mapping[str, Any],
    name: str,
    *,
    required: bool,
    low: float | None = None,
    high: float | None = None,
) -> float | None:
    if name not in obj:
        if required:
            raise _Reject(f"missing field {name!r}")
        return None
    raw = obj[name]
    if raw is None:
        if required:
            raise _Reject(f"field {name!r} is null")
        return None
    number = _as_finite_float(name, raw)
    if low is not None and number < low:
        if high is None:
            raise _Reject(f"field {name!r} must be >= {_fmt(low)}: {_short(raw)}")
        raise _Reject(f"field {name!r} out of range [{_fmt(low)}, {_fmt(high)}]: {_short(raw)}")
    if high is not None and number > high:
        raise _Reject(f"field {name!r} out of range [{_fmt(low)}, {_fmt(high)}]: {_short(raw)}")
    return number


def _fmt(bound: float | None) -> str:
    if bound is None:
        return "-inf"
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _region_field(obj: Mapping[str, Any]) -> str:
    raw = obj["region"]
    if not isinstance(raw, str):
        raise _Reject(f"field 'region' is not a string: {_short(raw)}")
    if not 1 <= len(raw) <= 64:
        raise _Reject(f"field 'region' must have 1-64 characters, has {len(raw)}")
    if not _storable(raw):
        raise _Reject("field 'region' has a NUL or an unpaired surrogate")
    return raw


def _storable(text: str) -> bool:
    """A database text column holds neither NUL nor unpaired surrogates."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _timestamp_us(obj: Mapping[str, Any]) -> int:
    if "timestamp" not in obj:
        raise _Reject("missing field 'timestamp'")
    raw = obj["timestamp"]
    bad = f"field 'timestamp' is not an ISO 8601 string or epoch seconds: {_short(raw)}"
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise _Reject(bad) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        micros = (parsed - _EPOCH) // _ONE_US
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise _Reject(f"field 'timestamp' is not finite: {_short(raw)}")
        scaled = raw * 1_000_000
        if isinstance(scaled, float) and not math.isfinite(scaled):
            raise _Reject(f"field 'timestamp' out of range: {_short(raw)}")
        micros = round(scaled)
    else:
        raise _Reject(bad)
    if not _MIN_US <= micros <= _MAX_US or _hour_us(micros) > _MAX_US:
        raise _Reject(f"field 'timestamp' out of range: {_short(raw)}")
    return micros


def _hour_us(micros: int) -> int:
    return ((micros + HALF_HOUR_US) // HOUR_US) * HOUR_US


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat = p2 - p1
    dlon = math.radians(lon2 - lon1)
    a = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * _EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _nearest_region(lat: float, lon: float, locations: Mapping[str, tuple[float, float]]) -> str:
    return min(locations, key=lambda name: (_haversine_km(lat, lon, *locations[name]), name))


def _key_region(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if 1 <= len(text) <= 64 and _storable(text) else None


def _parse_solar(message: RawMessage) -> tuple[str, int, dict[str, float | None]]:
    obj = _parse_object(message.value)
    micros = _timestamp_us(obj)
    production = _number(obj, "production_mw", required=True, low=0.0, high=10_000_000.0)
    if "region" not in obj:
        raise _Reject("missing field 'region'")
    region = _region_field(obj)
    return region, micros, {"production_mw": production}


def _parse_weather(
    message: RawMessage,
    default_region: str,
    region_locations: Mapping[str, tuple[float, float]],
) -> tuple[str, int, dict[str, float | None]]:
    obj = _parse_object(message.value)
    micros = _timestamp_us(obj)
    values: dict[str, float | None] = {
        "temperature_c": _number(obj, "temperature_c", required=False, low=-90.0, high=70.0),
        "cloud_cover_pct": _number(obj, "cloud_cover_pct", required=False, low=0.0, high=100.0),
        "solar_radiation_wm2": _number(obj, "solar_radiation_wm2", required=False, low=0.0, high=2000.0),
        "latitude": _number(obj, "latitude", required=True, low=-90.0, high=90.0),
        "longitude": _number(obj, "longitude", required=True, low=-180.0, high=180.0),
    }
    if obj.get("region") is not None:
        region = _region_field(obj)
    else:
        from_key = _key_region(message.key)
        if from_key is not None:
            region = from_key
        elif region_locations:
            lat, lon = values["latitude"], values["longitude"]
            assert lat is not None and lon is not None
            region = _nearest_region(lat, lon, region_locations)
        else:
            region = default_region
    return region, micros, values


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


# A declared feature, as a features file writes it: (name, kind, field, hours).
Declared = tuple[str, str, str, int]


def declared_features(path: Path) -> list[Declared]:
    """The ``[[features]]`` entries of a features file (TOML), read here on their own."""
    data = tomllib.loads(path.read_text())
    return [(f["name"], f["kind"], f["field"], f["hours"]) for f in data.get("features", [])]


def _value_at(
    solar: Mapping[int, float], weather: Mapping[int, Mapping[str, float | None]], field_name: str, hour: int
) -> float | None:
    """A field's value at an hour: None where the record is missing or the value was not observed."""
    if field_name == "production_mw":
        return solar.get(hour)
    record = weather.get(hour)
    return None if record is None else record[field_name]


def _fold(kind: str, values: list[float]) -> float | int | None:
    """One declared window over the non-null values of its hours (the issue's definitions, read alone)."""
    if kind == "count":
        return len(values)
    if not values:
        return None
    if kind == "mean":
        return math.fsum(values) / len(values)
    if kind == "sum":
        return math.fsum(values)
    return min(values) if kind == "min" else max(values)


def reference_features(
    messages: Iterable[RawMessage],
    *,
    solar_topic: str = "solar_production_raw",
    weather_topic: str = "weather_raw",
    window_hours: int = 24,
    default_region: str = "DE",
    region_locations: Mapping[str, tuple[float, float]] | None = None,
    features: Iterable[Declared] = (),
) -> Reference:
    """The rows SPEC requires for this set of messages, and the messages it rejects (in input order).

    ``features`` are declared features (a features file's entries): each adds its column, or replaces the
    SPEC column of its name, with ``kind`` of ``field`` over the clock hours h-(hours-1) … h (non-null values;
    NULL if none, 0 for ``count``), or for ``lag`` the value at h-hours (NULL if missing or null).

    Messages on a topic that is neither ``solar_topic`` nor ``weather_topic`` raise ``ValueError``: feeding
    them in is a mistake of the caller, not a rejection.
    """
    if window_hours < 1:
        raise ValueError(f"window_hours must be >= 1, got {window_hours}")
    if solar_topic == weather_topic:
        raise ValueError("solar_topic and weather_topic must differ")
    locations = dict(region_locations or {})
    declared = list(features)
    result = Reference()
    # (topic, region, hour index) -> (priority, values); priority = (-distance, offset, partition), max wins.
    chosen: dict[tuple[str, str, int], tuple[tuple[int, int, int], dict[str, float | None]]] = {}
    for message in messages:
        try:
            if message.topic == solar_topic:
                region, micros, values = _parse_solar(message)
            elif message.topic == weather_topic:
                region, micros, values = _parse_weather(message, default_region, locations)
            else:
                raise ValueError(f"message on unexpected topic {message.topic!r}")
        except _Reject as reject:
            result.rejected.append((message, str(reject)))
            continue
        hour_us = _hour_us(micros)
        priority = (-abs(micros - hour_us), message.offset, message.partition)
        slot = (message.topic, region, hour_us // HOUR_US)
        current = chosen.get(slot)
        if current is None or priority > current[0]:
            chosen[slot] = (priority, values)

    solar: dict[str, dict[int, float]] = {}
    weather: dict[str, dict[int, dict[str, float | None]]] = {}
    for (topic, region, hour), (_, values) in chosen.items():
        if topic == solar_topic:
            production = values["production_mw"]
            assert production is not None
            solar.setdefault(region, {})[hour] = production
        else:
            weather.setdefault(region, {})[hour] = values

    for region in sorted(solar.keys() & weather.keys()):
        region_solar = solar[region]
        region_weather = weather[region]
        for hour in sorted(region_solar.keys() & region_weather.keys()):
            window = range(hour - (window_hours - 1), hour + 1)
            productions = [region_solar[h] for h in window if h in region_solar]
            temperatures: list[float] = []
            clouds: list[float] = []
            for h in window:
                record = region_weather.get(h)
                if record is None:
                    continue
                temperature, cloud = record["temperature_c"], record["cloud_cover_pct"]
                if temperature is not None:
                    temperatures.append(temperature)
                if cloud is not None:
                    clouds.append(cloud)
            start = _EPOCH + timedelta(hours=hour)
            here = region_weather[hour]
            day_of_week = start.weekday()
            result.rows[(region, start)] = {
                "region": region,
                "timestamp": start,
                "production_mw": region_solar[hour],
                "temperature_c": here["temperature_c"],
                "cloud_cover_pct": here["cloud_cover_pct"],
                "solar_radiation_wm2": here["solar_radiation_wm2"],
                "latitude": here["latitude"],
                "longitude": here["longitude"],
                "production_ma_24h": _mean(productions),
                "temperature_ma_24h": _mean(temperatures),
                "cloud_cover_ma_24h": _mean(clouds),
                "production_lag_1h": region_solar.get(hour - 1),
                "production_lag_24h": region_solar.get(hour - 24),
                "hour_of_day": start.hour,
                "day_of_week": day_of_week,
                "is_weekend": day_of_week >= 5,
            }
            row = result.rows[(region, start)]
            for name, kind, field_name, hours in declared:
                if kind == "lag":
                    row[name] = _value_at(region_solar, region_weather, field_name, hour - hours)
                else:
                    window = range(hour - hours + 1, hour + 1)
                    present = [_value_at(region_solar, region_weather, field_name, h) for h in window]
                    row[name] = _fold(kind, [v for v in present if v is not None])
    return result


def _cells_equal(expected: object, actual: object, rel: float, abs_tol: float) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    numeric = int | float | Decimal
    if isinstance(expected, numeric) and isinstance(actual, numeric):
        e, a = float(expected), float(actual)
        if math.isnan(e) or math.isnan(a):
            return False
        return math.isclose(e, a, rel_tol=rel, abs_tol=abs_tol)
    return expected == actual


def _key_order(key: RowKey) -> tuple[str, str]:
    region, stamp = key
    return str(region), stamp.isoformat() if isinstance(stamp, datetime) else str(stamp)


_MISSING = object()


def assert_rows_equal(
    expected: Mapping[RowKey, Mapping[str, object]],
    actual: Mapping[RowKey, Mapping[str, object]],
    rel: float = 1e-9,
    *,
    abs_tol: float = 1e-9,
    limit: int = 20,
) -> None:
    """Raise AssertionError describing missing rows, extra rows and up to ``limit`` differing cells.

    Numbers compare with ``math.isclose(rel_tol=rel, abs_tol=abs_tol)``; None only equals None; bools only
    equal bools; everything else (region, timestamp) with ``==``. Keys are (region, aware datetime): aware
    datetimes in any time zone compare by instant, a naive one never equals an aware one.
    """
    missing = sorted(expected.keys() - actual.keys(), key=_key_order)
    extra = sorted(actual.keys() - expected.keys(), key=_key_order)
    diffs: list[tuple[RowKey, str, object, object]] = []
    differing_rows = 0
    for key in sorted(expected.keys() & actual.keys(), key=_key_order):
        want, got = expected[key], actual[key]
        row_differs = False
        columns = list(want) + [c for c in got if c not in want]
        for column in columns:
            e, a = want.get(column, _MISSING), got.get(column, _MISSING)
            if e is _MISSING or a is _MISSING or not _cells_equal(e, a, rel, abs_tol):
                diffs.append((key, column, e, a))
                row_differs = True
        differing_rows += row_differs
    if not (missing or extra or diffs):
        return

    def show(value: object) -> str:
        return "<no such column>" if value is _MISSING else repr(value)

    lines = [
        f"rows differ: {len(expected)} expected, {len(actual)} actual; {len(missing)} missing, "
        f"{len(extra)} extra, {len(diffs)} differing cells in {differing_rows} rows"
    ]
    if missing:
        lines.append(f"missing rows (first {min(limit, len(missing))} of {len(missing)}):")
        lines += [f"  {key!r}" for key in missing[:limit]]
    if extra:
        lines.append(f"extra rows (first {min(limit, len(extra))} of {len(extra)}):")
        lines += [f"  {key!r}" for key in extra[:limit]]
    if diffs:
        lines.append(f"differing cells (first {min(limit, len(diffs))} of {len(diffs)}):")
        lines += [
            f"  {key!r} {column}: expected {show(e)}, actual {show(a)}" for key, column, e, a in diffs[:limit]
        ]
    raise AssertionError("\n".join(lines))
