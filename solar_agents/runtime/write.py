"""The write agent: rows messages -> upserts into RisingWave (or PostgreSQL), acked only once written.

The statements run in the sink's helper process (``steps.write.write_messages`` with ``sink.FeatureSink``):
psycopg2 blocks, the event loop must not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from faust.types import StreamT

from solar_agents.core.messages import MessageBatch
from solar_agents.errors import Refused
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import HoleFiller, batches, retrying
from solar_agents.runtime.helpers import step_helper
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo, FeatureSink
from solar_agents.steps.write import write_messages


class WriteAgent:
    """The agent of the rows topic, and the helper that holds the database connection."""

    def __init__(
        self,
        settings: Settings,
        holes: HoleFiller,
        stats: Stats,
        crash: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.crash = crash  # the worker's: a refusal ends it (exit code 2, ``runtime.worker``)
        self.holes = holes
        self.stats = stats
        sink_args = (ConnectionInfo.of(settings), settings.features_table, settings.feature_set)
        self.sink = step_helper("sink", FeatureSink, sink_args, settings, blocking=True)

    async def run(self, stream: StreamT[bytes]) -> None:
        settings = self.settings
        try:
            async for taken in batches(
                stream, settings.batch_size, settings.batch_max_wait_seconds, self.holes
            ):
                await self.write_rows(MessageBatch.of(settings.rows_topic, taken.messages))
                # Only now may the offsets behind these rows be committed.
                await taken.ack(stream)
        except Refused as exc:  # the table cannot take these rows (a changed definition, no privilege)
            await self.crash(exc)

    async def prepare(self) -> None:
        """At the worker's start: the table made to fit the feature set, so that a refusal (a changed
        definition, a missing privilege) comes at once rather than with the first row to write."""
        try:
            await retrying(
                "sink_prepare_failed",
                partial(self.sink.run, FeatureSink.prepare),
                self.stats.retrying,
                self.settings.db_retry_max_seconds,
            )
        except Refused as exc:
            await self.crash(exc)

    async def write_rows(self, batch: MessageBatch) -> None:
        """Write the rows of a batch of rows messages, retrying with backoff until it succeeds; each retry
        is logged once."""

        async def attempt() -> None:
            try:
                written = await self.sink.run(write_messages, batch, self.settings.batch_size)
            except Exception:
                self.stats.write_failures += 1
                raise
            for rows, seconds in written:
                self.stats.observe_write(rows, seconds)

        await retrying("sink_write_failed", attempt, self.stats.retrying, self.settings.db_retry_max_seconds)

    async def flush(self) -> None:
        await self.sink.run(FeatureSink.flush)
