"""The web view's reads flush the align step's held table writes first: once for reads that come together,
at most once a second, never when nothing is held."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from solar_agents.runtime.held import READ_FLUSH_SECONDS, HeldBatches, ReadFlush


class Flushes:
    """The align agent's flush as the rule sees it: takes a while, writes what is held, counts itself."""

    def __init__(self, held: Any) -> None:
        self.held = held
        self.reasons: list[str] = []

    async def __call__(self, reason: str) -> None:
        await asyncio.sleep(0.05)
        self.reasons.append(reason)
        self.held.since = None


def read_flush() -> tuple[ReadFlush, Any, Flushes]:
    held = SimpleNamespace(since=None)
    flushes = Flushes(held)
    return ReadFlush(cast(HeldBatches, held), flushes), held, flushes


def test_nothing_held_means_no_flush() -> None:
    reads, _, flushes = read_flush()
    asyncio.run(reads())
    assert flushes.reasons == []


def test_reads_arriving_during_a_flush_wait_for_it_and_share_it() -> None:
    reads, held, flushes = read_flush()

    async def run() -> list[Any]:
        held.since = 1.0
        finished: list[Any] = []

        async def read() -> None:
            await reads()
            finished.append(held.since)  # what each read sees once it goes on to the tables

        await asyncio.gather(*(read() for _ in range(5)))
        return finished

    assert asyncio.run(run()) == [None] * 5
    assert flushes.reasons == ["web"]


def test_at_most_one_flush_a_second() -> None:
    reads, held, flushes = read_flush()

    async def run() -> None:
        held.since = 1.0
        await reads()
        held.since = 2.0  # more held at once: the next read within the second does not flush
        await reads()
        assert held.since == 2.0
        await asyncio.sleep(READ_FLUSH_SECONDS)
        await reads()

    asyncio.run(run())
    assert flushes.reasons == ["web", "web"]
