"""The topology of the app: its topics, tables and agents, built once from settings, wired in ``topology``.

    solar raw ──▶ ingest_solar ──┐                    ┌─▶ hours table (region|block → two days of hours)
                                 ├─▶ records topic ──▶ align ──▶ regions table (region → watermark, horizon)
    weather raw ─▶ ingest_weather┘ (region's partition)   │
         │ bad messages ─▶ dead-letter topic              └─▶ rows topic ──▶ write ──▶ RisingWave / PostgreSQL

Each agent is a module of its own (``runtime.ingest``, ``runtime.align``, ``runtime.write``) running its step
(``steps.*``) in a helper process; this module only builds and connects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

import faust
from faust.types import TableT

from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import table_value
from solar_agents.observe.health import Health
from solar_agents.observe.log import get_logger
from solar_agents.observe.regions import RegionIndex
from solar_agents.observe.stats import Stats
from solar_agents.runtime.align import AlignAgent
from solar_agents.runtime.backfill import Backfill, Progress
from solar_agents.runtime.batches import HoleFiller
from solar_agents.runtime.deadletters import DeadLetters
from solar_agents.runtime.faust_compat import range_reader
from solar_agents.runtime.faust_drain import App
from solar_agents.runtime.ingest import IngestAgent
from solar_agents.runtime.liveness import Liveness
from solar_agents.runtime.reading import ReadTracker
from solar_agents.runtime.write import WriteAgent
from solar_agents.settings import Settings
from solar_agents.sink import FeatureSink
from solar_agents.steps.align_tables import read_states

log = get_logger(__name__)

# The state is small (bounded by event time) and read from the stores only after a rebalance: the align
# step keeps it in memory. RocksDB's defaults (64 MB write buffers, a block cache per partition's store)
# would let memory grow with the history written instead.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 256 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 1024**2,
    "block_cache_compressed_size": 0,
}
# Raw records fetched and waiting for their ingest agent, in batches (``faust_drain.FetchedFeed``): one
# being taken while the next is fetched, as a stream's buffer holds them.
RAW_WAITING_BATCHES = 2
# While a recovery brings the tables back, the web view's index of regions is built again at most this often.
INDEX_REBUILD_SECONDS = 1.0


class Pipeline:
    """The app's topics, tables and agents; what the web view and the commands read of a worker."""

    def __init__(self, app: App, settings: Settings, health: Health, stats: Stats) -> None:
        self.app = app
        self.settings = settings
        self.stats = stats
        self.liveness = Liveness(app, health, self.stats)
        partitions = settings.topic_partitions

        def topic(name: str, partitions: int | None = None) -> faust.TopicT:
            # Bytes in, bytes out: validation is ours (pydantic), so that a bad message is a dead letter
            # rather than an exception inside Faust.
            return app.topic(
                name,
                partitions=partitions,
                internal=partitions is not None,
                key_serializer="raw",
                value_serializer="raw",
            )

        self.solar_topic = topic(settings.kafka_topic_solar)
        self.weather_topic = topic(settings.kafka_topic_weather)
        self.deadletter_topic = topic(settings.deadletter_topic, partitions=1)
        self.records_topic = topic(settings.records_topic, partitions)
        self.rows_topic = topic(settings.rows_topic, partitions)

        def table(name: str) -> TableT[str, bytes]:
            # Values are bytes (``core.wire.table_bytes``): Faust then neither encodes them on a write nor
            # decodes every changelog record during a restore.
            return app.Table(
                name,
                partitions=partitions,
                value_type=bytes,
                schema=faust.Schema(key_serializer="json", value_serializer="raw"),
                options=ROCKSDB_OPTIONS,
            )

        # Hour blocks (region|block -> two days of both halves) and regions (watermark, horizon), on the
        # records topic's partitions (each region in its own), keyed by region; and the replays in progress
        # per records partition.
        self.tables: dict[str, TableT[str, bytes]] = {
            name: table(name) for name in ("hours", "regions", "replays")
        }
        self.region_table = self.tables["regions"]

        # Records the hand-over dropped, read again (``core.offsets``).
        self.reader = range_reader(app, settings.kafka)
        holes = HoleFiller(self.reader, self.stats)
        self.dead_letters = dead_letters = DeadLetters(
            self.deadletter_topic, settings.deadletter_max_bytes, self.stats, self.reader
        )
        self.index = RegionIndex()  # the regions and hour blocks in the tables
        self._index_built_at = -INDEX_REBUILD_SECONDS
        self.reading = ReadTracker(app, settings, self.records_topic, self.stats)
        # The raw topics' records go to the ingest agents a fetched run at a time (``faust_drain``).
        feeds = {
            name: app.fetched_feed(name, RAW_WAITING_BATCHES * settings.ingest_batch_size)
            for name in (settings.kafka_topic_solar, settings.kafka_topic_weather)
        }
        self.ingest = IngestAgent(
            settings, self.records_topic, self.reading, dead_letters, holes, self.stats, feeds
        )
        self.align = AlignAgent(
            app,
            settings,
            self.tables,
            self.rows_topic,
            dead_letters,
            holes,
            self.stats,
            self.index,
            self.reading.ingested_to_end,
        )
        self.write = WriteAgent(settings, holes, self.stats, app.crash)
        self.progress = Progress(app, settings, self.stats, lambda: self.align.records_kept)
        self.backfill = Backfill(app, self.progress, self.write.flush, self.align.flush)
        self._started = time.monotonic()
        self._recovered_once = False
        self.tables["hours"].on_recover(self._on_recovered)

    async def _on_recovered(self) -> None:
        """After the first rebalance's restore: say how long the worker took to get its tables back."""
        if self._recovered_once:
            return
        self._recovered_once = True
        log.info(
            "tables_recovered",
            seconds_since_start=round(time.monotonic() - self._started, 2),
            hour_blocks_kept=len(self.tables["hours"]),
        )

    def helpers(self) -> tuple[Any, ...]:
        return self.ingest.parser, self.align.aligner, self.write.sink

    async def start(self) -> None:
        """With the worker: the helper processes started (each takes a second) rather than at the first
        batch."""
        await asyncio.gather(*(helper.start() for helper in self.helpers()))

    async def close(self, _sender: Any, /, *args: Any, **kwargs: Any) -> None:
        """On worker shutdown: close the database connection, then stop the helpers."""
        await self.dead_letters.log_summary()
        with contextlib.suppress(Exception):  # a helper that died has nothing left to close
            await self.write.sink.run(FeatureSink.close)
        await asyncio.gather(*(helper.close() for helper in self.helpers()))
        await self.reader.close()

    def regions(self) -> RegionIndex:
        """The regions on this worker and their hour blocks. The align agent keeps the index up to date with
        its writes; after a rebalance it is built again from the tables' keys, and every second while a
        recovery brings the tables back."""
        app, index = self.app, self.index
        if index.built_for == app.consumer_generation_id and not app.rebalancing:
            return index
        now = time.monotonic()
        if app.rebalancing and now - self._index_built_at < INDEX_REBUILD_SECONDS:
            return index
        index.rebuild(
            self.tables["hours"].keys(),
            self.tables["regions"].keys(),
            None if app.rebalancing else app.consumer_generation_id,
        )
        self._index_built_at = now
        return index

    def region_state(self, region: str) -> RegionHours | None:
        """One region's kept hours, read from the tables (after each flush they hold what the align step
        holds; its helper's memory is not this process's: ``AlignAgent.flush_regions`` first); None for a
        region this worker does not hold."""
        index = self.regions()
        if region not in index:
            return None
        hours, regions = self.tables["hours"], self.tables["regions"]
        blocks = [(key, value) for key in index.block_keys(region) if (value := hours.get(key)) is not None]
        value = regions.get(region)
        states = read_states(_decoded(blocks), _decoded([] if value is None else [(region, value)]))
        return states.get(region)


def _decoded(entries: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, Any]]:
    return ((key, table_value(value)) for key, value in entries)


def topology(app: faust.App, p: Pipeline) -> None:
    """The agents and timers of the app, as the picture at the top of this module draws them."""
    app.task(p.start)
    app.task(p.write.prepare)  # the table fits the feature set, or the worker refuses at once
    agents = (
        app.agent(p.solar_topic, name="ingest_solar")(p.ingest.solar),  # solar raw -> records
        app.agent(p.weather_topic, name="ingest_weather")(p.ingest.weather),  # weather raw -> records
        app.agent(p.records_topic, name="align")(p.align.run),  # records -> hour tables + rows
        app.agent(p.rows_topic, name="write")(p.write.run),  # rows -> database
    )
    for agent in agents:
        p.liveness.watch(agent)
    # Progress reports also go out on a timer, so an idle or empty raw topic still tells it is caught up
    # (and held reads are looked at again).
    app.timer(2.0, name="report_progress")(p.reading.report_all)
    app.timer(10.0, name="progress")(p.progress.log)
    app.timer(0.1, name="flush_tables")(p.align.flush_when_due)
    app.timer(p.settings.deadletter_log_interval_seconds, name="dead_letters_summary")(
        p.dead_letters.log_summary
    )
    # The backfill's bar and exit: on with EXIT_WHEN_CAUGHT_UP or the ``backfill`` command; idle otherwise.
    app.timer(1.0, name="backfill_progress")(p.backfill.tick)
    # Often: the exit should follow the last write within a fraction of a second.
    app.timer(0.2, name="exit_when_caught_up")(p.backfill.exit_when_caught_up)
    if p.settings.exit_when_caught_up:
        p.backfill.enable()
    app.on_before_shutdown.connect(p.close)
