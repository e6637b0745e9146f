"""The align step's table writes, held until a flush (docs/DESIGN.md, "Table writes held until a flush").

Per records partition: the replays' entries in order, and the hour blocks changed per region; and the
records applied since the last flush. A flush writes each block and region once, as it is then, however
many batches changed it. Pure: no Faust.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import block_key, block_value, region_value

Table = Literal["hours", "regions", "replays"]


@dataclass(frozen=True, slots=True)
class TableWrite:
    """Set ``key`` of a table to ``value``; None deletes it."""

    table: Table
    key: str
    value: Any


class HeldWrites:
    """What the next flush writes, and what it writes it from (``state``: a region's state by name)."""

    def __init__(self, state: Callable[[str], RegionHours]) -> None:
        self.state = state
        self.records = 0  # records applied since the last flush
        self._entries = (
            0  # blocks and regions changed since (counted as they change: a batch's cost per region)
        )
        self._controls: dict[int, list[TableWrite]] = defaultdict(list)
        self._changed: dict[int, dict[str, set[int]]] = defaultdict(dict)

    def clear(self) -> None:
        self.records = 0
        self._entries = 0
        self._controls.clear()
        self._changed.clear()

    def controls(self, partition: int) -> list[TableWrite]:
        """A records partition's replay entries, in order: the step appends to it."""
        return self._controls[partition]

    def changed(self, partition: int, region: str, blocks: Iterable[int], records: int) -> None:
        """``records`` applied to ``region``, changing (storing or pruning hours of) ``blocks``."""
        by_region = self._changed[partition]
        changed = by_region.get(region)
        if changed is None:
            changed = by_region[region] = set()
            self._entries += 1  # the region's fields
        before = len(changed)
        changed.update(blocks)
        self._entries += len(changed) - before
        self.records += records

    def entries(self) -> int:
        """How many table entries the next flush writes."""
        return self._entries + sum(len(writes) for writes in self._controls.values())

    def flush(self) -> dict[int, list[TableWrite]]:
        """The table writes held since the last flush, per records partition: the replays' entries in order,
        then each changed block and region once, as they are now. The tables then hold this state."""
        writes: dict[int, list[TableWrite]] = {}
        for partition in self._controls.keys() | self._changed.keys():
            held = list(self._controls.get(partition, ()))
            for region, blocks in self._changed.get(partition, {}).items():
                held.extend(self._region_writes(region, blocks))
            writes[partition] = held
        self.clear()
        return writes

    def flush_regions(self, regions: Iterable[str]) -> dict[int, list[TableWrite]]:
        """The held writes of ``regions`` alone, ahead of the next flush (a read of the web view): the tables
        then hold these regions as the step does. As safe as any table write ahead of the commit: a batch
        read again finds its offset applied (``RegionHours.applied_through``). The batches stay held until
        the next whole flush, which does not write these regions again unless they change."""
        writes: dict[int, list[TableWrite]] = {}
        wanted = set(regions)
        for partition, by_region in self._changed.items():
            held = []
            for region in wanted.intersection(by_region):
                blocks = by_region.pop(region)
                self._entries -= len(blocks) + 1
                held.extend(self._region_writes(region, blocks))
            if held:
                writes[partition] = held
        return writes

    def _region_writes(self, region: str, blocks: set[int]) -> list[TableWrite]:
        """What changed of a region: each changed block once, and the region's fields."""
        state = self.state(region)
        writes = [TableWrite("hours", block_key(region, b), block_value(state, b)) for b in sorted(blocks)]
        writes.append(TableWrite("regions", region, region_value(state)))
        return writes
