"""A region's state as a restart gets it back: through the table encodings and JSON, nothing else."""

from __future__ import annotations

import json

from solar_agents.hours import RegionHours
from solar_agents.records import block_of, block_value, load_block, load_region, region_value


def through_tables(state: RegionHours) -> RegionHours:
    copy = load_region(state.region, json.loads(json.dumps(region_value(state))))
    for block in {block_of(hour) for hour in state.solar.keys() | state.weather.keys()}:
        value = block_value(state, block)
        assert value is not None
        load_block(copy, json.loads(json.dumps(value)))
    return copy
