"""The web view's answers as pure functions of a worker's state: placement of a region, parsing of query
values, and the JSON of regions, hours and dead letters. No Faust, no aiohttp: ``web.views`` serves them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import RowType, feature_row
from solar_agents.core.hours import (
    HOUR_US,
    InvalidTimestamp,
    RegionHours,
    Retention,
    Solar,
    Weather,
    hour_start,
    to_micros,
)
from solar_agents.core.wire import records_partition
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import DeadLetter

log = get_logger(__name__)

MAX_RANGE_HOURS = 31 * 24  # /hours answers at most this span (31 days), so one request stays small
INCOMPLETE_SHOWN = 50  # incomplete hours listed per region, latest first
DEADLETTERS_DEFAULT = 50


REGIONS_PAGE_DEFAULT = 100  # regions per page of /api/regions, unless ``limit`` says otherwise
REGIONS_PAGE_MAX = 1000


class BadRequest(ValueError):
    """The request cannot be answered as asked; ``str()`` is the message for the client."""

    status = 400


class NotFound(BadRequest):
    """What the request names does not exist here (an unknown region)."""

    status = 404


# --- placement ----------------------------------------------------------------------------------------------


def owner_of(metadata: Mapping[str, Mapping[str, Iterable[int]]], topic: str, partition: int) -> str | None:
    """The URL of the worker that holds ``partition`` of ``topic`` in the assignor's map, if any."""
    for url, topics in metadata.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def parse_time(name: str, raw: str | None) -> int:
    """An ISO 8601 query parameter as microseconds since the epoch (no offset means UTC)."""
    if raw is None or not raw.strip():
        raise BadRequest(f"missing query parameter {name!r} (an ISO 8601 time, e.g. 2019-01-05T00:00Z)")
    text = raw.strip()
    candidates = [text]
    if " " in text:  # an unencoded "+01:00" in a URL arrives as " 01:00"
        candidates.append(text.replace(" ", "+"))
    for candidate in candidates:
        try:
            return to_micros(candidate)
        except InvalidTimestamp:
            continue
    raise BadRequest(f"{name!r} is not an ISO 8601 time: {text[:40]!r}")


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"'limit' is not an integer: {raw[:20]!r}") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"'limit' must be between 1 and {maximum}, got {value}")
    return value


def hour_range(from_us: int, to_us: int) -> range:
    """The hours whose start lies in [from, to]; a 400 for a reversed or too long range."""
    if from_us > to_us:
        raise BadRequest("'from' is after 'to'")
    first = -(-from_us // HOUR_US)  # ceiling: an hour that starts before 'from' is not in the range
    last = to_us // HOUR_US
    if last - first + 1 > MAX_RANGE_HOURS:
        raise BadRequest(f"range too long: at most {MAX_RANGE_HOURS // 24} days ({MAX_RANGE_HOURS} hours)")
    return range(first, last + 1)


def check_region(region: str, name: str = "region") -> str:
    if not 1 <= len(region) <= 64:
        raise BadRequest(f"{name!r}: a region name has 1 to 64 characters")
    return region


def parse_page(query: Mapping[str, str]) -> tuple[str | None, int, str | None]:
    """(after, limit, search) of a page of /api/regions: the regions after the region ``after`` in name
    order, at most ``limit``, those whose name contains ``search`` (case-insensitive) if given."""
    after = query.get("after")
    search = query.get("search") or None
    if after is not None:
        check_region(after, "after")
    if search is not None and len(search) > 64:
        raise BadRequest("'search': at most 64 characters")
    return after, parse_limit(query.get("limit"), REGIONS_PAGE_DEFAULT, REGIONS_PAGE_MAX), search


# --- answers ------------------------------------------------------------------------------------------------


def iso_hour(hour: int | None) -> str | None:
    return None if hour is None else hour_start(hour).isoformat().replace("+00:00", "Z")


def iso_time(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def complete_hours(state: RegionHours) -> list[int]:
    return sorted(state.solar.keys() & state.weather.keys())


def incomplete_hours(state: RegionHours) -> list[tuple[int, str]]:
    """(hour, missing half), latest first: hours kept with only one of their two records."""
    only_solar = [(h, "weather") for h in state.solar.keys() - state.weather.keys()]
    only_weather = [(h, "solar") for h in state.weather.keys() - state.solar.keys()]
    return sorted(only_solar + only_weather, reverse=True)


def region_summary(state: RegionHours, partitions: int, shown: int = INCOMPLETE_SHOWN) -> dict[str, Any]:
    complete = complete_hours(state)
    incomplete = incomplete_hours(state)
    return {
        "region": state.region,
        "partition": records_partition(state.region, partitions),
        "watermark": iso_hour(state.watermark),
        "latest_solar": iso_hour(state.latest_solar),
        "latest_weather": iso_hour(state.latest_weather),
        "latest_complete": iso_hour(complete[-1] if complete else None),
        "hours_kept": len(state.solar.keys() | state.weather.keys()),
        "complete_hours": len(complete),
        "incomplete_count": len(incomplete),
        "incomplete": [{"hour": iso_hour(h), "missing": missing} for h, missing in incomplete[:shown]],
    }


def _solar_json(record: Solar) -> dict[str, Any]:
    return {
        "production_mw": record.production_mw,
        "partition": record.position.partition,
        "offset": record.position.offset,
        "seconds_from_hour": record.position.distance_us / 1e6,
    }


def _weather_json(record: Weather) -> dict[str, Any]:
    return {
        "temperature_c": record.temperature_c,
        "cloud_cover_pct": record.cloud_cover_pct,
        "solar_radiation_wm2": record.solar_radiation_wm2,
        "latitude": record.latitude,
        "longitude": record.longitude,
        "partition": record.position.partition,
        "offset": record.position.offset,
        "seconds_from_hour": record.position.distance_us / 1e6,
    }


def hours_answer(state: RegionHours, hours: range, rows: RowType, retention: Retention) -> dict[str, Any]:
    """The kept records of the region in ``hours`` and, where both halves are there, the feature row.

    ``history_kept`` is false where the row's window or lags may reach behind the retention horizon: its
    averages and lags may then be computed from less than the row written at the time. (Pruning can lag the
    horizon, so it is false for a few rows whose history is in fact still there: the safe side.)
    """
    horizon = state.horizon(retention)
    every = state.solar.keys() | state.weather.keys()
    kept = sorted(h for h in every if h in hours)
    out: list[dict[str, Any]] = []
    for hour in kept:
        solar, weather = state.solar.get(hour), state.weather.get(hour)
        row = feature_row(state, hour, rows)
        feature: dict[str, Any] | None = None
        if row is not None:
            feature = dict(zip(rows.columns, rows.values(row), strict=True))
            feature["timestamp"] = iso_hour(hour)
        out.append(
            {
                "hour": iso_hour(hour),
                "solar": None if solar is None else _solar_json(solar),
                "weather": None if weather is None else _weather_json(weather),
                "feature": feature,
                "history_kept": retention.history_kept(hour, horizon),
            }
        )
    return {
        "region": state.region,
        "from": iso_hour(hours.start),
        "to": iso_hour(hours.stop - 1),
        "watermark": iso_hour(state.watermark),
        "oldest_hour": iso_hour(min(every, default=None)),
        "window_hours": max((f.hours for f in rows.features.features if not f.is_lag), default=0),
        "reach_hours": retention.reach,
        "hours": out,
    }


def features_json(features: FeatureSet) -> list[dict[str, Any]]:
    """The declared feature set, column by column, as ``/api/regions`` lists it."""
    return [
        {"name": f.name, "kind": f.kind, "field": f.field, "hours": f.hours, "definition": f.definition()}
        for f in features.features
    ]


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "time": iso_time(letter.time),
        "value_size": letter.value_size,
        "value": letter.value_preview,
    }
