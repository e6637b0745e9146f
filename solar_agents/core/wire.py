"""Wire encodings of the internal topics and tables: records messages, hour blocks, region values, rows.

Compact JSON lists, since every message and table entry is written per hour. Versions before 0.2 wrote
other forms (hour entries, day blocks, positional rows, short feed names); they are not read: upgrade with
a new consumer group, which rebuilds every table from the raw topics (docs/DESIGN.md, "Upgrading").
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2

from solar_agents.core.features import Row, RowType
from solar_agents.core.hours import Position, Record, RegionHours, Solar, Weather
from solar_agents.core.read_progress import Feed


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


# A records message keyed by this holds the records of several regions of one records partition (NUL is in
# no region's name); one keyed by a region holds that region's records alone.
REGIONS_KEY = b"\x00"


def _records_value(records: list[Record]) -> dict[str, list[list[object]]]:
    # One pass, the fields inline: with thousands of regions this runs for nearly every record.
    solar: list[list[object]] = []
    weather: list[list[object]] = []
    for r in records:
        p = r.position
        if isinstance(r, Solar):
            solar.append([r.hour, p.distance_us, p.offset, p.partition, r.production_mw])
        else:
            weather.append([
                r.hour, p.distance_us, p.offset, p.partition,
                r.temperature_c, r.cloud_cover_pct, r.solar_radiation_wm2, r.latitude, r.longitude,
            ])  # fmt: skip
    return {Feed.SOLAR: solar, Feed.WEATHER: weather}


def _records(data: dict[str, list[list[Any]]]) -> list[Record]:
    out: list[Record] = [_solar(f[0], f[1:]) for f in data[Feed.SOLAR]]
    out.extend(_weather(f[0], f[1:]) for f in data[Feed.WEATHER])
    return out


def encode_records(records: list[Record]) -> bytes:
    """A records message of one region (keyed by the region): its records, both halves."""
    return _dumps(_records_value(records))


def decode_records(value: bytes) -> list[Record]:
    return _records(json.loads(value))


def encode_region_records(groups: Iterable[tuple[str, list[Record]]]) -> bytes:
    """A records message of several regions (keyed by ``REGIONS_KEY``): their names once, then every record
    with its region's index, each half in order. With thousands of regions a message holds a record or two
    of each: a name and an object per region, as the first form of this message had, doubled its size and
    the time to read it."""
    names: list[str] = []
    solar: list[list[object]] = []
    weather: list[list[object]] = []
    for index, (region, records) in enumerate(groups):
        names.append(region)
        for r in records:
            p = r.position
            if isinstance(r, Solar):
                solar.append([index, r.hour, p.distance_us, p.offset, p.partition, r.production_mw])
            else:
                weather.append([
                    index, r.hour, p.distance_us, p.offset, p.partition,
                    r.temperature_c, r.cloud_cover_pct, r.solar_radiation_wm2, r.latitude, r.longitude,
                ])  # fmt: skip
    return _dumps({"regions": names, Feed.SOLAR: solar, Feed.WEATHER: weather})


def decode_message_records(key: bytes, value: bytes) -> list[tuple[str, list[Record]]]:
    """The regions' records of a records message, of any form: one region's (keyed by it), or several
    regions' (``REGIONS_KEY``), by index or, as earlier versions wrote them, region by region."""
    if key != REGIONS_KEY:
        return [(key.decode(), decode_records(value))]
    data = json.loads(value)
    if isinstance(data, list):  # region by region
        return [(region, _records(records)) for region, records in data]
    names = data["regions"]
    groups: list[list[Record]] = [[] for _ in names]
    for f in data[Feed.SOLAR]:
        groups[f[0]].append(Solar(f[1], Position(f[2], f[3], f[4]), f[5]))
    for f in data[Feed.WEATHER]:
        groups[f[0]].append(Weather(f[1], Position(f[2], f[3], f[4]), f[5], f[6], f[7], f[8], f[9]))
    return list(zip(names, groups, strict=True))


@lru_cache(maxsize=65_536)  # asked for every record of a batch; murmur2 in Python costs 2.4 us a call
def records_partition(region: str, partitions: int) -> int:
    """A region's records partition: the one Kafka's default partitioner gives its name as a key (as when
    records messages were keyed by region), so its table entries stay where they are."""
    return int(murmur2(region.encode()) & 0x7FFFFFFF) % partitions


# The hour table holds a region's hours in blocks of two days: one table write per block a batch touches,
# not per hour, and every value bounded (at most 48 hours of both halves).
BLOCK_HOURS = 48


def block_of(hour: int) -> int:
    return hour // BLOCK_HOURS


def block_key(region: str, block: int) -> str:
    """Key of the hour table. The block is last: a region name may hold any character, ``b<n>`` ends it."""
    return f"{region}|b{block}"


def split_block_key(key: str) -> tuple[str, int]:
    """(region, block) of an hour table key."""
    region, tail = key.rsplit("|", 1)
    return region, int(tail.removeprefix("b"))


def table_bytes(value: object) -> bytes:
    """A table value as the store and the changelog hold it: compact JSON.

    The tables take bytes, not objects, so that Faust does not decode every changelog record during a
    restore (that decode was a third of the restore's time).
    """
    return _dumps(value)


def table_value(raw: bytes) -> Any:
    """A table value back from its bytes."""
    return json.loads(raw)


def block_hours(value: dict[str, Any]) -> set[int]:
    """The hours a block's value holds (of either half)."""
    return {f[0] for f in value[Feed.SOLAR]} | {f[0] for f in value[Feed.WEATHER]}


# A region's fields (``RegionHours.snapshot``) are kept in its home block, the block of its latest hour, under
# this key: they change with every batch that changes the region, as that block does, so a flush writes one
# entry for both (docs/DESIGN.md, "A region's fields in its latest block"). A region that keeps no hours has
# them in the regions table, where earlier versions kept every region's (still read: upgraded in place).
FIELDS_KEY = "region"


def home_block(state: RegionHours) -> int | None:
    """The block that holds the region's fields: that of its latest hour (never pruned: retention keeps the
    hours from below the watermark, the smaller latest hour, on); None when it keeps no hours."""
    latest = max((h for h in (state.latest_solar, state.latest_weather) if h is not None), default=None)
    if latest is not None and (latest in state.solar or latest in state.weather):
        return block_of(latest)
    kept = state.solar.keys() | state.weather.keys()  # not reached by the step's own writes; safe anyway
    return block_of(max(kept)) if kept else None


def block_value(state: RegionHours, block: int, home: bool = False) -> dict[str, Any] | None:
    """Table value of one block: the kept records of its hours, both halves, and in the region's ``home``
    block its fields; None when all are gone."""
    hours = range(block * BLOCK_HOURS, (block + 1) * BLOCK_HOURS)
    solar = [[h, *_solar_fields(state.solar[h])] for h in hours if h in state.solar]
    weather = [[h, *_weather_fields(state.weather[h])] for h in hours if h in state.weather]
    if not solar and not weather:
        return None
    value: dict[str, Any] = {Feed.SOLAR: solar, Feed.WEATHER: weather}
    if home:
        value[FIELDS_KEY] = state.snapshot()
    return value


def block_fields(value: dict[str, Any]) -> dict[str, int | None] | None:
    """The region's fields a block holds, if it is the region's home."""
    return value.get(FIELDS_KEY)


def load_block(state: RegionHours, value: dict[str, Any]) -> None:
    """Put a block's records back into a region's state (restore after a restart or rebalance); its fields
    are ``block_fields``'."""
    for f in value[Feed.SOLAR]:
        state.solar[f[0]] = _solar(f[0], f[1:])
    for f in value[Feed.WEATHER]:
        state.weather[f[0]] = _weather(f[0], f[1:])


# The rows topic names its columns once a message, then lists each row's values in that order: as compact as
# the positional form, and read by name, so a message whose fields differ from this worker's feature set (a
# feature added or removed, an upgrade, a rollback) is read right or refused, never shifted into wrong fields.


def encode_rows(rows: list[Row], row_type: RowType) -> bytes:
    """One message of the rows topic: ``{"columns": [field names], "rows": [[values], ...]}``."""
    return _dumps({"columns": row_type.fields, "rows": list(map(row_type.values, rows))})


def decode_rows(value: bytes, row_type: RowType) -> list[Row]:
    """The rows of a rows message as ``row_type``'s. Columns it does not have are left out (its table has no
    place for them); a feature column the message lacks (computed before the feature was added) is NULL, as
    in the rows written before it; a base column the message lacks cannot be made up: ValueError."""
    data = json.loads(value)
    columns, rows = data["columns"], data["rows"]
    fields = list(row_type.fields)
    make = row_type.cls
    if columns == fields:
        return [make(*v) for v in rows]
    missing = [name for name in fields if name not in columns]
    base = [name for name in missing if name not in row_type.features.names]
    if base:
        raise ValueError(f"rows message lacks the fields {base}")
    at = {name: i for i, name in enumerate(columns)}
    picks = [at.get(name) for name in fields]
    return [make(*(None if i is None else v[i] for i in picks)) for v in rows]


def region_value(state: RegionHours) -> dict[str, int | None]:
    """Value of a region in the regions table (one that keeps no hours) or under ``FIELDS_KEY`` in its home
    block: its whole state but the hours (``RegionHours.snapshot``): the watermark, what retention has
    forgotten, and the records offset of the last batch applied."""
    return state.snapshot()


def load_region(region: str, value: dict[str, int | None]) -> RegionHours:
    return RegionHours.restore(region, value)
