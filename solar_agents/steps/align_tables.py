"""The align step's state as the tables hold it: each region's kept hours and fields, read back (after every
rebalance, for the web view, in tests).

Pure: the values are the tables' decoded values (``core.wire.table_value``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import block_fields, load_block, load_region, split_block_key
from solar_agents.steps.held_writes import Home


def read_states(
    hours: Iterable[tuple[str, Any]], regions: Iterable[tuple[str, Any]]
) -> dict[str, RegionHours]:
    """The regions' kept hours as the tables hold them."""
    return read_tables(hours, regions)[0]


def read_tables(
    hours: Iterable[tuple[str, Any]], regions: Iterable[tuple[str, Any]]
) -> tuple[dict[str, RegionHours], dict[str, Home]]:
    """The regions' kept hours as the tables hold them, and where each one's fields were read from (its home
    block, or None for the regions table) with their value.

    A flush that died part way may leave a region's fields in two places (it writes the new home before it
    clears the old one): the copy of the later batch counts (``applied_through``), then the later block.
    """
    found: dict[str, tuple[tuple[int, int], Home]] = {}

    def offer(region: str, home: int | None, fields: dict[str, int | None]) -> None:
        applied = fields.get("applied_through")
        rank = (-1 if applied is None else applied, -1 if home is None else home)
        if region not in found or rank > found[region][0]:
            found[region] = (rank, (home, fields))

    for region, value in regions:
        offer(region, None, value)
    blocks: dict[str, list[Any]] = defaultdict(list)
    for key, value in hours:
        region, block = split_block_key(key)
        blocks[region].append(value)
        fields = block_fields(value)
        if fields is not None:
            offer(region, block, fields)
    states, homes = {}, {}
    for region in found.keys() | blocks.keys():
        chosen = found.get(region)
        state = RegionHours(region) if chosen is None else load_region(region, chosen[1][1])
        for value in blocks.get(region, ()):
            load_block(state, value)
        states[region] = state
        if chosen is not None:
            homes[region] = chosen[1]
    return states, homes
