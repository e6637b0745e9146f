"""The raw topics handed to their agents a fetched run at a time, not a message at a time.

Faust hands every fetched record to its stream on its own: a ``Message`` and an ``Event`` object, four tasks
(``Service.wait_first`` around the delivery), a lock, the flow-control and producer-buffer checks, a queue put
and get, and the monitor's bookkeeping on the way in and out. For a raw message that is several times the
work of parsing it, and the bare Faust agent spends most of its CPU there. The ingest agents need none of it:
they take batches of plain records (``core.messages.MessageLike``) and ack them as a whole.

So the consumer's hand-over loop (``Consumer._drain_messages``, replaced by ``install_drain``) gives each
partition's run of a fetch to a ``FetchedFeed`` whole, for the topics that have one; every other topic goes
message by message through Faust's conductor as before. What Faust does per message is done once per run:

- the run joins the consumer's unacked messages (``Fetched`` answers what Faust reads of one), so a rebalance
  or a stop waits for it as for a message, and the agent's ack of its offsets lets the commit pass them;
- the read offset, the gaps (transaction markers) and the commit-every count are kept as Faust keeps them;
- flow control and the producer buffer hold the hand-over as they hold a delivery; a run whose hand-over a
  suspension cut short is dropped, as Faust drops the message, and read again (``batches.HoleFiller``);
- the feed is a queue that Faust's flow control clears at a rebalance, as it clears the streams' queues;
- the monitor's inbound time of the partition is set, so Faust's slow-stream check sees it processed;
- the sensors are told of the run as a whole (``on_run_in``) where they can take it, not per message:
  Faust's own monitor no longer counts the raw messages one by one, the service's metrics do
  (``observe.metrics.FaustSensor``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.transport import consumer as faust_consumer
from faust.types import TP, AppT, ChannelT, ConsumerT
from mode.utils.futures import notify

from solar_agents.core.messages import MessageLike
from solar_agents.observe.log import get_logger
from solar_agents.runtime.faust_compat import ack_offsets

log = get_logger(__name__)

_Consumer = faust_consumer.Consumer
_faust_drain = _Consumer._drain_messages
FETCHING = faust_consumer.CONSUMER_FETCHING


@dataclass(slots=True, eq=False, weakref_slot=True)
class Fetched:
    """One partition's run of records from one fetch, in the consumer's unacked messages until acked.

    ``acked`` and ``refcount`` are what Faust's ``wait_empty`` reads of a message."""

    tp: TP
    records: Sequence[MessageLike]
    generation: int
    acked: bool = False
    refcount: int = 0


@dataclass(eq=False)
class FetchedFeed:
    """One raw topic's fetched runs, waiting for its agent.

    Past ``max_records`` waiting, the partition of the run put last is fetched no more (``hold``) until
    half of them are taken (``release``), as Faust holds a partition whose stream buffer fills; the
    hand-over itself waits only while twice as many wait."""

    max_records: int
    hold: Callable[[TP], None]
    release: Callable[[TP], None]
    runs: deque[Fetched] = field(default_factory=deque)
    waiting: int = 0  # records in ``runs``
    held: set[TP] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _channel: ChannelT[Any] | None = None

    def subscribe(self, channel: ChannelT[Any]) -> None:
        """Subscribe the topic of the agent's ``channel`` (Faust subscribes a topic once a stream iterates
        it), once: an agent restarted after a crash keeps the subscription."""
        if self._channel is None:
            self._channel = aiter(channel)

    def __hash__(self) -> int:  # Faust's flow control keeps its queues in a weak set
        return id(self)

    async def put(self, run: Fetched) -> None:
        while self.waiting >= 2 * self.max_records:
            self._changed.clear()
            await self._changed.wait()
        self.runs.append(run)
        self.waiting += len(run.records)
        if self.waiting >= self.max_records and run.tp not in self.held:
            self.held.add(run.tp)
            self.hold(run.tp)
        self._changed.set()

    def _taken(self) -> None:
        if self.held and self.waiting <= self.max_records // 2:
            for tp in self.held:
                self.release(tp)
            self.held.clear()
        self._changed.set()

    async def take(self, size: int, within: float, generation: Callable[[], int]) -> list[Fetched]:
        """Runs of about ``size`` records (whole runs), or fewer once ``within`` seconds passed since the
        first arrived; runs fetched before the last rebalance are dropped (their partitions were sought
        back)."""
        loop = asyncio.get_running_loop()
        while not self.runs:
            self._changed.clear()
            await self._changed.wait()
        deadline = loop.time() + within
        while self.waiting < size and (left := deadline - loop.time()) > 0:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                break
        taken: list[Fetched] = []
        count = 0
        current = generation()
        while self.runs and (not taken or count + len(self.runs[0].records) <= size):
            run = self.runs.popleft()
            self.waiting -= len(run.records)
            if run.generation == current:
                taken.append(run)
                count += len(run.records)
        self._taken()
        return taken

    def clear(self) -> None:
        """At a rebalance (Faust's ``flow_control.clear``): what waits is read again from the committed
        offsets."""
        self.runs.clear()
        self.waiting = 0
        self._taken()


class App(faust.App):
    """Faust's app, with the feeds of the topics whose records go to their agents a run at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched_feeds: dict[str, FetchedFeed] = {}

    def fetched_feed(self, topic: str, max_records: int) -> FetchedFeed:
        """The feed of ``topic``, cleared with the streams' queues at a rebalance."""
        # The consumer's own flow control, as for a full stream buffer (the consumer is made at the start).
        feed = FetchedFeed(
            max_records,
            lambda tp: self.consumer.on_buffer_full(tp),
            lambda tp: self.consumer.on_buffer_drop(tp),
        )
        self.fetched_feeds[topic] = feed
        self.flow_control.manage_queue(cast(Any, feed))
        return feed


def ack_fetched(consumer: ConsumerT, runs: Sequence[Fetched]) -> None:
    """Count the runs' offsets as processed, as ``Consumer.ack`` counts a message's."""
    c = cast(Any, consumer)
    unacked = c._unacked_messages
    for run in runs:
        if run.acked:
            continue
        run.acked = True
        unacked.discard(run)
        ack_offsets(consumer, run.tp, (record.offset for record in run.records))
        c._n_acked += len(run.records)
    notify(c._waiting_for_ack)


def install_drain() -> None:
    """Make every Faust consumer hand fetched runs of the topics with a feed (``App.fetched_feed``) whole.
    Idempotent."""
    _Consumer._drain_messages = _drain  # type: ignore[method-assign]


async def _drain(self: Any, fetcher: Any) -> None:
    """Faust's ``Consumer._drain_messages``, with a run at a time for the topics with a feed."""
    feeds: dict[str, FetchedFeed] = getattr(self.app, "fetched_feeds", {})
    if not feeds:
        await _faust_drain(self, fetcher)
        return
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            self.diag.set_flag(FETCHING)
            records, active = await self._wait_next_records(1.0)
            await self.sleep(0)  # as Faust: a fetch answered at once must not hold the loop
            if records and not self.should_stop:
                if self.flow_active:
                    await _hand_over(self, records, active, feeds)
                else:  # as Faust's getmany: the flow stopped while fetching
                    await self.perform_seek()
            self.diag.unset_flag(FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            return
        raise
    except Exception as exc:  # as Faust: the fetcher's end is logged, then its supervisor decides
        log.exception("drain_failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        self.diag.unset_flag(FETCHING)


async def _hand_over(
    self: Any, records: dict[TP, list[Any]], active: set[TP] | None, feeds: dict[str, FetchedFeed]
) -> None:
    app: AppT = self.app
    generation = app.consumer_generation_id
    buffered = self._buffered_partitions
    for tp, run in records.items():
        if not self.flow_active or app.consumer_generation_id != generation:
            return  # as Faust's getmany: the rest is fetched again after the seek
        if not (active is None or tp in active or tp in buffered):
            continue
        app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        feed = feeds.get(tp.topic)
        if feed is None:
            await _each(self, tp, run, generation)
        else:
            await _whole(self, TP(tp.topic, tp.partition), run, feed, generation)


async def _whole(self: Any, tp: TP, run: list[Any], feed: FetchedFeed, generation: int) -> None:
    """One partition's run to its feed, with Faust's per-message bookkeeping done once."""
    read = self._read_offset[tp]
    if read is not None and run[0].offset < read:
        run = [record for record in run if record.offset >= read]
        if not run:
            return
    if self.app.topics.acks_enabled_for(tp.topic):
        await _gaps(self, tp, read, run)
    await _commit_every(self)
    fetched = Fetched(tp, run, generation)
    self._unacked_messages.add(fetched)
    self.app.monitor.stream_inbound_time[tp] = time.monotonic()
    for sensor in self.app.sensors:  # a sensor that counts runs, not messages, is told of the run
        on_run_in = getattr(sensor, "on_run_in", None)
        if on_run_in is not None:
            on_run_in(tp, len(run))
    await _held(self, _put(self.app, feed, fetched))
    self._read_offset[tp] = run[-1].offset


async def _put(app: AppT, feed: FetchedFeed, fetched: Fetched) -> None:
    await app.flow_control.acquire()
    await app.producer.buffer.wait_until_ebb()
    await feed.put(fetched)


async def _gaps(self: Any, tp: TP, read: int | None, run: list[Any]) -> None:
    """Offsets the run skips (transaction markers, compaction): gaps the commit may pass, as Faust adds."""
    contiguous = run[-1].offset - run[0].offset == len(run) - 1
    if contiguous and (read is None or run[0].offset - read <= 1):
        return
    before = read
    for record in run:
        if before is not None and record.offset - before > 1:
            # The offsets in between alone (Faust's own adds the record's offset too, which then stands
            # twice among the acked and splits a commit in two).
            await self._add_gap(tp, before + 1, record.offset - 1)
        before = record.offset


async def _commit_every(self: Any) -> None:
    every = self._commit_every
    if every is not None and self._n_acked >= every:
        self._n_acked = 0
        await self.commit()


async def _held(self: Any, delivery: Awaitable[None]) -> None:
    """``delivery``, unless the flow is suspended first (Faust's ``wait_first`` of each message)."""
    await self.wait_first(delivery, self.suspend_flow.wait())


async def _each(self: Any, tp: TP, run: list[Any], generation: int) -> None:
    """Faust's own hand-over of one partition's run, message by message through the conductor."""
    callback = self.callback
    read_offsets = self._read_offset
    to_message = self._to_message
    acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
    for count, record in enumerate(run, 1):
        if not self.flow_active or self.app.consumer_generation_id != generation:
            return
        if count % 100 == 0:
            await asyncio.sleep(0)
        offset = record.offset
        read = read_offsets[tp]
        if read is None or offset >= read:
            if offset - (read or 0) > 1 and read and acks_enabled:
                await self._add_gap(tp, read + 1, offset)
            await _commit_every(self)
            await _held(self, callback(to_message(tp, record)))
            read_offsets[tp] = offset
