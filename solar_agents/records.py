"""Message schemas: the raw JSON of both feeds, and the compact encodings of the internal topics.

Validation is pydantic's, strict (no numbers from strings, no booleans as numbers, no NaN); a failure becomes
one ``InvalidMessage`` with a one-line reason for the dead-letter topic. The records topic's control messages
(progress reports, replay markers) are ``read_progress``'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from solar_agents.features import FIELDS, FeatureRow, field_values
from solar_agents.hours import (
    InvalidTimestamp,
    Position,
    Record,
    RegionHours,
    Solar,
    Weather,
    nearest_hour,
    to_micros,
)
from solar_agents.read_progress import Feed


class InvalidMessage(ValueError):
    """A raw message that breaks a rule of SPEC; ``str()`` is the one-line reason."""


def _timestamp(value: object) -> int:
    try:
        return to_micros(value)
    except InvalidTimestamp as exc:
        raise ValueError(str(exc)) from None


def storable(text: str) -> bool:
    """A database text column holds neither NUL nor unpaired surrogates: such a region would block the
    writer forever, so it is refused at the door."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _region(value: str) -> str:
    if not storable(value):
        raise ValueError("has a NUL or an unpaired surrogate")
    return value


Micros = Annotated[int, BeforeValidator(_timestamp)]
Region = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_region)]
_STRICT = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False, frozen=True)


# 10 TW: more than all the world's generating capacity. A bound keeps every sum of a window finite, so a
# feature can never overflow (SPEC: decisions).
MAX_PRODUCTION_MW = 10_000_000


class SolarMessage(BaseModel):
    """A message of ``KAFKA_TOPIC_SOLAR``."""

    model_config = _STRICT
    timestamp: Micros
    production_mw: Annotated[float, Field(ge=0, le=MAX_PRODUCTION_MW)]
    region: Region


class WeatherMessage(BaseModel):
    """A message of ``KAFKA_TOPIC_WEATHER``; None (or absent) means not observed this hour."""

    model_config = _STRICT
    timestamp: Micros
    temperature_c: Annotated[float, Field(ge=-90, le=70)] | None = None
    cloud_cover_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    solar_radiation_wm2: Annotated[float, Field(ge=0, le=2000)] | None = None
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    region: Region | None = None


def _reason(error: ValidationError) -> str:
    """The first error as one short line: which field, what is wrong, what came."""
    first = error.errors(include_url=False)[0]
    kind, loc, msg = first["type"], ".".join(str(p) for p in first["loc"]), first["msg"]
    if kind == "json_invalid":
        return f"not JSON: {msg.removeprefix('Invalid JSON: ')}"
    if kind == "model_type":
        return f"not a JSON object: got {type(first['input']).__name__}"
    if kind == "missing":
        return f"missing field {loc!r}"
    got = repr(first.get("input"))
    got = got if len(got) <= 40 else got[:37] + "..."
    msg = msg.removeprefix("Value error, ")
    return f"field {loc!r}: {msg} (got {got})" if kind != "value_error" else f"field {loc!r} {msg}"


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], value: bytes) -> M:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidMessage(_reason(exc)) from None


def _haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class RegionResolver:
    """Region of a weather message without a ``region`` field: its key, else the nearest location."""

    locations: Mapping[str, tuple[float, float]]
    default_region: str

    def resolve(self, key: bytes | None, latitude: float, longitude: float) -> str:
        if key is not None:
            try:
                region = key.decode("utf-8")
            except UnicodeDecodeError:
                region = ""
            if 1 <= len(region) <= 64 and storable(region):
                return region
        if not self.locations:
            return self.default_region
        # Ties go to the smallest name, so the answer never depends on the order of the setting.
        return min(self.locations, key=lambda r: (_haversine_km((latitude, longitude), self.locations[r]), r))


def parse_solar(value: bytes, partition: int, offset: int) -> tuple[Solar, str]:
    """A raw solar message as the record of its hour and its region; raises InvalidMessage.

    The payload's region is the region; a message key, where present, only partitions the raw topic.
    """
    message = _validate(SolarMessage, value)
    hour, distance = nearest_hour(message.timestamp)
    return Solar(hour, Position(distance, offset, partition), message.production_mw), message.region


def parse_weather(
    value: bytes, key: bytes | None, partition: int, offset: int, regions: RegionResolver
) -> tuple[Weather, str]:
    """A raw weather message as the record of its hour and its region; raises InvalidMessage."""
    message = _validate(WeatherMessage, value)
    hour, distance = nearest_hour(message.timestamp)
    region = message.region or regions.resolve(key, message.latitude, message.longitude)
    record = Weather(
        hour,
        Position(distance, offset, partition),
        message.temperature_c,
        message.cloud_cover_pct,
        message.solar_radiation_wm2,
        message.latitude,
        message.longitude,
    )
    return record, region


# --- Dead letters ---

# What a Kafka record adds to its key, value and headers (batch header, lengths): a generous bound, so a
# letter that fits here fits the producer's limit too.
_RECORD_OVERHEAD = 128
_REASON_MAX = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message of the dead-letter topic: the original bytes where they fit, the facts as headers."""

    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    max_bytes: int,
) -> DeadLetter:
    """The dead letter of a rejected message, within ``max_bytes``: bytes that do not fit are left out (and
    named in ``dropped``), never the letter. A missing value becomes empty: Kafka needs a key or a value."""
    headers = {
        "source_topic": topic.encode(),
        "source_partition": str(partition).encode(),
        "source_offset": str(offset).encode(),
        "source_size": str(-1 if value is None else len(value)).encode(),
        "reason": reason[:_REASON_MAX].encode("utf-8", "replace"),
    }

    # Room for the "dropped" header too, so that a letter cut down still fits.
    meta = sum(len(k) + len(v) + 8 for k, v in headers.items()) + len("dropped") + len("key,value") + 8

    def fits(key: bytes | None, value: bytes) -> bool:
        return len(key or b"") + len(value) + meta + _RECORD_OVERHEAD <= max_bytes

    body = value or b""
    if not fits(key, body):
        body, headers["dropped"] = b"", b"value"
        if not fits(key, body):
            key, headers["dropped"] = None, b"key,value"
    return DeadLetter(key, body, headers)


# --- Internal encodings: compact JSON lists, since every message and table entry is written per hour. ---


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _solar_fields(r: Solar) -> list[object]:
    p = r.position
    return [p.distance_us, p.offset, p.partition, r.production_mw]


def _weather_fields(r: Weather) -> list[object]:
    p = r.position
    return [
        p.distance_us, p.offset, p.partition,
        r.temperature_c, r.cloud_cover_pct, r.solar_radiation_wm2, r.latitude, r.longitude,
    ]  # fmt: skip


def _solar(hour: int, f: list[Any]) -> Solar:
    return Solar(hour, Position(f[0], f[1], f[2]), f[3])


def _weather(hour: int, f: list[Any]) -> Weather:
    return Weather(hour, Position(f[0], f[1], f[2]), f[3], f[4], f[5], f[6], f[7])


def _half(value: dict[str, list[list[Any]]], feed: Feed) -> list[list[Any]]:
    """One half's field lists of a records message or block value, as this or an earlier version wrote it."""
    found = value.get(feed)
    return found if found is not None else value[feed.earlier_name]


def encode_records(records: list[Record]) -> bytes:
    """One message of the records topic: the records of one region, both halves."""
    return _dumps(
        {
            Feed.SOLAR: [[r.hour, *_solar_fields(r)] for r in records if isinstance(r, Solar)],
            Feed.WEATHER: [[r.hour, *_weather_fields(r)] for r in records if isinstance(r, Weather)],
        }
    )


def decode_records(value: bytes) -> list[Record]:
    data = json.loads(value)
    out: list[Record] = [_solar(f[0], f[1:]) for f in _half(data, Feed.SOLAR)]
    out.extend(_weather(f[0], f[1:]) for f in _half(data, Feed.WEATHER))
    return out


# The hour table holds a region's hours in blocks of two days: one table write per block a batch touches,
# not per hour, and every value bounded (at most 48 hours of both halves). Earlier versions wrote blocks of
# a day (``d<n>``) and, before those, one entry per hour: both still load, and are replaced by the region's
# next batch.
BLOCK_HOURS = 48
_DAY_HOURS = 24


def block_of(hour: int) -> int:
    return hour // BLOCK_HOURS


def block_key(region: str, block: int) -> str:
    """Key of the hour table. The block is last: a region name may hold any character, ``b<n>`` ends it."""
    return f"{region}|b{block}"


def split_table_key(key: str) -> tuple[str, int, str]:
    """(region, number, kind) of an hour table key; kind: "block", or "day" / "hour" of earlier versions."""
    region, tail = key.rsplit("|", 1)
    if tail.startswith("b"):
        return region, int(tail[1:]), "block"
    if tail.startswith("d"):
        return region, int(tail[1:]), "day"
    return region, int(tail), "hour"


def day_key(region: str, day: int) -> str:
    """Key of a day block as the previous version wrote it."""
    return f"{region}|d{day}"


def table_bytes(value: object) -> bytes:
    """A table value as the store and the changelog hold it: compact JSON.

    The tables take bytes, not objects, so that Faust does not decode every changelog record during a
    restore (that decode was a third of the restore's time). Values Faust encoded itself (earlier versions)
    are JSON too and read the same.
    """
    return _dumps(value)


def table_value(raw: bytes) -> Any:
    """A table value back from its bytes."""
    return json.loads(raw)


def block_hours(value: dict[str, list[list[Any]]]) -> set[int]:
    """The hours a block's value holds (of either half)."""
    return {f[0] for f in _half(value, Feed.SOLAR)} | {f[0] for f in _half(value, Feed.WEATHER)}


def block_value(state: RegionHours, block: int) -> dict[str, list[list[object]]] | None:
    """Table value of one block: the kept records of its hours, both halves; None when all are gone."""
    hours = range(block * BLOCK_HOURS, (block + 1) * BLOCK_HOURS)
    solar = [[h, *_solar_fields(state.solar[h])] for h in hours if h in state.solar]
    weather = [[h, *_weather_fields(state.weather[h])] for h in hours if h in state.weather]
    if not solar and not weather:
        return None
    return {Feed.SOLAR: solar, Feed.WEATHER: weather}


def load_block(state: RegionHours, value: dict[str, list[list[Any]]]) -> None:
    """Put a block's records back into a region's state (restore after a restart or rebalance)."""
    for f in _half(value, Feed.SOLAR):
        state.solar[f[0]] = _solar(f[0], f[1:])
    for f in _half(value, Feed.WEATHER):
        state.weather[f[0]] = _weather(f[0], f[1:])


def hour_key(region: str, hour: int) -> str:
    """Key of an hour entry as earlier versions wrote it (such entries are read, then replaced by blocks)."""
    return f"{region}|{hour}"


def load_hour(state: RegionHours, hour: int, value: list[Any]) -> None:
    """An hour entry as earlier versions wrote it: [solar fields or null, weather fields or null]."""
    solar, weather = value
    if solar is not None:
        state.solar[hour] = _solar(hour, solar)
    if weather is not None:
        state.weather[hour] = _weather(hour, weather)


# The rows topic names its columns once a message, then lists each row's values in that order: as compact as
# the positional form, and read by name, so a message whose fields differ from this version's (an upgrade, a
# rollback) is read right or refused, never shifted into the wrong fields.
_FIELDS = list(FIELDS)


def encode_rows(rows: list[FeatureRow]) -> bytes:
    """One message of the rows topic: ``{"columns": [field names], "rows": [[values], ...]}``."""
    return _dumps({"columns": _FIELDS, "rows": list(map(field_values, rows))})


def decode_rows(value: bytes) -> list[FeatureRow]:
    data = json.loads(value)
    if isinstance(data, list):  # the positional form of earlier versions: values in FIELDS' order
        return [FeatureRow(*v) for v in data]
    columns, rows = data["columns"], data["rows"]
    if columns == _FIELDS:
        return [FeatureRow(*v) for v in rows]
    # Columns this version does not have are left out (its table has no place for them); a field it needs
    # and the message lacks cannot be made up.
    missing = [name for name in _FIELDS if name not in columns]
    if missing:
        raise ValueError(f"rows message lacks the fields {missing}")
    pick = itemgetter(*(columns.index(name) for name in _FIELDS))
    return [FeatureRow(*pick(v)) for v in rows]


def region_value(state: RegionHours) -> dict[str, int | None]:
    """Table value of a region: its whole state but the hours (``RegionHours.snapshot``): the watermark,
    what retention has forgotten, and the records offset of the last batch applied."""
    return state.snapshot()


def load_region(region: str, value: dict[str, int | None] | list[int | None]) -> RegionHours:
    if isinstance(value, list):  # written by earlier versions: [latest solar, latest weather(, applied)]
        value = {
            "latest_solar": value[0],
            "latest_weather": value[1],
            "applied_through": value[2] if len(value) > 2 else None,
        }
    return RegionHours.restore(region, value)
