"""The align step's held table writes: a read of the web view writes its regions' entries alone, ahead of
the flush, and neither that nor a crash after it changes a row or the tables the flush leaves."""

from __future__ import annotations

import copy
import random
from typing import Any

from step_harness import Harness, assert_flush_ends_as_reference, in_log_order, raw_feed, run

from solar_agents.core.wire import FIELDS_KEY, block_key, home_block, split_block_key
from solar_agents.steps.align import flush_writes

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


def fields_where(tables: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Per region, the keys of the entries that hold its fields."""
    out: dict[str, list[str]] = {}
    for key, value in tables["hours"].items():
        if FIELDS_KEY in value:
            out.setdefault(split_block_key(key)[0], []).append(key)
    for region in tables["regions"]:
        out.setdefault(region, []).append(f"regions:{region}")
    return out


def assert_fields_in_home_blocks(harness: Harness) -> None:
    """Each region's fields in one entry, the block of its latest hour, as the step holds them."""
    where = fields_where(harness.tables)
    for region, state in harness.aligner.states.items():
        home = home_block(state)
        assert home is not None
        assert where[region] == [block_key(region, home)]
        assert harness.tables["hours"][block_key(region, home)][FIELDS_KEY] == state.snapshot()


def test_a_regions_fields_are_in_the_block_of_its_latest_hour_alone() -> None:
    """Flush after flush, as hours come in several blocks and late ones to old blocks: each region's fields
    are in one entry, its latest block; the tables are what per-batch writes leave; a flush writes what it
    counted."""
    raw = in_log_order(raw_feed(hours=150, regions=REGIONS[:6]))
    held, each_batch = Harness(records_per_write=100_000), Harness()
    step = len(raw) // 5
    for start in range(0, len(raw), step):
        run(held, raw[start : start + step], ingest_batch=40, align_batch=2)
        run(each_batch, raw[start : start + step], ingest_batch=40, align_batch=2)
        entries, written = held.aligner.writes.entries(), held.table_writes
        held.flush()
        assert held.table_writes - written == entries
        assert held.tables == each_batch.tables
        assert held.tables["regions"] == {}
        assert_fields_in_home_blocks(held)
    assert len({split_block_key(k)[1] for k in held.tables["hours"]}) >= 3, "hours in several blocks"


def test_a_flush_that_dies_part_way_leaves_no_block_behind_the_fields() -> None:
    """The first flush in which a region's home moves while a late hour changes its old home dies after
    each of its writes in turn: the worker reads again from the flush before, and ends with the reference's
    rows and the hour blocks a run without the crash leaves."""
    raw = in_log_order(raw_feed(hours=150, regions=REGIONS[:4]))
    step = len(raw) // 25
    chunks = [raw[start : start + step] for start in range(0, len(raw), step)]
    before = Harness(records_per_write=100_000)
    for index, chunk in enumerate(chunks):  # noqa: B007 (the index is read after the loop)
        run(before, chunk, ingest_batch=30, align_batch=3)
        writes = flush_writes(copy.deepcopy(before).aligner)
        if any(len({key for _, key, _ in w}) < len(w) for w in writes.values()):
            break  # an old home written twice: with the old fields first, cleared of them last
        before.flush()
    else:
        raise AssertionError("no flush moved a home whose old block changed")
    rest = [m for chunk in chunks[index + 1 :] for m in chunk]
    for partition, partition_writes in writes.items():
        earlier = {p: w for p, w in writes.items() if p < partition}
        for done in range(len(partition_writes)):
            harness = copy.deepcopy(before)
            harness.write_tables({**earlier, partition: partition_writes[:done]})
            harness.crash()
            run(harness, rest, ingest_batch=30, align_batch=3)
            assert_flush_ends_as_reference(harness, raw, align_batch=3)


def test_tables_of_the_earlier_layout_are_read_and_upgraded_in_place() -> None:
    """Every region's fields in the regions table, as earlier versions kept them: read as they are, and
    moved to each region's home block as the region is next written."""
    raw = in_log_order(raw_feed(hours=120, regions=REGIONS[:5]))
    half = len(raw) // 2
    upgraded, unchanged = Harness(records_per_write=100_000), Harness(records_per_write=100_000)
    for harness in (upgraded, unchanged):
        run(harness, raw[:half], ingest_batch=40, align_batch=2)
        harness.flush()
    for key, value in upgraded.tables["hours"].items():
        if FIELDS_KEY in value:
            upgraded.tables["regions"][split_block_key(key)[0]] = value.pop(FIELDS_KEY)
    assert upgraded.tables["regions"] and not any(FIELDS_KEY in v for v in upgraded.tables["hours"].values())
    upgraded.restart()
    unchanged.restart()
    assert upgraded.aligner.states == unchanged.aligner.states, "the same state from either layout"
    run(upgraded, raw[half:], ingest_batch=40, align_batch=2)
    assert_flush_ends_as_reference(upgraded, raw, align_batch=2)
    assert upgraded.tables["regions"] == {}, "each region moved as it was written"
    assert_fields_in_home_blocks(upgraded)
