"""Batches applied beside their agent: a failed one ends the agent at once, not at its next batch."""

from __future__ import annotations

import asyncio

import pytest

from solar_agents.runtime.batches import Applying


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
