"""The align step's held table writes: a read of the web view writes its regions' entries alone, ahead of
the flush, and neither that nor a crash after it changes a row or the tables the flush leaves."""

from __future__ import annotations

import random

from step_harness import Harness, assert_flush_ends_as_reference, in_log_order, raw_feed, run

from solar_agents.core.wire import split_block_key

REGIONS = tuple(f"DE_{n:02}" for n in range(12))


def region_of_key(table: str, key: str) -> str:
    return split_block_key(key)[0] if table == "hours" else key


def test_a_read_writes_its_regions_alone_as_the_step_holds_them() -> None:
    raw = in_log_order(raw_feed(hours=120, regions=REGIONS))
    half = len(raw) // 2
    held, each_batch = Harness(records_per_write=100_000), Harness()
    run(held, raw[:half], ingest_batch=50, align_batch=2)
    run(each_batch, raw[:half], ingest_batch=50, align_batch=2)
    assert held.table_writes == 0
    assert sorted(held.added) == sorted(REGIONS), "each region announced once, when it first came"

    read = ["DE_03", "DE_07"]
    entries = held.aligner.writes.entries()
    writes = held.read_regions(read)
    assert held.aligner.writes.entries() == entries - sum(len(w) for w in writes.values())
    written = {region_of_key(table, key) for entries in writes.values() for table, key, _ in entries}
    assert written == set(read)
    for name in ("hours", "regions"):
        mine = {k: v for k, v in each_batch.tables[name].items() if region_of_key(name, k) in read}
        assert held.tables[name] == mine
    assert held.read_regions(read) == {}, "nothing changed since: nothing written again"

    run(held, raw[half:], ingest_batch=50, align_batch=2)
    run(each_batch, raw[half:], ingest_batch=50, align_batch=2)
    entries, written = held.aligner.writes.entries(), held.table_writes
    held.flush()
    assert held.table_writes - written == entries, "the count kept as writes came equals what a flush writes"
    assert held.tables == each_batch.tables
    states = held.aligner.states.values()
    assert held.aligner.records_kept == sum(len(s.solar) + len(s.weather) for s in states) > 0


def test_a_crash_after_a_read_wrote_ahead_of_the_flush_changes_no_row() -> None:
    """The regions a read wrote are ahead of the committed offsets when the worker dies: their records
    come again onto a state that holds them already."""
    raw = raw_feed(hours=300, regions=REGIONS[:4])
    random.Random(11).shuffle(raw)
    ordered = in_log_order(raw)
    harness = Harness(records_per_write=100_000)
    third = len(ordered) // 3
    run(harness, ordered[:third], ingest_batch=30, align_batch=3)
    harness.flush()
    run(harness, ordered[third : 2 * third], ingest_batch=30, align_batch=3)
    assert harness.read_regions(["DE_00", "DE_02"])
    harness.crash()  # the records since the flush come again; DE_00 and DE_02 were written past it
    run(harness, ordered[2 * third :], ingest_batch=30, align_batch=3)
    assert_flush_ends_as_reference(harness, raw, align_batch=3)
