"""Batches applied beside their agent: a failed one ends the agent at once, not at its next batch; batches
taken while the one before is worked on are joined, in order and within their bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from solar_agents.core.messages import Message
from solar_agents.runtime.align import SPARSE_BATCH_MAX_MESSAGES, SPARSE_RECORDS_PER_REGION, sparse_linger
from solar_agents.runtime.batches import Applying, Linger, Taken, gathered
from solar_agents.steps.align import AlignedMessages

T = TypeVar("T")


async def _fails() -> None:
    await asyncio.sleep(0.01)
    raise OSError(28, "No space left on device")


async def _agent(applying: Applying, next_batch: asyncio.Event) -> None:
    async with applying.running():
        await applying.start(_fails())
        await next_batch.wait()  # the next batch, which does not come


def test_a_failed_batch_ends_its_agent_at_once() -> None:
    async def scenario() -> None:
        task = asyncio.ensure_future(_agent(Applying(), asyncio.Event()))
        await asyncio.wait_for(asyncio.shield(task), 5)

    with pytest.raises(OSError, match="No space left on device"):
        asyncio.run(scenario())


def test_a_stop_is_a_stop_and_cancels_the_batch_being_applied() -> None:
    async def scenario() -> tuple[bool, bool]:
        applying = Applying()
        slow = asyncio.ensure_future(asyncio.sleep(10))
        next_batch = asyncio.Event()

        async def agent() -> None:
            async with applying.running():
                await applying.start(slow)
                await next_batch.wait()

        task = asyncio.ensure_future(agent())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        return task.cancelled(), slow.cancelled()

    assert asyncio.run(scenario()) == (True, True)


def _taken(first: int, count: int) -> Taken:
    messages = [Message("records", first % 2, first + i, b"k", b"v") for i in range(count)]
    return Taken(list(messages), [], {first % 2: [first]} if first % 3 == 0 else {})


async def _takes(sizes: list[int], taken: list[int], pace: float) -> AsyncIterator[Taken]:
    """Batches of ``sizes`` messages with consecutive offsets, one every ``pace`` s; ``taken`` counts them."""
    first = 0
    for size in sizes:
        await asyncio.sleep(pace)
        taken.append(size)
        yield _taken(first, size)
        first += size


def test_batches_taken_while_one_is_worked_on_are_joined_in_order_within_the_bound() -> None:
    sizes = [3, 5, 2, 7, 1, 4, 6, 2, 8, 3] * 3

    async def scenario(work: float) -> tuple[list[Taken], list[int]]:
        taken: list[int] = []
        out: list[Taken] = []
        async for batch in gathered(_takes(sizes, taken, 0.002), 12, lambda: 1):
            out.append(batch)
            await asyncio.sleep(work)  # the helper computing it
        return out, taken

    busy, taken = asyncio.run(scenario(0.03))
    offsets = [m.offset for batch in busy for m in batch.messages]
    assert offsets == list(range(sum(sizes)))  # every message once, in order
    assert taken == sizes
    assert len(busy) < len(sizes) / 2  # joined while the helper was busy
    assert all(len(b.messages) <= 12 for b in busy)
    assert all(len(b.messages) >= 6 for b in busy[1:-1])  # a full queue, packed in order
    again = sorted(o for b in busy for offsets in b.read_again.values() for o in offsets)
    assert again == [f for f in (sum(sizes[:i]) for i in range(len(sizes))) if f % 3 == 0]
    for batch in busy:  # each partition's offsets read again are acked with the batch that holds them
        held = {(m.partition, m.offset) for m in batch.messages}
        assert all((p, o) in held for p, offsets in batch.read_again.items() for o in offsets)

    idle, _ = asyncio.run(scenario(0.0))  # a helper that keeps up: the batches as taken
    assert [len(b.messages) for b in idle] == sizes


def test_a_lingering_batch_waits_while_input_keeps_coming_and_not_once_it_pauses() -> None:
    linger = Linger(seconds=2.0, quiet=0.05, limit=20)

    async def scenario(paces: list[float]) -> list[int]:
        async def takes() -> AsyncIterator[Taken]:
            first = 0
            for pace in paces:
                await asyncio.sleep(pace)
                yield _taken(first, 4)
                first += 4

        out: list[int] = []
        async for batch in gathered(takes(), 8, lambda: 1, lambda: linger):
            out.append(len(batch.messages))
        return out

    # Takes every 10 ms: each batch waits for more, past the usual bound of 8, up to the linger's 20.
    assert asyncio.run(scenario([0.01] * 10)) == [20, 20]
    # A pause longer than ``quiet`` ends the wait: what came before it is a batch at once.
    started = asyncio.run(_timed(scenario([0.01, 0.01, 0.3, 0.01])))
    assert started[0] == [8, 8]
    assert started[1] < 1.0  # never the linger's 2 s


async def _timed(work: Awaitable[T]) -> tuple[T, float]:
    loop = asyncio.get_running_loop()
    begun = loop.time()
    result = await work
    return result, loop.time() - begun


def _aligned(regions: int, records: int) -> AlignedMessages:
    return AlignedMessages({}, False, {}, 0, 0, regions, records, 0, [], [], [])


def test_only_a_batch_of_many_regions_with_few_records_each_makes_the_next_one_linger() -> None:
    assert sparse_linger(_aligned(16, 20_000), 0.25) is None  # few regions
    dense = _aligned(5_000, 5_000 * SPARSE_RECORDS_PER_REGION)  # enough records a region
    assert sparse_linger(dense, 0.25) is None
    sparse = sparse_linger(_aligned(5_000, 15_000), 0.25)  # three a region: mostly per-region cost
    assert sparse is not None and sparse.quiet == 0.25 and sparse.limit == SPARSE_BATCH_MAX_MESSAGES


def test_a_failure_reading_on_is_the_callers_and_a_stop_closes_the_reading() -> None:
    closed: list[bool] = []

    async def failing() -> AsyncIterator[Taken]:
        yield _taken(0, 2)
        raise ConnectionError("broker gone")

    async def endless() -> AsyncIterator[Taken]:
        try:
            first = 0
            while True:
                await asyncio.sleep(0.001)
                yield _taken(first, 1)
                first += 1
        finally:
            closed.append(True)

    async def first_fails() -> None:
        async for _ in gathered(failing(), 10, lambda: 1):
            await asyncio.sleep(0.01)

    with pytest.raises(ConnectionError, match="broker gone"):
        asyncio.run(first_fails())

    async def stopped() -> None:
        batches = gathered(endless(), 10, lambda: 1)
        async for _ in batches:
            break
        await batches.aclose()

    asyncio.run(stopped())
    assert closed == [True]


def test_batches_read_before_a_rebalance_are_dropped() -> None:
    generation = [1]

    async def takes() -> AsyncIterator[Taken]:
        for first in range(0, 12, 2):
            await asyncio.sleep(0.002)
            yield _taken(first, 2)
            if first == 4:
                generation[0] = 2  # a rebalance after the third batch was read

    async def scenario() -> list[list[int]]:
        out = []
        async for batch in gathered(takes(), 100, lambda: generation[0]):
            out.append([m.offset for m in batch.messages])
            await asyncio.sleep(0.05)  # all read meanwhile
        return out

    # The first was taken before the rebalance; the second and third, read before it, are dropped.
    assert asyncio.run(scenario()) == [[0, 1], [6, 7, 8, 9, 10, 11]]
