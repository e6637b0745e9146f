"""A region's state as a restart gets it back: through the table encodings and their bytes, nothing else."""

from __future__ import annotations

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import (
    block_of,
    block_value,
    load_block,
    load_region,
    region_value,
    table_bytes,
    table_value,
)


def through_tables(state: RegionHours) -> RegionHours:
    copy = load_region(state.region, table_value(table_bytes(region_value(state))))
    for block in {block_of(hour) for hour in state.solar.keys() | state.weather.keys()}:
        value = block_value(state, block)
        assert value is not None
        load_block(copy, table_value(table_bytes(value)))
    return copy
