"""A realistic, messy test feed built from the real 50Hertz/Hamburg 2019 data set.

Everything is deterministic for a given seed. Does not import ``solar_agents``.

- Each topic's list is in hour order, shuffled within blocks of ``shuffle_block_hours`` hours.
- ``interleave`` merges the two lists into one production order where weather trails solar and the malformed
  messages are spread through it.
- About ``duplicate_rate`` of the messages are sent twice (same key, same bytes) within a few positions.
- Timestamps come in many shapes: ``Z``, ``+00:00``, no offset, other UTC offsets, a few minutes off the hour,
  fractional seconds, epoch seconds as int and as float.
- Most messages are keyed by region; some solar messages have no key; some weather messages have no ``region``
  field and get their region from the key; a few carry unknown extra fields.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "DATASET",
    "Feed",
    "build_feed",
    "interleave",
    "load_rows",
]

DATASET = (
    Path(__file__).parent.parent / "datasets" / "50hertz_hamburg_2019" / "50hertz_hamburg_2019_hourly.csv"
)

_NUMERIC = (
    "production_mw",
    "temperature_c",
    "cloud_cover_pct",
    "solar_radiation_wm2",
    "latitude",
    "longitude",
)
_OFFSETS = (
    timedelta(hours=2),
    timedelta(hours=1),
    timedelta(hours=-5),
    timedelta(hours=5, minutes=30),
    timedelta(hours=-9, minutes=-30),
    timedelta(hours=9),
)


@dataclass
class Feed:
    solar: list[tuple[bytes | None, bytes]]
    weather: list[tuple[bytes | None, bytes]]
    malformed: list[tuple[str, bytes | None, bytes]]
    solar_topic: str = "solar_production_raw"
    weather_topic: str = "weather_raw"
    # How many weather messages behind solar makes the weather stream ``weather_lag_hours`` behind.
    weather_lag_messages: int = 0
    regions: tuple[str, ...] = field(default_factory=tuple)


def _derive(row: dict[str, Any], index: int, region: str) -> dict[str, Any]:
    """A realistic sibling region: scaled production, shifted temperature, a nearby station."""
    if index == 0:
        return {**row, "region": region}
    scale = 0.45 + 0.35 * index  # 0.8, 1.15, 1.5, ...
    shift = 1.5 * (-1) ** index * ((index + 1) // 2)  # -1.5, +1.5, -3.0, ...
    temperature = row["temperature_c"]
    radiation = row["solar_radiation_wm2"]
    return {
        **row,
        "region": region,
        "production_mw": round(row["production_mw"] * scale, 3),
        "temperature_c": None if temperature is None else round(temperature + shift, 1),
        "solar_radiation_wm2": None
        if radiation is None
        else round(min(2000.0, radiation * (0.9 + 0.05 * index)), 2),
        # a nearby station, staying inside [-90, 90] x [-180, 180] however many regions there are
        "latitude": round(row["latitude"] - 1.1 * (index % 45), 4),
        "longitude": round((row["longitude"] + 1.7 * index + 180.0) % 360.0 - 180.0, 4),
    }


def load_rows(
    limit_hours: int | None = None, regions: Sequence[str] = ("DE_50hertz",)
) -> list[dict[str, object]]:
    """The data set as typed rows, ordered by (hour, region); empty cells become None.

    ``timestamp`` is an aware UTC datetime, numeric columns floats. The first region carries the real values;
    any further region is derived from them deterministically (see ``_derive``).
    """
    if not regions:
        raise ValueError("regions must not be empty")
    if len(set(regions)) != len(regions):
        raise ValueError(f"regions must be distinct: {regions!r}")
    base: list[dict[str, Any]] = []
    with DATASET.open(newline="", encoding="utf-8") as handle:
        for line in csv.DictReader(handle):
            if limit_hours is not None and len(base) >= limit_hours:
                break
            row: dict[str, Any] = {
                "timestamp": datetime.fromisoformat(line["timestamp"]).astimezone(UTC),
                "region": line["region"],
            }
            for column in _NUMERIC:
                cell = line[column].strip()
                row[column] = float(cell) if cell else None
            base.append(row)
    return [_derive(row, index, region) for row in base for index, region in enumerate(regions)]


def _iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _timestamp(rng: random.Random, hour: datetime) -> str | int | float:
    """The hour written in one of many equivalent (or nearly equivalent: a few minutes off) shapes."""
    roll = rng.random()
    if roll < 0.60:
        return _iso_z(hour)
    if roll < 0.66:
        return hour.isoformat()  # +00:00
    if roll < 0.70:
        return hour.replace(tzinfo=None).isoformat(sep=rng.choice("T "))  # naive means UTC
    if roll < 0.78:
        return hour.astimezone(timezone(rng.choice(_OFFSETS))).isoformat()
    if roll < 0.86:  # a few minutes off the hour, always less than 30
        off = timedelta(minutes=rng.randint(1, 24), seconds=rng.randint(0, 59)) * rng.choice((-1, 1))
        moment = hour + off
        if rng.random() < 0.5:
            return _iso_z(moment)
        return moment.astimezone(timezone(rng.choice(_OFFSETS))).isoformat()
    if roll < 0.89:  # fractional seconds
        moment = hour + timedelta(milliseconds=rng.randint(-90_000, 90_000))
        return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    epoch = int(hour.timestamp())
    if roll < 0.95:
        return epoch + (rng.randint(-600, 600) if rng.random() < 0.3 else 0)
    return round(epoch + rng.uniform(-900.0, 900.0), 3) if rng.random() < 0.5 else float(epoch)


def _number(rng: random.Random, value: float) -> float | int:
    """Integral values are sometimes written as JSON integers, as real producers do."""
    return int(value) if value.is_integer() and rng.random() < 0.3 else value


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, allow_nan=False).encode("utf-8")


def _block_shuffle(
    rng: random.Random, items: list[tuple[int, tuple[bytes | None, bytes]]], block_hours: int
) -> list[tuple[bytes | None, bytes]]:
    """(hour index, message) in hour order -> messages shuffled within blocks of ``block_hours`` hours."""
    blocks: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for hour_index, message in items:
        blocks.setdefault(hour_index // max(1, block_hours), []).append(message)
    ordered: list[tuple[bytes | None, bytes]] = []
    for block in sorted(blocks):
        chunk = blocks[block]
        rng.shuffle(chunk)
        ordered.extend(chunk)
    return ordered


def _with_duplicates(
    rng: random.Random, messages: list[tuple[bytes | None, bytes]], rate: float
) -> list[tuple[bytes | None, bytes]]:
    """Each message is repeated (same key, same bytes) with probability ``rate``, 1-4 positions later."""
    out: list[tuple[bytes | None, bytes]] = []
    pending: list[tuple[int, tuple[bytes | None, bytes]]] = []  # (emit after this many originals, message)
    for count, message in enumerate(messages):
        out.append(message)
        if rng.random() < rate:
            pending.append((count + rng.randint(0, 3), message))
        due = [item for item in pending if item[0] <= count]
        pending = [item for item in pending if item[0] > count]
        out.extend(message for _, message in due)
    out.extend(message for _, message in pending)
    return out


def _malformed(
    rows: list[dict[str, Any]], solar_topic: str, weather_topic: str
) -> list[tuple[str, bytes | None, bytes]]:
    """One message of each kind of rule break, on real hours and regions (they are rejected anyway)."""
    first = rows[len(rows) // 3]
    region = str(first["region"])
    key = region.encode()
    stamp = _iso_z(first["timestamp"])
    solar_ok: dict[str, Any] = {"timestamp": stamp, "region": region, "production_mw": 1234.5}
    weather_ok: dict[str, Any] = {
        "timestamp": stamp,
        "region": region,
        "temperature_c": 10.0,
        "cloud_cover_pct": 50.0,
        "solar_radiation_wm2": 100.0,
        "latitude": 53.6332,
        "longitude": 9.9881,
    }

    def solar(**changes: Any) -> bytes:
        return _encode({k: v for k, v in {**solar_ok, **changes}.items() if v is not _DROP})

    def weather(**changes: Any) -> bytes:
        return _encode({k: v for k, v in {**weather_ok, **changes}.items() if v is not _DROP})

    s, w = solar_topic, weather_topic
    return [
        (s, key, b'\xff\xfe{"timestamp": "' + stamp.encode() + b'", "production_mw": 1.0}'),  # not UTF-8
        (w, key, b'{"timestamp": "' + stamp.encode() + b'", "temperature_c": 12.5,'),  # not JSON (truncated)
        (s, None, b"{timestamp: 2019-03-01, production_mw: 1}"),  # not JSON (unquoted)
        (w, key, b"[1, 2, 3]"),  # JSON array
        (s, key, b'"just a string"'),  # JSON scalar
        (s, key, solar(production_mw=_DROP)),  # missing production_mw
        (s, key, solar(production_mw="1234.5")),  # production_mw as string
        (s, key, solar(production_mw=True)),  # production_mw as bool
        (s, key, solar(production_mw=-3.0)),  # negative production
        (s, key, solar().replace(b"1234.5", b"NaN")),  # NaN literal
        (w, key, weather().replace(b'"solar_radiation_wm2": 100.0', b'"solar_radiation_wm2": Infinity')),
        (w, key, weather(temperature_c=120)),  # temperature out of range
        (w, key, weather(cloud_cover_pct=101.0)),  # cloud cover out of range
        (w, key, weather(latitude=91.0)),  # latitude out of range
        (w, key, weather(longitude=_DROP)),  # missing longitude
        (s, key, solar(timestamp="yesterday")),  # unparsable timestamp
        (w, key, weather(timestamp=True)),  # timestamp as bool
        (s, key, solar(timestamp=_DROP)),  # missing timestamp
        (s, None, solar(region="")),  # empty region
        (w, key, weather(region="R" * 65)),  # region of 65 characters
        (s, key, solar(region=_DROP)),  # solar without region (the key does not replace it)
        (w, key, weather(region=7)),  # region not a string
    ]


_DROP: Any = object()


def build_feed(
    *,
    hours: int | None = None,
    seed: int = 7,
    regions: Sequence[str] = ("DE_50hertz",),
    weather_lag_hours: int = 6,
    shuffle_block_hours: int = 6,
    duplicate_rate: float = 0.02,
    solar_topic: str = "solar_production_raw",
    weather_topic: str = "weather_raw",
) -> Feed:
    """The data set (first ``hours`` hours, all by default) as messy Kafka messages plus malformed ones."""
    rng = random.Random(seed)
    rows = load_rows(hours, regions)
    origin = rows[0]["timestamp"]
    assert isinstance(origin, datetime)
    solar_items: list[tuple[int, tuple[bytes | None, bytes]]] = []
    weather_items: list[tuple[int, tuple[bytes | None, bytes]]] = []
    for row in rows:
        hour = row["timestamp"]
        region = row["region"]
        production = row["production_mw"]
        assert isinstance(hour, datetime) and isinstance(region, str) and isinstance(production, float)
        hour_index = (hour - origin) // timedelta(hours=1)
        key = region.encode("utf-8")

        solar_payload: dict[str, Any] = {"timestamp": _timestamp(rng, hour), "region": region}
        solar_payload["production_mw"] = _number(rng, production)
        if rng.random() < 0.03:
            solar_payload["source"] = "OPSD/ENTSO-E"
        solar_key = None if rng.random() < 0.1 else key
        solar_items.append((hour_index, (solar_key, _encode(solar_payload))))

        weather_payload: dict[str, Any] = {"timestamp": _timestamp(rng, hour)}
        if rng.random() < 0.85:
            weather_payload["region"] = region
            weather_key = None if rng.random() < 0.05 else key
        else:  # no region field: the key gives it
            weather_key = key
        for column in ("temperature_c", "cloud_cover_pct", "solar_radiation_wm2", "latitude", "longitude"):
            value = row[column]
            assert value is None or isinstance(value, float)
            weather_payload[column] = None if value is None else _number(rng, value)
        if rng.random() < 0.03:
            weather_payload["station"] = "DWD 01975"
        weather_items.append((hour_index, (weather_key, _encode(weather_payload))))

    solar = _with_duplicates(rng, _block_shuffle(rng, solar_items, shuffle_block_hours), duplicate_rate)
    weather = _with_duplicates(rng, _block_shuffle(rng, weather_items, shuffle_block_hours), duplicate_rate)
    return Feed(
        solar=solar,
        weather=weather,
        malformed=_malformed(rows, solar_topic, weather_topic),
        solar_topic=solar_topic,
        weather_topic=weather_topic,
        weather_lag_messages=max(0, weather_lag_hours) * len(regions),
        regions=tuple(regions),
    )


def interleave(feed: Feed, lag_messages: int | None = None) -> list[tuple[str, bytes | None, bytes]]:
    """One production order (topic, key, value) over both topics and the malformed messages.

    The first ``lag_messages`` solar messages go out alone, then solar and weather alternate, then the
    remaining weather: weather trails solar by about ``lag_messages`` messages (default:
    ``feed.weather_lag_messages``, i.e. ``weather_lag_hours``). The malformed messages are spread evenly
    through the result.
    """
    lag = feed.weather_lag_messages if lag_messages is None else max(0, lag_messages)
    order: list[tuple[str, bytes | None, bytes]] = []
    solar_index = weather_index = 0
    while solar_index < len(feed.solar) or weather_index < len(feed.weather):
        if solar_index < len(feed.solar):
            key, value = feed.solar[solar_index]
            order.append((feed.solar_topic, key, value))
            solar_index += 1
        if weather_index < len(feed.weather) and (solar_index > lag or solar_index >= len(feed.solar)):
            key, value = feed.weather[weather_index]
            order.append((feed.weather_topic, key, value))
            weather_index += 1
    if not feed.malformed:
        return order
    step = len(order) / (len(feed.malformed) + 1)
    slots: dict[int, list[tuple[str, bytes | None, bytes]]] = {}
    for index, message in enumerate(feed.malformed):
        slots.setdefault(math.floor(step * (index + 1)), []).append(message)
    result: list[tuple[str, bytes | None, bytes]] = []
    for position, message in enumerate(order):
        result.extend(slots.pop(position, []))
        result.append(message)
    for position in sorted(slots):
        result.extend(slots[position])
    return result
