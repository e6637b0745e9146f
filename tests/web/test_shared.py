"""Answers shared by identical requests: one build for a burst, fresh after a second, failures not kept."""

from __future__ import annotations

import asyncio

import pytest

from solar_agents.web.shared import SharedAnswers


def test_a_burst_of_identical_requests_costs_one_build_and_a_later_one_builds_again() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], int]:
        shared = SharedAnswers(seconds=0.2, max_entries=4)
        builds = 0

        async def build() -> bytes:
            nonlocal builds
            builds += 1
            await asyncio.sleep(0.05)
            return f"answer {builds}".encode()

        burst = await asyncio.gather(*(shared.get(("page", 1), build) for _ in range(200)))
        await asyncio.sleep(0.25)
        later = [await shared.get(("page", 1), build), await shared.get(("page", 2), build)]
        return burst, later, builds

    burst, later, builds = asyncio.run(scenario())
    assert set(burst) == {b"answer 1"}
    assert later == [b"answer 2", b"answer 3"] and builds == 3


def test_a_failed_build_is_not_shared_with_later_requests() -> None:
    async def scenario() -> bytes:
        shared = SharedAnswers(seconds=10.0, max_entries=4)

        async def failing() -> bytes:
            raise RuntimeError("table gone")

        async def working() -> bytes:
            return b"ok"

        with pytest.raises(RuntimeError):
            await shared.get("k", failing)
        return await shared.get("k", working)

    assert asyncio.run(scenario()) == b"ok"


def test_entries_are_bounded() -> None:
    async def scenario() -> int:
        shared = SharedAnswers(seconds=10.0, max_entries=3)

        async def build() -> bytes:
            return b"x"

        for n in range(10):
            await shared.get(n, build)
        return len(shared._entries)

    assert asyncio.run(scenario()) == 3
