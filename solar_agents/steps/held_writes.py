"""The align step's table writes, held until a flush (docs/DESIGN.md, "Table writes held until a flush").

Per records partition: the replays' entries in order, and the hour blocks changed per region; and the
records applied since the last flush. A flush writes each block once, as it is then, however many batches
changed it; a region's fields go with its latest block (``core.wire.home_block``). Pure: no Faust.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import BLOCK_HOURS, FIELDS_KEY, block_key, block_value, home_block, region_value

Table = Literal["hours", "regions", "replays"]

# A flush waits for a block's worth of records (two days of both feeds) per region it writes: a region's
# entries are written once it has brought as much as one of them holds, not again and again while its first
# block fills (docs/DESIGN.md, "Table writes held until a flush").
RECORDS_PER_REGION_WRITTEN = 2 * BLOCK_HOURS


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
        # Where each region's fields are in the tables (its home block, or None for the regions table) and
        # the fields written there; a region not in the tables yet is not here.
        self.homes: dict[str, Home] = {}
        self._entries = 0  # what the next flush writes: the regions' entries counted as they change
        self._counts: dict[str, int] = {}  # per changed region
        self._controls: dict[int, list[TableWrite]] = defaultdict(list)
        self._changed: dict[int, dict[str, set[int]]] = defaultdict(dict)

    def reset(self, homes: dict[str, Home]) -> None:
        """Nothing held, and the tables as loaded (``steps.align_tables.read_tables``)."""
        self.clear()
        self.homes = homes

    def clear(self) -> None:
        self.records = 0
        self._entries = 0
        self._counts.clear()
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
        changed.update(blocks)
        count = self._count(region, changed)
        self._entries += count - self._counts.get(region, 0)
        self._counts[region] = count
        self.records += records

    def entries(self) -> int:
        """How many table entries the next flush writes."""
        return self._entries + sum(len(writes) for writes in self._controls.values())

    def enough(self, records_per_write: int) -> bool:
        """Enough records since the last flush for what it would write: ``records_per_write`` per entry
        (at most one changelog record per that many records), and a block's worth per region changed."""
        return (
            self.records >= records_per_write * self.entries()
            and self.records >= RECORDS_PER_REGION_WRITTEN * len(self._counts)
        )

    def flush(self) -> dict[int, list[TableWrite]]:
        """The table writes held since the last flush, per records partition: the replays' entries in order,
        then each changed region's entries once, as they are now. The tables then hold this state."""
        writes: dict[int, list[TableWrite]] = {}
        for partition in self._controls.keys() | self._changed.keys():
            held = list(self._controls.get(partition, ()))
            for region, blocks in self._changed.get(partition, {}).items():
                held.extend(self._written(region, blocks))
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
                self._entries -= self._counts.pop(region)
                held.extend(self._written(region, blocks))
            if held:
                writes[partition] = held
        return writes

    def _homes(self, region: str) -> tuple[RegionHours, int | None, Home | None]:
        """A region's state, its home now, and its home in the tables if it must move from there."""
        state = self.state(region)
        home = home_block(state)
        old = self.homes.get(region)
        return state, home, old if old is not None and old[0] != home else None

    def _count(self, region: str, blocks: set[int]) -> int:
        """How many entries ``_written`` would write now (on the hot path: counted, not built)."""
        _, home, moved_from = self._homes(region)
        return len(blocks) + (home is None or home not in blocks) + (moved_from is not None)

    def _written(self, region: str, blocks: set[int]) -> list[TableWrite]:
        """What changed of a region: each changed block once, then its fields in its home (the block of its
        latest hour, or the regions table while it keeps no hours), then the old home without them when the
        home moved.

        The fields say how far the region's batches are applied (``RegionHours.applied_through``): a flush
        that dies part way must leave every block at least as far as the fields the tables then hold. So
        the new fields come after every block, and the old ones stay where they are until then: an old home
        that changed is written first with them (and cleared at the end). Two copies after a crash are
        read as the later (``steps.align_tables.read_tables``).
        """
        state, home, moved_from = self._homes(region)
        writes = []
        for block in sorted(blocks - {home}):
            value = block_value(state, block)
            if moved_from is not None and block == moved_from[0] and value is not None:
                value = {**value, FIELDS_KEY: moved_from[1]}
            writes.append(TableWrite("hours", block_key(region, block), value))
        fields = region_value(state)
        if home is None:
            writes.append(TableWrite("regions", region, fields))
        else:
            writes.append(TableWrite("hours", block_key(region, home), block_value(state, home, home=True)))
        if moved_from is not None:
            old = moved_from[0]
            writes.append(
                TableWrite("regions", region, None)
                if old is None
                else TableWrite("hours", block_key(region, old), block_value(state, old))
            )
        self.homes[region] = (home, fields)
        return writes


# Where a region's fields are in the tables (its home block, or None for the regions table), and their value
# there.
Home = tuple[int | None, dict[str, int | None]]
