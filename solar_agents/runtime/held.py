"""The align agent's batches held until a flush (docs/DESIGN.md, "Table writes held until a flush"): which
ones, since when, where their table writes go, when the flush is due, and the writes themselves.

The align helper holds the table writes; this holds the batches behind them, unacked, so that a flush acks
exactly what it wrote and a helper that died can be given them again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import faust
from faust.types import EventT, StreamT, TableT

from solar_agents.core.messages import MessageBatch
from solar_agents.observe.lag import partition_offsets
from solar_agents.observe.log import get_logger
from solar_agents.observe.regions import RegionIndex
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import Taken
from solar_agents.runtime.faust_compat import writing_in
from solar_agents.settings import Settings
from solar_agents.steps.align import EncodedWrites

log = get_logger(__name__)
Event = EventT[bytes]

# Table writes between two turns of the event loop (other agents, the web view, health probes).
WRITES_PER_TURN = 500
# Every input read, and the agent idle this long: what is held is flushed, so a caught-up worker commits
# what it has done.
IDLE_FLUSH_SECONDS = 0.5


class HeldBatches:
    """The batches of one generation whose table state is not written yet, and their flush."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        tables: dict[str, TableT[str, bytes]],
        stats: Stats,
        index: RegionIndex,
        raw_ingested: Callable[[], bool],
    ) -> None:
        self.app = app
        self.settings = settings
        self.tables = tables
        self.stats = stats
        self.index = index  # the regions and hour blocks in the tables, for the web view
        self.raw_ingested = raw_ingested  # every raw partition ingested to its end (``ReadTracker``)
        self.unwritten: list[MessageBatch] = []  # computed, their table state only in the helper
        self._applied: list[Taken] = []  # applied, not acked: waiting for a flush to write their state
        self.since: float | None = None  # when the oldest of them was applied
        self._last_busy_at = time.monotonic()
        self._last_events: dict[int, Event] = {}  # per records partition: where its table writes go
        self.generation: int | None = None  # of the batches held

    def computing(self, taken: Taken) -> None:
        """A batch goes to the helper. A flush may write its state before it is applied: its partitions'
        events must be known by then."""
        self._last_busy_at = time.monotonic()
        self._last_events.update(taken.last_events())

    def computed(self, batch: MessageBatch, flushed: bool) -> None:
        if flushed:
            self.unwritten.clear()  # the batch's writes hold them all
        else:
            self.unwritten.append(batch)

    def applied(self, taken: Taken) -> None:
        self._applied.append(taken)
        if self.since is None:
            self.since = time.monotonic()
        self._last_busy_at = time.monotonic()

    def drop(self, generation: int | None) -> None:
        """A rebalance: the consumer has sought every partition back to its committed offset, so the batches
        held come again. They are never acked from here (nor waited for by Faust)."""
        self.unwritten.clear()
        self._applied.clear()
        self.since = None
        self.generation = generation

    def due(self, busy: bool) -> str | None:
        """Why the batches held wait for no more, if they do not: every input is read and the agent idle
        (``idle``), a rebalance or stop has suspended the flow (``suspended``), or the oldest has waited
        ``TABLE_FLUSH_MAX_SECONDS`` (``age``). A backfill's pauses (a raw partition waiting for a slower
        one, the ingest behind) are not idle: the writes wait on."""
        if self.since is None:
            return None
        now = time.monotonic()
        if not self.app.flow_control.is_active():
            return "suspended"
        if not busy and now - self._last_busy_at >= IDLE_FLUSH_SECONDS and self.input_read():
            return "idle"
        if now - self.since >= self.settings.table_flush_max_seconds:
            return "age"
        return None

    def input_read(self) -> bool:
        """Every assigned partition of the raw topics ingested to its end and of the records topic read to its
        high-water mark. Raw records read but still waiting for the ingest (a fetched run, a batch being
        parsed) are not: at the end of a backfill a flush then wrote thousands of regions' entries that
        their last records changed again a second later."""
        records = partition_offsets(self.app.consumer, (self.settings.records_topic,))
        return self.raw_ingested() and all(not o.unread for o in records)

    async def write(self, writes: EncodedWrites, reason: str) -> None:
        """A flush's table writes, each to the changelog partition of its records partition."""
        written = 0
        for partition, partition_writes in writes.items():
            with writing_in(self._last_events[partition]):
                for name, key, value in partition_writes:
                    table = self.tables[name]
                    if value is None:
                        table.pop(key, None)
                    else:
                        table[key] = value
                    self.index.write(name, key, value is not None)
                    written += 1
                    if not written % WRITES_PER_TURN:  # thousands with many regions: let the loop turn
                        await asyncio.sleep(0)
        if written:
            self.stats.table_flushes[reason] += 1
            self.stats.table_entries_written += written
        log.debug("tables_flushed", reason=reason, entries=written, batches=len(self._applied))

    async def ack(self, stream: StreamT[bytes]) -> None:
        """Only now, with the tables, rows and dead letters of the batches on their way, may they commit."""
        applied, self._applied, self.since = self._applied, [], None
        for taken in applied:
            await taken.ack(stream)
