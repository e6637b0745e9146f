"""Which regions a worker holds, and which hour blocks of each: an index kept beside the tables, so that the
web view and ``/metrics`` read only the regions they show, never a whole table.

The align agent updates it with every table write it makes; after a rebalance (and while a recovery brings
the tables back) it is built again from the tables' keys. Pure: no Faust.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from solar_agents.core.wire import block_key, split_block_key


@dataclass(frozen=True, slots=True)
class Page:
    """One page of region names, in name order: those after ``after`` that contain ``search``."""

    regions: list[str]
    total: int  # regions held
    matching: int  # regions that contain the search text (all without one)
    next_after: str | None  # the ``after`` of the next page; None on the last one


class RegionIndex:
    """Region names and the hour blocks each has in the hours table."""

    def __init__(self) -> None:
        self.blocks: dict[str, set[int]] = {}
        self.built_for: Hashable = None  # what the last rebuild was for (a consumer generation)
        self._sorted: list[str] | None = None

    def __len__(self) -> int:
        return len(self.blocks)

    def __contains__(self, region: object) -> bool:
        return region in self.blocks

    def rebuild(self, hour_keys: Iterable[str], region_keys: Iterable[str], built_for: Hashable) -> None:
        """Start again from the keys of the hours and regions tables."""
        self.blocks = {region: set() for region in region_keys}
        for key in hour_keys:
            region, block = split_block_key(key)
            self.blocks.setdefault(region, set()).add(block)
        self.built_for = built_for
        self._sorted = None

    def write(self, table: str, key: str, present: bool) -> None:
        """A table write the align agent made: a region's value, or a block set (``present``) or deleted."""
        if table == "regions":
            self._region(key)
        elif table == "hours":
            region, block = split_block_key(key)
            blocks = self._region(region)
            if present:
                blocks.add(block)
            else:
                blocks.discard(block)

    def add(self, region: str) -> None:
        """A region the align step holds that has no table entries yet."""
        self._region(region)

    def _region(self, region: str) -> set[int]:
        blocks = self.blocks.get(region)
        if blocks is None:
            blocks = self.blocks[region] = set()
            self._sorted = None
        return blocks

    def names(self) -> list[str]:
        """Every region, in name order (sorted again only after a region was added)."""
        if self._sorted is None:
            self._sorted = sorted(self.blocks)
        return self._sorted

    def block_keys(self, region: str) -> list[str]:
        """The hours table's keys of ``region``, in hour order."""
        return [block_key(region, block) for block in sorted(self.blocks.get(region, ()))]

    def page(self, after: str | None, limit: int, search: str | None = None) -> Page:
        """Up to ``limit`` regions after ``after`` in name order; with ``search``, only those whose name
        contains it (case-insensitive)."""
        names = self.names()
        if search:
            text = search.casefold()
            names = [name for name in names if text in name.casefold()]
        start = 0 if after is None else bisect.bisect_right(names, after)
        chosen = names[start : start + limit]
        more = start + limit < len(names)
        return Page(chosen, len(self.blocks), len(names), chosen[-1] if more and chosen else None)
