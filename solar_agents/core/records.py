"""Message schemas of the raw feeds: validation into records, the region of a weather record, dead letters.

Validation is pydantic's, strict (no numbers from strings, no booleans as numbers, no NaN); a failure becomes
one ``InvalidMessage`` with a one-line reason for the dead-letter topic. The encodings of the internal topics
and tables are ``wire``'s; the records topic's control messages are ``read_progress``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from solar_agents.core.hours import (
    InvalidTimestamp,
    Position,
    Solar,
    Weather,
    nearest_hour,
    to_micros,
)


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
