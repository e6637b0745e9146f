"""A region's state as a restart gets it back: through the table encodings and their bytes, nothing else."""

from __future__ import annotations

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import (
    block_key,
    block_of,
    block_value,
    home_block,
    region_value,
    table_bytes,
    table_value,
)
from solar_agents.steps.align_tables import read_states


def through_tables(state: RegionHours) -> RegionHours:
    home = home_block(state)
    hours = []
    for block in {block_of(hour) for hour in state.solar.keys() | state.weather.keys()}:
        value = block_value(state, block, home=block == home)
        assert value is not None
        hours.append((block_key(state.region, block), table_value(table_bytes(value))))
    regions = [] if home is not None else [(state.region, table_value(table_bytes(region_value(state))))]
    return read_states(hours, regions)[state.region]
