"""The align agent: records messages -> the hour tables and rows messages.

The align step and its state (``steps.align.Aligner``) live in a helper process of their own, loaded from the
tables after every rebalance; each batch is computed there while the batch before is applied here: its rows
sent on, its records messages that failed sent to the dead letters.

Its table writes are held in the helper and flushed together, when enough records have come since the last
flush, when the input pauses, at a rebalance, and at least every ``TABLE_FLUSH_MAX_SECONDS``. A batch is acked
only once a flush has written its state: until then a crash reads it again, like any batch not acked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import faust
from faust.types import TP, StreamT, TableT

from solar_agents.core.messages import MessageBatch
from solar_agents.core.read_progress import Feed
from solar_agents.observe.log import get_logger
from solar_agents.observe.regions import RegionIndex
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import (
    Applying,
    HoleFiller,
    Linger,
    Taken,
    batches,
    gathered,
    overlapped,
    retrying,
)
from solar_agents.runtime.deadletters import DeadLetters
from solar_agents.runtime.faust_compat import committed_offsets
from solar_agents.runtime.held import HeldBatches
from solar_agents.runtime.helpers import step_helper
from solar_agents.settings import Settings
from solar_agents.steps.align import (
    ROWS_PER_MESSAGE,
    AlignedMessages,
    Aligner,
    EncodedWrites,
    align_messages,
    flush_region_writes,
    flush_writes,
    load_aligner,
    reapply,
)

log = get_logger(__name__)

# The most records messages (of up to 250 records each) joined into one batch while the helper was busy:
# about 4 MB of input held, and past 5,000 regions several records a region per batch.
ALIGN_BATCH_MAX_MESSAGES = 256
# A batch of this many regions or more, with fewer records a region than this, costs mostly per region (each
# region's rows, hours and table entries, once a batch): the next one waits for more input while more keeps
# coming, for at most ``seconds`` and up to ``limit`` messages (docs/DESIGN.md, "Sparse batches wait").
SPARSE_BATCH_REGIONS = 500
SPARSE_RECORDS_PER_REGION = 16
SPARSE_LINGER_SECONDS = 3.0
SPARSE_BATCH_MAX_MESSAGES = 1024


def sparse_linger(batch: AlignedMessages, quiet: float) -> Linger | None:
    """How the batch after ``batch`` waits for more input when ``batch`` was sparse; None when it was not. In
    a live flow the input pauses between hours, and the wait ends ``quiet`` (the take's own wait) after the
    last take."""
    if batch.regions < SPARSE_BATCH_REGIONS or batch.records >= SPARSE_RECORDS_PER_REGION * batch.regions:
        return None
    return Linger(SPARSE_LINGER_SECONDS, quiet, SPARSE_BATCH_MAX_MESSAGES)


class AlignAgent:
    """The agent of the records topic, and the helper that holds the align step's state."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        tables: dict[str, TableT[str, bytes]],
        rows_topic: faust.TopicT,
        dead_letters: DeadLetters,
        holes: HoleFiller,
        stats: Stats,
        index: RegionIndex,
        raw_ingested: Callable[[], bool],
    ) -> None:
        self.app = app
        self.settings = settings
        self.tables = tables
        self.rows_topic = rows_topic
        self.dead_letters = dead_letters
        self.holes = holes
        self.stats = stats
        self.index = index  # the regions and hour blocks in the tables, for the web view
        aligner_args = (settings.feature_set, settings.allowed_lateness_hours, settings.max_regions)
        self.aligner = step_helper("align", Aligner, aligner_args, settings)
        self.records_kept = 0  # what the aligner holds in memory, as of its latest batch
        self._loaded_generation: int | None = None
        self._applying = Applying()  # the batch before, being written and sent
        # Helper calls and flushes one at a time, in order: a flush writes what every batch computed so far
        # changed, so it must not overtake one.
        self._lock = asyncio.Lock()
        self._stream: StreamT[bytes] | None = None
        self.held = HeldBatches(app, settings, tables, stats, index, raw_ingested)
        # Set while the latest batch was sparse: the next one lingers (``gathered``).
        self._sparse: Linger | None = None

    async def run(self, stream: StreamT[bytes]) -> None:
        """One batch computed and one applied at a time, in order."""
        self._stream = stream
        size, within = self.settings.ingest_batch_size, self.settings.ingest_batch_max_wait_seconds
        await overlapped(
            gathered(
                batches(stream, size, within, self.holes),
                ALIGN_BATCH_MAX_MESSAGES,
                lambda: self.app.consumer_generation_id,
                lambda: self._sparse,
            ),
            self._compute,
            partial(self._apply, stream),
            self._applying,
        )

    async def _ensure_loaded(self) -> None:
        """The aligner starts from the tables after every rebalance (and after its helper died)."""
        generation = self.app.consumer_generation_id
        if generation == self._loaded_generation:
            return
        await self._applying.settled()  # the tables must hold the batch before first
        if generation != self.held.generation:
            self.held.drop(generation)
        started = time.perf_counter()
        hour_items = list(self.tables["hours"].items())
        region_items = list(self.tables["regions"].items())
        regions, hours = await self.aligner.run(
            load_aligner, hour_items, region_items, list(self.tables["replays"].items())
        )
        self.index.rebuild((k for k, _ in hour_items), (k for k, _ in region_items), generation)
        # The helper died with the table writes it held: the batches behind them are applied again.
        records_topic = self.settings.records_topic
        committed = committed_offsets(self.app.consumer)
        for batch in self.held.unwritten:
            at = {p: committed.get(TP(records_topic, p)) for p in set(batch.partitions)}
            await self.aligner.run(reapply, batch, at)
        self._loaded_generation = generation
        log.info(
            "state_loaded",
            regions=regions,
            hours=hours,
            batches_applied_again=len(self.held.unwritten),
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _compute(self, taken: Taken) -> AlignedMessages:
        """One batch through the align step, in its helper; a helper that died is started again from the
        tables and the batches held since the last flush, and the batch is run again."""
        records_topic = self.settings.records_topic
        batch = MessageBatch.of(records_topic, taken.messages)
        committed = committed_offsets(self.app.consumer)
        aligned: list[AlignedMessages] = []

        per_write = self.settings.table_flush_records_per_write

        async def attempt() -> None:
            await self._ensure_loaded()
            at = {p: committed.get(TP(records_topic, p)) for p in set(batch.partitions)}
            try:
                aligned.append(await self.aligner.run(align_messages, batch, at, ROWS_PER_MESSAGE, per_write))
            except Exception:
                self._loaded_generation = None  # its state is gone with it: load again from the tables
                raise

        self.held.computing(taken)
        async with self._lock:
            await retrying("align_step_failed", attempt, self.stats.retrying)
            self.held.computed(batch, aligned[0].flushed)
        self._sparse = sparse_linger(aligned[0], self.settings.ingest_batch_max_wait_seconds)
        return aligned[0]

    async def _apply(self, stream: StreamT[bytes], taken: Taken, batch: AlignedMessages) -> None:
        """An aligned batch's table writes (when it flushed), rows messages and dead letters, then the acks
        of every batch the writes cover; or the batch is held for the next flush."""
        self.stats.late += batch.late
        self.stats.rows_emitted += batch.rows_count
        self.records_kept = batch.records_kept
        for region in batch.added:
            self.index.add(region)
        if batch.flushed:
            await self.held.write(batch.writes, "records")
        for partition, messages in batch.rows.items():
            for value in messages:
                await retrying(
                    "rows_send_failed",
                    partial(self.rows_topic.send, key=None, value=value, partition=partition),
                    self.stats.retrying,
                )
        if batch.failed:
            at = {(message.partition, message.offset): message for message in taken.messages}
            for partition, offset, reason in batch.failed:
                await self.dead_letters.send(at[partition, offset], reason)
        if batch.refused:
            topics = {
                Feed.SOLAR: self.settings.kafka_topic_solar,
                Feed.WEATHER: self.settings.kafka_topic_weather,
            }
            await self.dead_letters.send_originals(
                (topics[feed], partition, offset, reason) for feed, partition, offset, reason in batch.refused
            )
        self.held.applied(taken)
        if batch.flushed:
            await self.held.ack(stream)

    async def flush_when_due(self) -> None:
        """On a timer: flush once ``flush_due``."""
        reason = self.held.due(busy=self._lock.locked() or self._applying.busy())
        if reason is not None:
            await self.flush(reason)

    async def flush_regions(self, regions: list[str]) -> None:
        """Before the web view reads ``regions`` from the tables: when every input is read and the step is
        idle, their held writes written now (not the other regions', nor the acks:
        ``HeldWrites.flush_regions``). A step with input to work through is not held up for reads: the view
        then shows the tables as the last flush left them.
        """
        if self._lock.locked():
            return  # a batch being computed (or a flush): the reads must not take turns with the input
        if self.held.since is None and not self._applying.busy():
            return  # nothing computed since the last flush
        if not self.held.input_read():
            # A backlog: its idle moments between batches are many, and helper calls for reads in each of
            # them cost the input a fifth of its rate under web load (docs/DESIGN.md).
            return
        async with self._lock:
            generation = self.app.consumer_generation_id
            if generation != self._loaded_generation or generation != self.held.generation:
                return
            try:
                writes = await self.aligner.run(flush_region_writes, regions)
            except Exception:  # a helper that died: loaded again with the next batch
                self._loaded_generation = None
                return
            await self.held.write(writes, "web")

    async def flush(self, reason: str = "backfill") -> None:
        """Write every table write held, then ack the batches they cover."""
        stream = self._stream
        if stream is None or self.held.since is None:
            return
        async with self._lock:
            await self._applying.finished()  # every batch computed is applied: the writes cover them all
            if self._applying.failure() is not None:
                return  # the agent fails with it, and its batches are read again
            if self.app.consumer_generation_id != self.held.generation:
                self.held.drop(self.app.consumer_generation_id)  # Faust must not wait for their acks
                return
            writes: list[EncodedWrites] = []

            async def attempt() -> None:
                await self._ensure_loaded()
                try:
                    writes.append(await self.aligner.run(flush_writes))
                except Exception:
                    self._loaded_generation = None
                    raise

            await retrying("align_flush_failed", attempt, self.stats.retrying)
            self.held.unwritten.clear()
            try:
                await self.held.write(writes[0], reason)
                await self.held.ack(stream)
            except Exception as exc:  # a full DATA_DIR: the agent fails with it, as when it writes itself
                log.error("align_flush_failed", error=f"{type(exc).__name__}: {exc}")
                self._applying.fail(exc)
