"""A deterministic synthetic history: several regions, hourly solar production and weather, with gaps.

Pure Python and standard library only. The same (regions, hours, seed) always gives the same messages, byte
for byte. Nothing here imports ``solar_agents``: the data is what a real producer would send.

The model is simple but has the shape of the real thing:

- the sun: elevation from latitude, day of year and solar time (longitude); clear-sky irradiance from it;
- clouds: an AR(1) process per region in logit space, reported in eighths (12.5 % steps) like a station;
- irradiance: clear sky damped by clouds; production: capacity x irradiance, less when hot, a little noise;
- temperature: latitude mean, seasonal and diurnal cycles, cooler under clouds, AR(1) weather noise.

Messiness of the history (not of the live tail, where every hour gets both halves exactly once):

- outages: each feed of each region drops out now and then for 1-8 (solar) or 1-6 (weather) hours;
- nulls: a weather field is missing now and then;
- timestamps: most on the hour with ``Z``; some a few minutes off; some in another UTC offset;
- duplicates (same bytes again), corrections (same timestamp, new value, later in the partition: it wins) and
  strays (28 minutes off the hour with another value: a nearer record wins).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
# 2019-01-01T00:00Z as an hour index since the epoch.
DEFAULT_START = datetime(2019, 1, 1, tzinfo=UTC)

SOLAR = 0
WEATHER = 1

# Messiness rates of the history (per region, per hour and feed).
SOLAR_OUTAGE_START = 0.0015
WEATHER_OUTAGE_START = 0.0015
NULL_TEMPERATURE = 0.003
NULL_CLOUD = 0.01
NULL_RADIATION = 0.005
JITTER = 0.09  # a few minutes off the hour
OTHER_OFFSET = 0.03  # the exact hour written in another UTC offset
DUPLICATE = 0.004
CORRECTION = 0.002
STRAY = 0.002

_OFFSETS = (1, 2, -5)


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    latitude: float
    longitude: float
    capacity_mw: float
    mean_temperature_c: float


@dataclass(frozen=True, slots=True)
class Obs:
    """One message before encoding: which feed, region and hour, how its timestamp is written, its values.

    ``seconds`` is the timestamp's distance from the hour's start; ``utc_offset_h`` the offset it is written
    in. Values: solar ``(production_mw,)``; weather ``(temperature_c, cloud_cover_pct, solar_radiation_wm2)``,
    each possibly None. Latitude and longitude come from the region.
    """

    feed: int
    region: int
    hour: int  # index from the start of the history
    seconds: int
    utc_offset_h: int
    values: tuple[float | None, ...]


def make_regions(count: int) -> list[Region]:
    """``count`` regions spread over Europe-like latitudes and longitudes (deterministic)."""
    regions = []
    for i in range(count):
        latitude = round(36.0 + (i * 7.3) % 24.0, 4)
        longitude = round(-9.0 + (i * 11.7) % 38.0, 4)
        capacity = 300.0 + (i * 937) % 4700
        mean_temperature = 24.0 - 0.55 * (latitude - 30.0)
        regions.append(Region(f"R{i:02d}", latitude, longitude, capacity, mean_temperature))
    return regions


def _clear_sky_wm2(latitude: float, longitude: float, moment: datetime) -> float:
    day = moment.timetuple().tm_yday
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day) / 365.0)
    solar_hour = moment.hour + moment.minute / 60 + longitude / 15.0
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    lat = math.radians(latitude)
    sin_elevation = math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(
        hour_angle
    )
    if sin_elevation <= 0:
        return 0.0
    return float(1050.0 * sin_elevation**1.2)


def generate(
    regions: list[Region],
    history_hours: int,
    live_hours: int = 0,
    seed: int = 2019,
    start: datetime = DEFAULT_START,
) -> tuple[list[Obs], list[Obs]]:
    """The history (messy, in hour order) and a clean live tail right after it, for every region."""
    history: list[Obs] = []
    live: list[Obs] = []
    per_region = [_region_series(r, i, history_hours, live_hours, seed, start) for i, r in enumerate(regions)]
    # Interleave regions hour by hour, as a real feed of many regions arrives.
    for hour in range(history_hours + live_hours):
        target = history if hour < history_hours else live
        for series in per_region:
            target.extend(series[hour])
    return history, live


def _region_series(
    region: Region, index: int, history_hours: int, live_hours: int, seed: int, start: datetime
) -> list[list[Obs]]:
    rng = random.Random(f"{seed}:{region.name}")
    cloud_latent = rng.gauss(0.0, 1.0)
    temperature_noise = 0.0
    solar_out = weather_out = 0
    out: list[list[Obs]] = []
    for hour in range(history_hours + live_hours):
        messy = hour < history_hours
        moment = start + hour * HOUR
        day = moment.timetuple().tm_yday
        cloud_latent = 0.97 * cloud_latent + 0.25 * rng.gauss(0.0, 1.0)
        # Cloudier in winter and further north.
        bias = 0.4 * math.cos(2 * math.pi * (day - 15) / 365.0) + 0.03 * (region.latitude - 45.0)
        cloud = 100.0 / (1.0 + math.exp(-(1.6 * cloud_latent + bias)))
        cloud = round(cloud / 12.5) * 12.5
        clear = _clear_sky_wm2(region.latitude, region.longitude, moment)
        radiation = round(min(2000.0, clear * (1.0 - 0.72 * (cloud / 100.0) ** 3.2)), 1)
        solar_hour = (moment.hour + region.longitude / 15.0) % 24.0
        temperature_noise = 0.95 * temperature_noise + 0.4 * rng.gauss(0.0, 1.0)
        temperature = (
            region.mean_temperature_c
            - 9.0 * math.cos(2 * math.pi * (day - 20) / 365.0)
            + 4.0 * math.cos(2 * math.pi * (solar_hour - 15.0) / 24.0)
            - (3.0 * cloud / 100.0 if clear > 0 else 0.0)
            + temperature_noise
        )
        temperature = round(max(-89.0, min(69.0, temperature)), 1)
        production = 0.0
        if radiation > 0:
            derate = 1.0 - 0.0035 * (temperature - 25.0)
            production = round(
                max(0.0, region.capacity_mw * radiation / 1000.0 * derate * rng.uniform(0.97, 1.0)), 3
            )

        obs: list[Obs] = []
        if not messy:
            obs.append(Obs(SOLAR, index, hour, 0, 0, (production,)))
            obs.append(Obs(WEATHER, index, hour, 0, 0, (temperature, cloud, radiation)))
            out.append(obs)
            continue

        # Outages.
        if solar_out == 0 and rng.random() < SOLAR_OUTAGE_START:
            solar_out = rng.randint(1, 8)
        if weather_out == 0 and rng.random() < WEATHER_OUTAGE_START:
            weather_out = rng.randint(1, 6)
        weather_values: tuple[float | None, ...] = (
            None if rng.random() < NULL_TEMPERATURE else temperature,
            None if rng.random() < NULL_CLOUD else cloud,
            None if rng.random() < NULL_RADIATION else radiation,
        )
        for feed, values, out_hours in (
            (SOLAR, (production,), solar_out),
            (WEATHER, weather_values, weather_out),
        ):
            if out_hours:
                continue
            seconds, offset = 0, 0
            roll = rng.random()
            if roll < JITTER:
                seconds = rng.choice((-1, 1)) * rng.randint(60, 25 * 60)
            elif roll < JITTER + OTHER_OFFSET:
                offset = rng.choice(_OFFSETS)
            first = Obs(feed, index, hour, seconds, offset, values)
            obs.append(first)
            if rng.random() < DUPLICATE:
                obs.append(first)
            if rng.random() < CORRECTION:
                obs.append(Obs(feed, index, hour, seconds, offset, _changed(values)))
            if rng.random() < STRAY:
                obs.append(Obs(feed, index, hour, rng.choice((-1, 1)) * 28 * 60, 0, _changed(values)))
        solar_out = max(0, solar_out - 1)
        weather_out = max(0, weather_out - 1)
        out.append(obs)
    return out


def _changed(values: tuple[float | None, ...]) -> tuple[float | None, ...]:
    first = values[0]
    if first is None:
        return values
    return (round(first * 1.1 + 0.5, 3), *values[1:])


def _timestamp(moment: datetime, utc_offset_h: int) -> str:
    if utc_offset_h == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    local = moment + timedelta(hours=utc_offset_h)
    sign = "+" if utc_offset_h > 0 else "-"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{abs(utc_offset_h):02d}:00"


def encode(
    obs: Obs, regions: list[Region], start: datetime = DEFAULT_START, shift_hours: int = 0
) -> tuple[int, bytes, bytes]:
    """(feed, key, value) of one observation; ``shift_hours`` moves it later (a repeated history)."""
    region = regions[obs.region]
    moment = start + timedelta(hours=obs.hour + shift_hours, seconds=obs.seconds)
    payload: dict[str, object] = {"timestamp": _timestamp(moment, obs.utc_offset_h), "region": region.name}
    if obs.feed == SOLAR:
        payload["production_mw"] = obs.values[0]
    else:
        payload["temperature_c"] = obs.values[0]
        payload["cloud_cover_pct"] = obs.values[1]
        payload["solar_radiation_wm2"] = obs.values[2]
        payload["latitude"] = region.latitude
        payload["longitude"] = region.longitude
    return obs.feed, region.name.encode(), json.dumps(payload, separators=(",", ":")).encode()


def encode_all(
    observations: list[Obs],
    regions: list[Region],
    start: datetime = DEFAULT_START,
    copies: int = 1,
    copy_hours: int = 0,
) -> Iterator[tuple[int, bytes, bytes]]:
    """Every observation, ``copies`` times, copy k shifted ``k * copy_hours`` hours later."""
    for copy in range(copies):
        shift = copy * copy_hours
        for obs in observations:
            yield encode(obs, regions, start, shift)
