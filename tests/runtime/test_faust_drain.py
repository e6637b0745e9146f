"""Raw topics handed over a fetched run at a time (``runtime.faust_drain``): what Faust does per message is
done once per run, and the run counts as the consumer's messages count (unacked until acked, then committed).

The whole path on a real broker (transaction markers, crashes, rebalances) is in ``tests/end_to_end``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from faust.types import TP

from solar_agents.core.messages import Message
from solar_agents.runtime.faust_drain import App, Fetched, FetchedFeed, _whole, ack_fetched

RAW = "raw"


def run(partition: int, offsets: range, generation: int = 1) -> Fetched:
    tp = TP(RAW, partition)
    return Fetched(tp, [Message(RAW, partition, o, None, b"{}") for o in offsets], generation)


def feed(max_records: int = 10) -> tuple[FetchedFeed, list[str]]:
    calls: list[str] = []
    f = FetchedFeed(
        max_records,
        lambda tp: calls.append(f"hold {tp.partition}"),
        lambda tp: calls.append(f"release {tp.partition}"),
    )
    return f, calls


def offsets(runs: list[Fetched]) -> list[tuple[int, int]]:
    return [(r.tp.partition, m.offset) for r in runs for m in r.records]


def current(generation: int = 1) -> Callable[[], int]:
    return lambda: generation


def test_a_take_is_whole_runs_up_to_its_size() -> None:
    async def scenario() -> tuple[list[Fetched], list[Fetched]]:
        f, _ = feed(max_records=100)
        for r in (run(0, range(0, 4)), run(1, range(0, 4)), run(0, range(4, 8))):
            await f.put(r)
        return await f.take(8, 1.0, current()), await f.take(8, 0.01, current())

    first, second = asyncio.run(scenario())
    assert offsets(first) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert offsets(second) == [(0, o) for o in range(4, 8)]


def test_a_take_waits_for_its_size_at_most_its_time() -> None:
    async def scenario() -> tuple[list[Fetched], float]:
        f, _ = feed()
        await f.put(run(0, range(3)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        taken = await f.take(100, 0.2, current())
        return taken, loop.time() - start

    taken, waited = asyncio.run(scenario())
    assert offsets(taken) == [(0, 0), (0, 1), (0, 2)]
    assert 0.15 <= waited < 1.0


def test_a_take_drops_runs_fetched_before_a_rebalance() -> None:
    async def scenario() -> list[Fetched]:
        f, _ = feed()
        await f.put(run(0, range(3), generation=1))
        await f.put(run(1, range(3), generation=2))
        return await f.take(100, 0.01, current(2))

    assert offsets(asyncio.run(scenario())) == [(1, 0), (1, 1), (1, 2)]


def test_a_full_feed_holds_the_partition_until_half_is_taken() -> None:
    async def scenario() -> list[str]:
        f, calls = feed(max_records=10)
        await f.put(run(0, range(6)))
        await f.put(run(1, range(6)))  # 12 waiting: partition 1 fetched no more
        calls.append("taken")
        await f.take(6, 0.01, current())  # 6 left: more than half of 10
        calls.append("taken")
        await f.take(6, 0.01, current())
        return calls

    assert asyncio.run(scenario()) == ["hold 1", "taken", "taken", "release 1"]


def test_a_rebalance_clears_the_feed_and_releases_its_partitions() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        f, calls = feed(max_records=4)
        await f.put(run(0, range(5)))
        f.clear()
        return calls, len(f.runs), f.waiting

    assert asyncio.run(scenario()) == (["hold 0", "release 0"], 0, 0)


def test_the_hand_over_waits_while_twice_its_bound_wait() -> None:
    async def scenario() -> tuple[bool, bool]:
        f, _ = feed(max_records=4)
        await f.put(run(0, range(8)))
        put = asyncio.ensure_future(f.put(run(0, range(8, 9))))
        await asyncio.sleep(0.05)
        waited = not put.done()
        await f.take(8, 0.01, current())
        await asyncio.wait_for(put, 1.0)
        return waited, put.done()

    assert asyncio.run(scenario()) == (True, True)


@pytest.fixture
def app() -> App:
    return App("faust-drain-test", broker="kafka://127.0.0.1:1", autodiscover=False)


def test_a_run_is_unacked_until_acked_then_committed_past(app: App) -> None:
    """The hand-over puts the run in the consumer's unacked messages (a rebalance or a stop waits for it),
    skips what was read already, and records the read offset; its ack lets the commit pass its offsets."""

    async def scenario() -> tuple[list[int], int, int | None, int, int | None, int]:
        consumer = app.consumer
        app.flow_control.resume()
        consumer.resume_flow()
        tp = TP(RAW, 0)
        consumer._committed_offset[tp] = 10
        consumer._read_offset[tp] = 12  # 10 to 12 handed on before this fetch
        f = app.fetched_feed(RAW, 100)
        records = [Message(RAW, 0, o, None, b"{}") for o in range(10, 20)]
        await _whole(consumer, tp, records, f, app.consumer_generation_id)
        (handed,) = f.runs
        unacked = len(consumer._unacked_messages)
        before = consumer._new_offset(tp)
        ack_fetched(consumer, [handed])
        ack_fetched(consumer, [handed])  # twice: counted once
        return (
            [m.offset for m in handed.records],
            unacked,
            before,
            len(consumer._unacked_messages),
            consumer._read_offset[tp],
            len(consumer._acked[tp]),
        )

    handed, unacked, before, after, read, acked = asyncio.run(scenario())
    assert handed == list(range(12, 20))
    assert (unacked, before, after, read, acked) == (1, None, 0, 19, 8)


def test_offsets_a_run_skips_are_gaps_the_commit_passes(app: App) -> None:
    """Transaction markers: offsets without a record. Faust's hand-over adds them as gaps, and so does the
    run's: the commit passes them in one step once the records around them are acked."""

    async def scenario() -> int | None:
        consumer = app.consumer
        app.flow_control.resume()
        consumer.resume_flow()
        tp = TP(RAW, 0)
        consumer._committed_offset[tp] = 0
        f = app.fetched_feed(RAW, 100)
        f.subscribe(app.topic(RAW))
        await app.topics._update_indices()  # as at the subscription: the raw topic's acks are on
        records = [Message(RAW, 0, o, None, b"{}") for o in (0, 1, 2, 4, 5, 7)]  # 3 and 6: markers
        await _whole(consumer, tp, records, f, app.consumer_generation_id)
        ack_fetched(consumer, list(f.runs))
        return consumer._new_offset(tp)

    assert asyncio.run(scenario()) == 8
