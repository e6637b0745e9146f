"""The bare-Faust floor (``faust -A benchmarks.floor:app worker``): the least a Faust pipeline does here.

One agent per raw topic takes batches with ``noack_take`` (the pipeline's ingest batch size and wait) and
acks every event, nothing else: no parsing, no tables, no producing. Two ways to meet the broker:

- tuned (the default): the pipeline app's consumer settings (group timeouts, commit interval, fetch and poll
  sizes, fetch wait) and the broker workarounds of ``faust_compat``, so that the end-to-end backfill can be
  set against what Faust itself costs here with the same settings;
- ``FLOOR_FAUST_DEFAULTS=1``: Faust's (and aiokafka's) own consumer defaults, as a Faust user gets them: the
  app is given where the broker is (``broker``, ``broker_credentials``) and the pipeline's group session
  timeout and heartbeat interval, nothing else; ``faust_compat`` is not installed (its end-offset fix
  matters only to a table's restore, and the floor has no tables; its fetch wait and fetch response bound
  are Faust's 1.5 s and aiokafka's 50 MiB when not set). The session timeout is there for the local broker:
  it holds a fresh group's first join for about half the session timeout (Faust's 60 s: 30 s before the
  first message; Apache Kafka waits its 3 s initial rebalance delay), and the heartbeat interval with it
  (Faust's 3 s would equal that timeout).

Settings come from the environment like the pipeline's (``KAFKA_CONSUMER_GROUP`` should be a fresh group);
``FLOOR_MESSAGES`` is how many raw messages the topics hold: when that many distinct messages are acked,
the worker logs ``floor_done`` (the benchmark stops it then). ``floor_first_message`` is logged when the
first raw message reaches an agent, ``floor_progress`` every 2 s.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

import faust
from faust.streams import Stream
from faust.types import TP, EventT, StreamT

from solar_agents.observe import log
from solar_agents.runtime import faust_compat as compat
from solar_agents.settings import settings_or_exit

logger = log.get_logger("benchmarks.floor")


class Tally:
    """Distinct messages acked: within a partition Faust delivers in offset order, so a message at or below
    the highest offset seen is a redelivery (after a rebalance) and is not counted twice."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.highest: dict[TP, int] = {}
        self.distinct = 0
        self.events = 0
        self.by_topic: Counter[str] = Counter()
        self.first_message_at: float | None = None
        self.first_at: float | None = None
        self.done = False

    def add(self, event: EventT[bytes]) -> None:
        tp, offset = event.message.tp, event.message.offset
        if self.first_message_at is None:
            # Process start to here is the floor's start-to-first-message (the pipeline's first raw batch
            # reaches its ingest agent the same way).
            self.first_message_at = time.time()
            logger.info("floor_first_message", topic=tp.topic, at=self.first_message_at)
        self.events += 1
        if offset > self.highest.get(tp, -1):
            self.highest[tp] = offset
            self.distinct += 1
            self.by_topic[tp.topic] += 1

    def batch_done(self) -> None:
        now = time.time()
        if self.first_at is None:
            self.first_at = now
        if not self.done and self.expected and self.distinct >= self.expected:
            self.done = True
            logger.info(
                "floor_done",
                messages=self.distinct,
                events=self.events,
                by_topic=dict(sorted(self.by_topic.items())),
                first_message_at=self.first_message_at,
                first_batch_at=self.first_at,
                last_ack_at=now,
            )

    def report(self) -> None:
        logger.info("floor_progress", messages=self.distinct, events=self.events, expected=self.expected)


settings = settings_or_exit()
log.configure(settings.log_level)
FAUST_DEFAULTS = os.environ.get("FLOOR_FAUST_DEFAULTS", "") not in ("", "0", "false")
if FAUST_DEFAULTS:
    # Where the broker is, and the group timeouts this broker needs to let a fresh group start at once.
    consumer_options = {
        **settings.kafka.faust(),
        "broker_session_timeout": settings.broker_session_timeout_seconds,
        "broker_heartbeat_interval": settings.broker_heartbeat_interval_seconds,
    }
else:
    compat.install_broker(
        settings.kafka, settings.broker_fetch_max_wait_seconds, settings.consumer_max_fetch_response_bytes
    )
    consumer_options = settings.faust_consumer_options()
tally = Tally(int(os.environ.get("FLOOR_MESSAGES", "0")))

# As solar_agents.runtime.app builds its app, minus what the floor has no use for (tables, web, producer).
app = faust.App(
    settings.kafka_consumer_group,
    **consumer_options,
    store="memory://",
    datadir=str(settings.data_dir),
    web_enabled=False,
    logging_config=log.logging_config(settings.log_level),
    key_serializer="raw",
    value_serializer="raw",
    autodiscover=False,
)


def drain_agent() -> Callable[[StreamT[bytes]], Awaitable[None]]:
    """A fresh agent function per topic, as the pipeline has one ingest agent per raw topic."""

    async def drain(stream: StreamT[bytes]) -> None:
        batches = cast(Stream[bytes], stream).noack_take(
            settings.ingest_batch_size, within=settings.ingest_batch_max_wait_seconds
        )
        async for events in batches:
            for event in cast(list[EventT[bytes]], events):
                await stream.ack(event)
                tally.add(event)
            tally.batch_done()

    return drain


for _name, _topic in (
    ("floor_solar", settings.kafka_topic_solar),
    ("floor_weather", settings.kafka_topic_weather),
):
    app.agent(app.topic(_topic, key_serializer="raw", value_serializer="raw"), name=_name)(drain_agent())


async def _progress() -> None:
    tally.report()


app.timer(2.0, name="floor_progress")(_progress)
