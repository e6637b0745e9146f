"""The ingest agents (one per raw topic): raw messages -> records messages per records partition, bad ones
aside.

Each batch is parsed in the ingest helper process (``steps.ingest.ingest_messages``) while the batch before
is sent on and acked here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial

import faust
from faust.types import StreamT

from solar_agents.core.messages import MessageBatch
from solar_agents.core.read_progress import Feed
from solar_agents.core.records import RegionResolver
from solar_agents.core.wire import REGIONS_KEY
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import (
    Applying,
    HoleFiller,
    Taken,
    batches,
    fetched_batches,
    overlapped,
    retrying,
)
from solar_agents.runtime.deadletters import DeadLetters
from solar_agents.runtime.faust_drain import FetchedFeed
from solar_agents.runtime.helpers import step_helper
from solar_agents.runtime.reading import ReadTracker
from solar_agents.settings import Settings
from solar_agents.steps.ingest import RECORDS_PER_MESSAGE, IngestedMessages, ingest_messages

log = get_logger(__name__)


class IngestAgent:
    """Both raw topics' agents: the parse helper, the read tracker and the dead letters they share."""

    def __init__(
        self,
        settings: Settings,
        records_topic: faust.TopicT,
        reading: ReadTracker,
        dead_letters: DeadLetters,
        holes: HoleFiller,
        stats: Stats,
        feeds: Mapping[str, FetchedFeed],
    ) -> None:
        self.settings = settings
        self.records_topic = records_topic
        self.reading = reading
        self.dead_letters = dead_letters
        self.holes = holes
        self.stats = stats
        self.feeds = feeds  # the raw topics' records, a fetched run at a time (``faust_drain``)
        resolver_args = (dict(settings.region_locations), settings.default_region)
        self.parser = step_helper("ingest", RegionResolver, resolver_args, settings)
        self._first_seen: set[str] = set()

    async def solar(self, stream: StreamT[bytes]) -> None:
        await self._run(stream, self.settings.kafka_topic_solar, Feed.SOLAR)

    async def weather(self, stream: StreamT[bytes]) -> None:
        await self._run(stream, self.settings.kafka_topic_weather, Feed.WEATHER)

    async def _run(self, stream: StreamT[bytes], topic: str, feed: Feed) -> None:
        size, within = self.settings.ingest_batch_size, self.settings.ingest_batch_max_wait_seconds
        takes = (
            batches(stream, size, within, self.holes)
            if (fetched := self.feeds.get(topic)) is None
            else fetched_batches(stream, fetched, size, within, self.holes)
        )
        await overlapped(
            takes,
            partial(self._parse, topic, feed),
            partial(self._apply, stream, topic, feed),
            Applying(),
        )

    async def _parse(self, topic: str, feed: Feed, taken: Taken) -> IngestedMessages:
        """A raw batch validated and encoded per records partition, in the ingest helper."""
        if topic not in self._first_seen:  # how long the worker took to start reading: one line per topic
            self._first_seen.add(topic)
            log.info("first_raw_message", topic=topic, at=round(time.time(), 3))
        raw = MessageBatch.of(topic, taken.messages)
        parsed: list[IngestedMessages] = []

        async def parse() -> None:
            solar = feed is Feed.SOLAR
            partitions = self.settings.topic_partitions
            parsed.append(await self.parser.run(ingest_messages, raw, solar, RECORDS_PER_MESSAGE, partitions))

        # Only a helper that died fails: bad input is a dead letter.
        await retrying("ingest_failed", parse, self.stats.retrying)
        return parsed[0]

    async def _apply(
        self, stream: StreamT[bytes], topic: str, feed: Feed, taken: Taken, batch: IngestedMessages
    ) -> None:
        """Send a parsed batch's dead letters aside and its records on, a message or a few per records
        partition; then ack.

        Offsets are committed only after the producer has delivered what was sent here (Faust flushes the
        producer before every commit), so a crash re-reads the batch: at least once, never lost.
        """
        if batch.rejected:
            at = {(message.partition, message.offset): message for message in taken.messages}
            for partition, offset, reason in batch.rejected:
                await self.dead_letters.send(at[partition, offset], reason)
        # Before the records: their partitions are not read to the end yet. The align agent must not apply
        # them under an older report that says "caught up".
        reading = self.reading.reading(topic, batch)
        await self.reading.report(topic, feed, reading=reading)
        for partition, value in batch.messages:
            send = partial(self.records_topic.send, key=REGIONS_KEY, value=value, partition=partition)
            # Retried, not raised: a raise here would end the agent, the batch unread.
            await retrying("records_send_failed", send, self.stats.retrying)
        # Progress counts a batch only once its records are on their way (a report may go out meanwhile).
        self.reading.read(topic, batch)
        await self.reading.report(topic, feed)
        self.reading.hold_ahead()
        self.stats.ingested[topic] += batch.count
        await taken.ack(stream)
