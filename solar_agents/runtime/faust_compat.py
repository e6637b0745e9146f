"""Every use of Faust's (and aiokafka's) private internals, in one place, each with the reason; the largest
one, the raw topics' hand-over a fetched run at a time, has a module of its own (``faust_drain``).

1. End offsets taken from fetch responses, for the changelog restore; a fetch wait that can be set.

   Faust restores a table by reading its changelog up to the end offsets that ListOffsets answers. Some
   Kafka-protocol brokers (the local one used by the demo and the tests among them) answer ListOffsets after a
   batched write with the base offset of the last record batch + 1 instead of the last offset + 1: a worker
   whose local state was deleted then restores a stale table and writes wrong rows.

   The high-water mark in a fetch response is right on every broker, so the end offset of each partition is
   the larger of the ListOffsets answer and the high-water mark of a fetch at (that answer - 1). On Apache
   Kafka both are equal and this costs one small fetch per partition at restore time.

   Faust also fixes the consumer's fetch wait at 1.5 s. A broker that holds a waiting fetch until that time is
   up even when records arrive meanwhile (the local one does) adds up to 1.5 s per topic hop to the latency;
   ``BROKER_FETCH_MAX_WAIT_SECONDS`` sets it. On Apache Kafka, which answers as soon as records arrive, a
   shorter wait only means more requests while idle.

2. A producer flush that waits for the table changelog, before offsets are committed.

   Faust writes a table change to its changelog through a buffer that a background task drains, and flushes
   the producer before every offset commit so that a committed input has its changelog written. But the
   buffer's ``flush`` gives up as soon as 0.1 s pass without a message leaving it, and does not count the
   message the task is still handing over. Under load the commit then goes ahead with changelog records still
   in the buffer; if the process dies before they leave, the input is never read again and the changelog never
   gets them: a worker restored from the changelog alone (a lost disk, ``rebuild``, another worker taking the
   partitions over) misses those hours for good.

   This buffer counts what was put and what was handed to the Kafka producer, and ``flush`` waits until they
   are equal. Nothing depends on the broker: it is the same on Apache Kafka.

3. Readers of the consumer's offsets (no public accessor: lag, progress reports, the web view), and the
   event whose partition a table write goes to, for writes made after a batch of ``noack_take``.

4. Holding a partition's fetches without losing what was fetched of it.

   ``Consumer.pause_partitions`` takes the partition out of the set that the fetch loop also checks record
   by record while it hands a fetched batch on: the rest of that batch is skipped, though the position has
   moved past it, and the records are lost until a restart reads them again (the commit stops below them).
   The consumer's own flow control (``on_buffer_full`` / ``on_buffer_drop``, used when a stream's buffer
   is full) stops fetching more of a partition but hands on what was fetched: that is the one used here.

5. No hand-over during a seek, and a seek that moves every stream partition.

   At the end of every recovery Faust resumes the stream partitions, seeks them to the committed offsets
   (``perform_seek``, which resets the consumer's read offsets) and clears the streams' queues. Records
   fetched before the seek were meanwhile being handed on, and that went on after the reset: the next record
   beyond the reset offset registered the offsets in between as a gap (offsets the commit may skip, as for
   transaction markers); the records read again from the committed offset then counted as already read,
   and those the queue clear had removed were never processed. Here the flow stops for the seek, so the
   hand-over of an earlier fetch ends before the reset; what it did not hand on is fetched again from the
   new position. A partition without a committed offset (or at 0) is not moved by aiokafka's seek: it is
   sought to its beginning, where the group would start, so that it too is read again from a known place.

6. Records that the hand-over dropped, read again (``RangeReader``) and acked where the stream would.

   A pause, seek or rebalance in the middle of a hand-over can still drop a record while the later ones of
   its partition go on, and Faust's commit passes over it: a forward jump counts as a gap (as for
   transaction markers) and one missing record after the committed offset passes even without one. The
   agents see the jump (``offsets``); the records in it are read with a consumer of their own, outside the
   group, and once processed their offsets are acked in the consumer's own bookkeeping
   (``ack_offsets``), so the commit goes past them only then.

7. An agent's crashes and its actors' state (``on_agent_error``, ``agent_states``): the app passes its own
   error handler to every agent it makes, and the actors are the agent's private set; liveness needs both.

8. A stop that waits for the streams a bounded time (``install_consumer``). Faust waits until every message
   taken by a stream is acked (``Consumer.wait_empty``), without bound: a batch whose database write is being
   retried is never acked, and the stop never ended. What is not acked by the deadline is not committed.

9. No fixed second at start (``install_table_start``). Faust's table manager sleeps 1 s before it registers
   the tables' changelogs, so that tables declared late still make it; this app declares every table before
   the worker starts, and the second delayed every start, every backfill's first message included.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partialmethod
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust import streams as faust_streams
from faust.tables.manager import TableManager as _TableManager
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP, AppT, ConsumerT, EventT
from faust.types.tuples import FutureMessage

from solar_agents.connect.kafka import KafkaConnection
from solar_agents.connect.range_reader import RangeReader
from solar_agents.observe.log import get_logger

log = get_logger(__name__)


def probe_of(consumer: AIOKafkaConsumer, connection: KafkaConnection, **options: Any) -> AIOKafkaConsumer:
    """A consumer outside any group, connected by ``connection`` (as every client of the service is) and
    reading what ``consumer`` reads."""
    return AIOKafkaConsumer(
        **connection.aiokafka(),
        isolation_level=consumer._isolation_level,
        enable_auto_commit=False,
        group_id=None,
        fetch_max_wait_ms=100,
        **options,
    )


async def fetched_end_offsets(
    consumer: AIOKafkaConsumer,
    partitions: Iterable[TopicPartition],
    connection: KafkaConnection,
    wait: float = 10.0,
) -> dict[TopicPartition, int]:
    """End offsets of ``partitions``: max(ListOffsets, the high-water mark of a fetch)."""
    tps = list(partitions)
    if not tps:
        return {}
    listed = cast(Mapping[TopicPartition, int], await consumer.end_offsets(tps))
    # One record is enough: only the high-water mark is wanted.
    probe = probe_of(consumer, connection, max_partition_fetch_bytes=1024)
    await probe.start()
    try:
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, max(listed[tp] - 1, 0))
        ends: dict[TopicPartition, int] = {}
        deadline = asyncio.get_running_loop().time() + wait
        while len(ends) < len(tps) and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(timeout_ms=100, max_records=len(tps))
            for tp in tps:
                highwater = probe.highwater(tp)
                if highwater is not None and tp not in ends:
                    ends[tp] = max(listed[tp], highwater)
    finally:
        await probe.stop()
    for tp in tps:
        if tp not in ends:
            ends[tp] = listed[tp]  # no fetch answer in time: ListOffsets is all there is
        elif ends[tp] != listed[tp]:
            log.warning(
                "end_offset_corrected",
                topic=tp.topic,
                partition=tp.partition,
                listed=listed[tp],
                fetched=ends[tp],
            )
    return ends


_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


# What Faust and aiokafka use when nothing says otherwise: the defaults of the ``install`` functions.
FAUST_FETCH_MAX_WAIT_SECONDS = 1.5
AIOKAFKA_FETCH_MAX_BYTES = 50 * 1024**2
FAUST_PRODUCER_BUFFER_MESSAGES = 100


def install_broker(
    connection: KafkaConnection,
    fetch_max_wait_seconds: float = FAUST_FETCH_MAX_WAIT_SECONDS,
    fetch_max_bytes: int = AIOKAFKA_FETCH_MAX_BYTES,
) -> None:
    """Make Faust's consumer use fetched end offsets (restore, lag; probed over ``connection``), the given
    fetch wait and the given bound of a fetch response (Faust sets neither: 1.5 s and aiokafka's 50 MiB).
    Idempotent."""

    async def highwaters(self: AIOKafkaConsumerThread, partitions: list[Any]) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        if self.consumer.in_transaction:
            return {tp: consumer.last_stable_offset(tp) for tp in partitions}
        return await fetched_end_offsets(consumer, partitions, connection)

    AIOKafkaConsumerThread._highwaters = highwaters  # type: ignore[method-assign]

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> AIOKafkaConsumer:
        consumer = _create_worker_consumer(self, transport)
        # Both are read when the consumer starts, after this.
        consumer._fetch_max_wait_ms = round(fetch_max_wait_seconds * 1000)
        consumer._fetch_max_bytes = fetch_max_bytes
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


# --- 2. the draining producer buffer --------------------------------------------------------------------

_ProducerBuffer = faust_producer.ProducerBuffer


class DrainingProducerBuffer(_ProducerBuffer):
    """Faust's producer buffer whose ``flush`` returns only once everything put in it was sent on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.put_count = 0
        self.sent_count = 0

    def put(self, fut: FutureMessage) -> None:
        self.put_count += 1
        super().put(fut)

    async def _send_pending(self, fut: FutureMessage) -> None:
        try:
            await super()._send_pending(fut)
        finally:
            self.sent_count += 1

    async def flush(self) -> None:
        if cast(AppT, self.app).conf.producer_threaded:  # another thread drains it: Faust's own flush
            await super().flush()
            return
        while self.sent_count < self.put_count:
            if self.should_stop:  # the draining task has ended: send the rest from here
                await self._send_rest()
                return
            self.message_sent.clear()
            if self.sent_count >= self.put_count:
                break
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except TimeoutError:
                continue  # the broker is slow: keep waiting, the commit must not overtake the changelog

    async def on_stop(self) -> None:
        await self.flush()

    async def _send_rest(self) -> None:
        while True:
            try:
                fut = self.pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self._send_pending(fut)


def install_producer(max_messages: int = FAUST_PRODUCER_BUFFER_MESSAGES) -> None:
    """Make every Faust producer created from now on use the draining buffer, which holds the streams only
    while more than ``max_messages`` wait to be sent (Faust: 100). Idempotent."""
    DrainingProducerBuffer.max_messages = max_messages
    faust_producer.ProducerBuffer = DrainingProducerBuffer  # type: ignore[misc]


# --- 5. a seek without a hand-over --------------------------------------------------------------------

_Consumer = faust_consumer.Consumer
_perform_seek = _Consumer.perform_seek


async def _perform_seek_stopped(self: Any) -> None:
    active = self.flow_active
    if active:
        self.stop_flow()  # the hand-over loop ends at its next record
    try:
        await _perform_seek(self)
        committed = self._committed_offset
        changelogs = self.app.tables.changelog_topics
        for tp in self.assignment():
            if tp.topic not in changelogs and (committed.get(tp) or 0) <= 0:
                await self.seek(tp, 0)
    finally:
        if active:
            self.resume_flow()


FAUST_WAIT_EMPTY_SECONDS = None  # no bound


def install_consumer(wait_empty_seconds: float | None = FAUST_WAIT_EMPTY_SECONDS) -> None:
    """Make every Faust consumer seek with its flow stopped, and wait at most ``wait_empty_seconds`` at a
    stop for the streams' messages in flight to be acked. Idempotent."""
    _Consumer.perform_seek = _perform_seek_stopped  # type: ignore[method-assign]
    if wait_empty_seconds is not None:
        _Consumer.wait_empty = partialmethod(_wait_empty_bounded, wait_empty_seconds)  # type: ignore[assignment]


async def _wait_empty_bounded(self: Any, seconds: float) -> None:
    """Faust's ``Consumer.wait_empty`` with a deadline (its wait for an ack swallows a cancellation, so it
    cannot be bounded from outside): commit what is acked, wait for acks, give up at the deadline."""
    deadline = self.loop.time() + seconds
    while not self.should_stop and self._unacked_messages:
        if self.loop.time() >= deadline:
            log.warning("stop_left_work_unacked", messages=len(self._unacked_messages), seconds=seconds)
            break
        gc.collect()  # as Faust: messages nobody holds any more leave the weak set
        await self.commit()
        if not self._unacked_messages:
            break
        await self._wait_for_ack(timeout=1)
        self._clean_unacked_messages()
    await self.commit_and_end_transactions()


def install_table_start() -> None:
    """Start Faust's table manager without its fixed one-second sleep. Idempotent."""
    _TableManager.on_start = _table_manager_start  # type: ignore[method-assign]


async def _table_manager_start(self: Any) -> None:
    """``TableManager.on_start`` less its ``sleep(1.0)``: the tables are all declared before the start."""
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


def install(
    connection: KafkaConnection,
    fetch_max_wait_seconds: float = FAUST_FETCH_MAX_WAIT_SECONDS,
    fetch_max_bytes: int = AIOKAFKA_FETCH_MAX_BYTES,
    producer_buffer_messages: int = FAUST_PRODUCER_BUFFER_MESSAGES,
    wait_empty_seconds: float | None = FAUST_WAIT_EMPTY_SECONDS,
) -> None:
    """The workarounds above; idempotent."""
    install_broker(connection, fetch_max_wait_seconds, fetch_max_bytes)
    install_producer(producer_buffer_messages)
    install_consumer(wait_empty_seconds)
    install_table_start()


# --- 3. offsets and the current event -------------------------------------------------------------------


def committed_offsets(consumer: ConsumerT) -> Mapping[TP, int | None]:
    """The offset last committed per partition (the next one the group would read)."""
    return cast(Mapping[TP, "int | None"], getattr(consumer, "_committed_offset", {}))


def read_offsets(consumer: ConsumerT) -> Mapping[TP, int | None]:
    """The offset last handed to a stream per partition; None or absent while nothing is in flight."""
    return cast(Mapping[TP, "int | None"], getattr(consumer, "_read_offset", {}))


def hold_fetches(consumer: ConsumerT, tp: TP) -> None:
    """Fetch no more of ``tp`` until ``release_fetches``; what was fetched of it is still handed on.

    Faust may release it first (its own flow control, a rebalance): holding is a hint, never needed for
    correctness.
    """
    consumer.on_buffer_full(tp)


def release_fetches(consumer: ConsumerT, tp: TP) -> None:
    """Fetch ``tp`` again after ``hold_fetches``."""
    consumer.on_buffer_drop(tp)


@contextmanager
def writing_in(event: EventT[Any]) -> Iterator[None]:
    """Table writes inside go to the changelog partition of ``event``.

    Faust picks a table write's partition from the current event of the task; after a batch of
    ``noack_take`` that is unset, or the last event of any partition.
    """
    token = faust_streams._current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)


# --- 6. records the hand-over dropped ---------------------------------------------------------------------


def range_reader(app: AppT, connection: KafkaConnection) -> RangeReader:
    """A ``RangeReader`` over ``connection``, reading as the app's consumer does (asked for at the first
    read, when it runs)."""

    def make_probe() -> AIOKafkaConsumer:
        thread = cast(Any, app.consumer)._thread
        return probe_of(thread._ensure_consumer(), connection, auto_offset_reset="earliest")

    return RangeReader(make_probe)


def ack_offsets(consumer: ConsumerT, tp: TP, offsets: Iterable[int]) -> None:
    """Count ``offsets`` of ``tp`` as processed, as ``Consumer.ack`` counts a message's: the records read
    again by a ``RangeReader`` have no message of the consumer's to ack."""
    c = cast(Any, consumer)
    committed = c._committed_offset[tp]
    index = c._acked_index[tp]
    acked = c._acked[tp]
    for offset in offsets:
        if (committed is None or offset >= committed) and offset not in index:
            index.add(offset)
            acked.append(offset)


# --- 7. agents: their crashes and their state ---------------------------------------------------------

AgentErrorHandler = Callable[[Any, BaseException], Awaitable[None]]


def on_agent_error(agent: Any, handler: AgentErrorHandler) -> None:
    """Call ``handler(agent, exc)`` whenever an actor of ``agent`` raises (before its supervisor restarts it),
    besides Faust's own handler (the app passes its own ``on_error`` to every agent it makes)."""
    faust_handler = agent._on_error

    async def both(agent: Any, exc: BaseException) -> None:
        await handler(agent, exc)
        if faust_handler is not None:
            await faust_handler(agent, exc)

    agent._on_error = both


def agent_states(app: AppT) -> dict[str, str]:
    """Per agent: ``running`` (an actor alive), ``down`` (every actor crashed or ended, none restarted yet)
    or ``starting`` (no actor yet)."""

    def alive(actor: Any) -> bool:
        return not actor.crashed and actor.actor_task is not None and not actor.actor_task.done()

    states = {}
    for name, agent in app.agents.items():
        actors = list(getattr(agent, "_actors", ()))
        states[name] = "starting" if not actors else "running" if any(map(alive, actors)) else "down"
    return states
