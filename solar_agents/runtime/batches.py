"""How the agents take their input: batches acked only after their work, holes filled, retries that never
give up on a batch, and a batch computed in a helper while the one before is applied.

Shared by the three agents (``runtime.ingest``, ``runtime.align``, ``runtime.write``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from faust import Stream
from faust.types import TP, ConsumerT, EventT, StreamT

from solar_agents.connect.range_reader import RangeReader
from solar_agents.core.messages import Message, MessageLike
from solar_agents.core.offsets import Continuity, Hole, fill
from solar_agents.errors import Refused
from solar_agents.observe.health import Failing
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.runtime.faust_compat import ack_offsets, committed_offsets
from solar_agents.runtime.faust_drain import Fetched, FetchedFeed, ack_fetched

log = get_logger(__name__)
Event = EventT[bytes]
T = TypeVar("T")


@dataclass(slots=True)
class Taken:
    """A batch of one stream: its messages in order, with any that the hand-over dropped read again and put
    back (``offsets``), and what to ack once its work is done: the stream's events, or the runs a raw topic's
    feed handed over whole (``faust_drain``)."""

    messages: list[MessageLike]
    events: list[Event]
    read_again: dict[int, list[int]]  # per partition: offsets read again, acked with the events
    fetched: list[Fetched] = field(default_factory=list)

    def last_events(self) -> dict[int, Event]:
        """The last event of each partition (table writes go to its changelog partition)."""
        return {event.message.partition: event for event in self.events}

    async def ack(self, stream: StreamT[bytes]) -> None:
        for event in self.events:
            await stream.ack(event)
        consumer = stream.app.consumer
        if self.fetched:
            ack_fetched(consumer, self.fetched)
        if self.read_again:
            topic = self.messages[0].topic
            for partition, offsets in self.read_again.items():
                ack_offsets(consumer, TP(topic, partition), offsets)


async def batches(
    stream: StreamT[bytes], size: int, within: float, holes: HoleFiller
) -> AsyncIterator[Taken]:
    """Batches of events that the caller acks after their work is done, holes filled (``HoleFiller``).

    ``take()`` would ack a batch even when the loop body raised; ``noack_take`` yields the events unacked.
    But when it ends (the worker stops) it turns the stream's acks back on, and its background drainer then
    acks every event still arriving, unprocessed: a graceful stop committed input nobody had read. So acks
    stay off once the batches end.
    """
    takes = cast(Stream[bytes], stream).noack_take(size, within=within)
    continuity = Continuity()
    consumer = stream.app.consumer
    try:
        async for taken in takes:
            events = cast(list[Event], taken)
            messages, again = await holes.fill(consumer, [event.message for event in events], continuity)
            yield Taken(messages, events, again)
    finally:
        await takes.aclose()
        stream.enable_acks = False


async def fetched_batches(
    stream: StreamT[bytes], feed: FetchedFeed, size: int, within: float, holes: HoleFiller
) -> AsyncIterator[Taken]:
    """Batches of a raw topic's runs, handed over whole by the consumer (``faust_drain``), holes filled; the
    caller acks them after their work is done. ``stream`` is the agent's: iterating its channel subscribes
    the topic, as a stream's first read would."""
    feed.subscribe(cast(Any, stream.channel))
    app = stream.app
    consumer = app.consumer
    continuity = Continuity()

    def generation() -> int:
        return app.consumer_generation_id

    while True:
        runs = await feed.take(size, within, generation)
        if runs:
            records = [record for run in runs for record in run.records]
            messages, again = await holes.fill(consumer, records, continuity)
            yield Taken(messages, [], again, runs)


@dataclass(frozen=True, slots=True)
class Linger:
    """How long a batch waits for more input before it is worked on: while takes keep coming, each within
    ``quiet`` seconds of the one before, for at most ``seconds``, up to ``limit`` messages."""

    seconds: float
    quiet: float
    limit: int


async def gathered(
    takes: AsyncIterator[Taken],
    limit: int,
    generation: Callable[[], int],
    linger: Callable[[], Linger | None] = lambda: None,
) -> AsyncIterator[Taken]:
    """``takes`` read on in the background while the caller works on a batch, and what arrived meanwhile
    joined into its next batch, up to ``limit`` messages (past it the reading waits). Batches read before a
    rebalance (an earlier ``generation``) are dropped unacked, as Faust drops such events: the consumer has
    sought back to the committed offsets, so they come again.

    A stream's ``noack_take`` stops reading while the batch it yielded is worked on, so a batch is what
    arrives within ``within`` after that: at 5,000 regions and a busy align helper, one or two records a
    region, each region's fixed cost paid again for every 0.25 s of input. Joined, a batch grows with the
    helper's backlog and shrinks back when it keeps up (docs/DESIGN.md, "Align batches joined").

    ``linger()``, asked before each batch, may hold it back for more input (``Linger``): the caller's to
    decide when the cost of a batch is mostly fixed, and a larger one is cheaper per message.
    """
    ready: deque[tuple[int, Taken]] = deque()  # (generation when read, batch)
    held = 0  # messages in ``ready``
    bound = limit  # what the reading may hold: ``limit``, or a lingering batch's
    arrived, room = asyncio.Event(), asyncio.Event()
    failed: list[BaseException] = []

    async def read() -> None:
        nonlocal held
        try:
            async for taken in takes:
                ready.append((generation(), taken))
                held += len(taken.messages)
                arrived.set()
                while held >= bound:
                    room.clear()
                    await room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the caller's to raise
            failed.append(exc)
        finally:
            arrived.set()

    reader = asyncio.ensure_future(read())

    def enough() -> bool:  # a lingering batch is as large as it may be, or no more will come
        return held >= bound or reader.done()

    try:
        while True:
            current = generation()
            while ready and ready[0][0] != current:
                held -= len(ready.popleft()[1].messages)
                room.set()
            if not ready:
                if failed:
                    raise failed[0]
                if reader.done():
                    return
                arrived.clear()
                await arrived.wait()
                continue
            most = limit
            wait = linger()
            if wait is not None:
                most = bound = max(limit, wait.limit)
                room.set()
                await _linger(wait, arrived, enough)
                bound = limit
                current = generation()
                while ready and ready[0][0] != current:  # a rebalance while it waited
                    held -= len(ready.popleft()[1].messages)
                if not ready:
                    continue
            parts = [ready.popleft()[1]]
            count = len(parts[0].messages)
            while ready and ready[0][0] == current and count + len(ready[0][1].messages) <= most:
                parts.append(ready.popleft()[1])
                count += len(parts[-1].messages)
            held -= count
            room.set()
            yield join(parts)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _linger(wait: Linger, arrived: asyncio.Event, enough: Callable[[], bool]) -> None:
    """Wait while takes keep arriving (``arrived``), until ``enough()`` or ``wait.seconds`` have passed."""
    deadline = time.monotonic() + wait.seconds
    while not enough():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), min(left, wait.quiet))
        except TimeoutError:  # the input paused: what came is the batch
            return


def join(parts: list[Taken]) -> Taken:
    """Consecutive batches of one stream as one."""
    if len(parts) == 1:
        return parts[0]
    again: dict[int, list[int]] = defaultdict(list)
    for part in parts:
        for partition, offsets in part.read_again.items():
            again[partition].extend(offsets)
    return Taken(
        [m for part in parts for m in part.messages],
        [e for part in parts for e in part.events],
        dict(again),
        [f for part in parts for f in part.fetched],
    )


class HoleFiller:
    """Puts back the records a hand-over dropped (``offsets``): read again, in front of the record after."""

    def __init__(self, reader: RangeReader, stats: Stats) -> None:
        self.reader = reader
        self.stats = stats

    async def fill(
        self, consumer: ConsumerT, messages: list[MessageLike], continuity: Continuity
    ) -> tuple[list[MessageLike], dict[int, list[int]]]:
        """``messages`` with the records the hand-over dropped before them put back, and the offsets read
        again per partition."""
        if not messages:
            return messages, {}
        topic = messages[0].topic
        committed = committed_offsets(consumer)
        holes = continuity.holes(messages, lambda partition: committed.get(TP(topic, partition)))
        if not holes:
            return messages, {}
        found: dict[Hole, list[MessageLike]] = {}
        again: dict[int, list[int]] = defaultdict(list)
        for hole in holes:
            found[hole] = read = await read_again(
                self.reader, TP(topic, hole.partition), hole.start, hole.end, self.stats.retrying
            )
            again[hole.partition].extend(m.offset for m in read)
            absent = hole.end - hole.start - len(read)
            self.stats.records_read_again += len(read)
            self.stats.offsets_absent += absent
            fields = {"topic": topic, "partition": hole.partition, "start": hole.start, "end": hole.end}
            if read:  # records the hand-over dropped: without this, lost
                log.warning("records_read_again", **fields, records=len(read))
            else:  # transaction markers, a compacted or expired range: nothing to read
                log.debug("offsets_absent", **fields, offsets=absent)
        return fill(messages, found), dict(again)


async def read_again(
    reader: RangeReader, tp: TP, start: int, end: int, under_way: dict[str, Failing]
) -> list[MessageLike]:
    """The records at offsets ``start`` to ``end`` (exclusive) of ``tp``, read outside the group; retried
    until the broker answers."""
    read: list[MessageLike] = []

    async def attempt() -> None:
        records = await reader.read(tp, start, end)
        read[:] = [Message(tp.topic, r.partition, r.offset, r.key, r.value) for r in records]

    await retrying("read_again_failed", attempt, under_way)
    return read


class Applying:
    """The batch before, being written, sent and acked on the event loop while its helper computes the next:
    one batch applied at a time, in order, and never two computed ahead.

    A batch whose application fails makes its agent fail at once (the agent's task is cancelled and raises
    that failure), not at its next batch, which may be long in coming: its supervisor restarts it, and the
    worker's liveness counts the crash."""

    def __init__(self) -> None:
        self._task: asyncio.Future[None] | None = None
        self._agent: asyncio.Task[object] | None = None
        self._failed: BaseException | None = None  # work of the agent done outside its batches (``fail``)

    async def settled(self) -> None:
        """Wait until the batch before is applied (its failure is the agent's)."""
        if self._task is not None:
            task, self._task = self._task, None
            await task

    def busy(self) -> bool:
        """A batch is being applied."""
        return self._task is not None and not self._task.done()

    async def finished(self) -> None:
        """Wait until the batch before is applied or has failed, leaving its outcome to the agent."""
        if self._task is not None:
            await asyncio.wait([self._task])

    async def start(self, work: Awaitable[None]) -> None:
        await self.settled()
        self._agent = asyncio.current_task()
        self._task = asyncio.ensure_future(work)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        # Not awaited by the agent (``settled`` takes the task first): tell the agent now.
        if task is self._task and self.failure() is not None and self._agent is not None:
            self._agent.cancel()

    def fail(self, error: BaseException) -> None:
        """Work of the agent done beside its batches (a flush on a timer) failed: the agent fails with it."""
        if self._failed is None:
            self._failed = error
            if self._agent is not None:
                self._agent.cancel()

    def failure(self) -> BaseException | None:
        """The failure of the batch being applied, once it failed."""
        if self._failed is not None:
            return self._failed
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def cancel(self) -> None:
        """On stop: a batch not applied is not acked either, and is read again at the next start."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Around an agent's loop: a failed batch ends it with that failure; at the end, a batch not
        applied is cancelled."""
        self._agent = asyncio.current_task()
        try:
            yield
        except asyncio.CancelledError:
            failure = self.failure()
            if failure is None:  # a stop or a rebalance
                raise
            self._failed = None  # raised once: a restarted agent starts clean
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the cancellation only carried the failure here
            raise failure from None
        finally:
            self.cancel()


async def overlapped(
    takes: AsyncIterator[Taken],
    compute: Callable[[Taken], Awaitable[T]],
    apply: Callable[[Taken, T], Awaitable[None]],
    applying: Applying,
) -> None:
    """Batches (``batches``, ``fetched_batches``): each ``compute``d (in a helper) while the batch before is
    ``apply``ed here."""
    async with applying.running():
        async for taken in takes:
            result = await compute(taken)
            await applying.start(apply(taken, result))


async def retrying(
    event: str,
    attempt: Callable[[], Awaitable[object]],
    under_way: dict[str, Failing],
    max_delay: float = 10.0,
) -> None:
    """Run ``attempt`` until it succeeds, backing off; a failure is logged, never raised, so the agent
    lives on and its unacked input is neither lost nor skipped. A stop cancels it: the input stays
    unacked. ``Refused`` is the exception: no retry mends it. While it fails, ``under_way[event]`` says
    since when and why (``Stats.retrying``, for /healthz and a stop that runs out of time)."""
    delay = 0.2
    failures = 0
    since = time.monotonic()
    try:
        while True:
            try:
                await attempt()
            except (asyncio.CancelledError, Refused):
                raise
            except Exception as exc:
                failures += 1
                error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
                under_way[event] = Failing(since, failures, error)
                log.warning(event, attempt=failures, error=error, retry_in=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)
                continue
            if failures:
                log.info(event.replace("_failed", "_recovered"), attempts=failures + 1)
            return
    finally:
        if failures:
            under_way.pop(event, None)
