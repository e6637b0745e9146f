"""The align step in-process: table writes per batch or held until a flush, a restart from the tables, a
message it cannot apply."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from faults_util import region_of
from reference import RawMessage, assert_rows_equal, reference_features
from state_util import through_tables
from step_harness import (
    PARTITIONS,
    SOLAR,
    WEATHER,
    Harness,
    as_rows,
    assert_flush_ends_as_reference,
    in_log_order,
    raw_feed,
    reference,
    run,
)

from solar_agents.core.features import SPEC_ROWS
from solar_agents.core.hours import Position, RegionHours, Retention, Solar, Weather
from solar_agents.core.messages import Message
from solar_agents.core.read_progress import Feed
from solar_agents.core.wire import BLOCK_HOURS, REGIONS_KEY, encode_region_records
from solar_agents.settings import Settings
from solar_agents.steps import align as align_module
from solar_agents.steps import held_writes
from solar_agents.steps.align import Aligner
from solar_agents.steps.align_region import align_batch
from solar_agents.steps.write import rows_to_write


def test_batch_size_changes_the_table_writes_not_the_rows() -> None:
    raw = raw_feed(hours=240, regions=("DE_a", "DE_b"))
    small, large = Harness(), Harness()
    run(small, raw, ingest_batch=10, align_batch=1)
    run(large, raw, ingest_batch=500, align_batch=100)
    assert as_rows(rows_to_write(small.rows_messages, SPEC_ROWS)) == as_rows(
        rows_to_write(large.rows_messages, SPEC_ROWS)
    )
    assert small.hour_blocks() == large.hour_blocks()
    large_states = large.states()
    for region, kept in small.states().items():  # the watermark; retention ran at its own pace
        assert kept.latest_solar == large_states[region].latest_solar
        assert kept.latest_weather == large_states[region].latest_weather
        assert kept.pruned_below is not None and kept.pruned_below > 0, "retention ran"
    # One write per changed block, per batch: far fewer with larger batches.
    assert large.table_writes * 10 < small.table_writes
    for value in large.tables["hours"].values():  # every value bounded: one day of one region
        assert len(value["solar"]) <= BLOCK_HOURS and len(value["weather"]) <= BLOCK_HOURS


def test_a_regions_records_of_a_batch_are_applied_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many regions, a record or two of each in every records message: a region's records are applied once
    per align batch, not once per message, and the rows and tables are those of message by message."""
    calls: list[str] = []
    applied_once = align_module.align_batch

    def counted(state: RegionHours, *args: Any, **kwargs: Any) -> Any:
        calls.append(state.region)
        return applied_once(state, *args, **kwargs)

    monkeypatch.setattr(align_module, "align_batch", counted)
    raw = raw_feed(hours=96, regions=tuple(f"DE_{n:02}" for n in range(30)))
    one_by_one, grouped = Harness(), Harness()
    run(one_by_one, raw, ingest_batch=30, align_batch=1)
    per_message = len(calls)
    calls.clear()
    run(grouped, raw, ingest_batch=30, align_batch=20)
    assert len(calls) * 5 < per_message
    assert as_rows(rows_to_write(grouped.rows_messages, SPEC_ROWS)) == as_rows(
        rows_to_write(one_by_one.rows_messages, SPEC_ROWS)
    )
    assert grouped.hour_blocks() == one_by_one.hour_blocks()
    assert_rows_equal(reference(raw), as_rows(rows_to_write(grouped.rows_messages, SPEC_ROWS)))


def test_a_batch_counts_the_regions_it_applied_and_their_records() -> None:
    """What the agent decides a sparse batch by (``runtime.align.sparse_linger``): each region once however
    many messages hold its records."""
    hour = 430_000
    weather = Weather(hour, Position(0, 1, 0), 5.0, 50.0, 0.0, 53.6, 9.9)
    first = encode_region_records([("A", [Solar(hour, Position(0, 1, 0), 1.0)]), ("B", [weather])])
    second = encode_region_records([("A", [Solar(hour + 1, Position(0, 2, 0), 2.0)])])
    messages = [Message("records", 0, 0, REGIONS_KEY, first), Message("records", 0, 1, REGIONS_KEY, second)]
    out = Aligner(Settings().feature_set, 6).batch(messages, lambda partition: None)
    assert (out.regions, out.records) == (2, 3)


def test_held_table_writes_write_each_entry_once_and_leave_the_same_tables() -> None:
    """Many regions, each in every batch: held writes write a region's entries once per flush rather than
    once per batch, and the tables end as the per-batch writes leave them."""
    raw = raw_feed(hours=96, regions=tuple(f"DE_{n:02}" for n in range(40)))
    each_batch, held = Harness(), Harness(records_per_write=10_000)
    run(each_batch, raw, ingest_batch=200, align_batch=1)
    run(held, raw, ingest_batch=200, align_batch=1)
    assert held.table_writes == 0, "below the bound, nothing is written yet"
    assert held.aligner.writes.records == len(raw) - len(held.dead_letters)
    entries = held.aligner.writes.entries()
    held.flush()
    assert held.table_writes == entries
    assert held.tables == each_batch.tables
    assert each_batch.table_writes > 10 * held.table_writes
    assert as_rows(rows_to_write(held.rows_messages, SPEC_ROWS)) == as_rows(
        rows_to_write(each_batch.rows_messages, SPEC_ROWS)
    )


def test_a_flush_comes_once_the_records_since_the_last_number_enough_per_entry() -> None:
    raw = raw_feed(hours=240, regions=("DE_a", "DE_b"))
    harness = Harness(records_per_write=20)
    run(harness, raw, ingest_batch=10, align_batch=1)
    assert harness.table_writes, "the bound was reached and the writes made"
    # At most one table entry per 20 records applied, over the whole run but the writes still held.
    assert harness.table_writes * 20 <= len(raw)
    harness.flush()
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))


def test_a_flush_waits_for_a_blocks_worth_of_records_a_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many regions with under two days each: a flush waits for 96 records a region (a block's worth) as well
    as 30 an entry, so each entry is written once, at the end. By the records per entry alone, a flush would
    come while the first blocks fill and write them again later (the changelog's knife edge)."""
    regions = tuple(f"DE_{n:03}" for n in range(200))
    raw = raw_feed(hours=40, regions=regions)
    harness = Harness(records_per_write=30)
    run(harness, raw, ingest_batch=200, align_batch=4)
    assert harness.table_writes == 0, "no region has brought a block's worth yet"
    harness.flush()
    entries = sum(len(table) for table in harness.tables.values())
    assert harness.table_writes == entries == 2 * len(regions)  # each written once
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))

    monkeypatch.setattr(held_writes, "RECORDS_PER_REGION_WRITTEN", 0)  # the records per entry alone
    per_entry = Harness(records_per_write=30)
    run(per_entry, raw, ingest_batch=200, align_batch=4)
    per_entry.flush()
    assert per_entry.tables == harness.tables and per_entry.table_writes > entries


def test_long_histories_still_flush_as_they_go() -> None:
    """Two regions, 60 days each: past a block's worth a region, flushes come by the records per entry, at
    most one entry per 30 records."""
    raw = raw_feed(hours=24 * 60, regions=("DE_a", "DE_b"))
    harness = Harness(records_per_write=Settings().table_flush_records_per_write)
    run(harness, raw, ingest_batch=50, align_batch=2)
    assert harness.table_writes > 0 and harness.table_writes * 30 <= len(raw)


def test_a_crash_with_writes_held_reads_again_from_the_last_flush_and_changes_no_row() -> None:
    raw = raw_feed(hours=300, regions=("DE_a", "DE_b", "DE_c"))
    random.Random(7).shuffle(raw)
    ordered = in_log_order(raw)
    harness = Harness(records_per_write=15)
    third = len(ordered) // 3
    run(harness, ordered[:third], ingest_batch=30, align_batch=3)
    harness.crash()  # the writes held since the last flush are lost; their records come again
    run(harness, ordered[third : 2 * third], ingest_batch=30, align_batch=3)
    harness.crash()
    run(harness, ordered[2 * third :], ingest_batch=30, align_batch=3)
    assert_flush_ends_as_reference(harness, raw, align_batch=3)


def test_a_restart_from_the_tables_alone_changes_no_row() -> None:
    raw = raw_feed(hours=200, regions=("DE_a", "DE_b"))
    random.Random(5).shuffle(raw)  # any order of arrival across partitions
    ordered = in_log_order(raw)
    harness = Harness()
    half = len(ordered) // 2
    run(harness, ordered[:half], ingest_batch=40, align_batch=5)
    harness.restart()
    run(harness, ordered[half:], ingest_batch=40, align_batch=5)
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))


def test_a_records_message_the_align_step_cannot_apply_is_a_dead_letter_and_the_rest_applied() -> None:
    """An internal error while aligning one records message (here a corrupt message: a solar record without
    its fields) sends that message to the dead letters with the reason; the batch's other messages are
    applied, and every row equals the reference."""
    raw = raw_feed(hours=120, regions=("DE_a", "DE_b"))
    harness = Harness()
    corrupt = json.dumps({"solar": [[430_000]], "weather": []}).encode()
    partition = sum(b"DE_a") % PARTITIONS
    harness.send(partition, b"DE_a", corrupt)  # first in its partition's log, so in the first align batch
    run(harness, raw, ingest_batch=50, align_batch=7)
    [(failed_partition, offset, reason)] = harness.align_failed
    assert (failed_partition, offset) == (partition, 0)
    assert reason.startswith("internal error: IndexError")
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))


def test_a_corrupt_records_message_of_several_regions_is_a_dead_letter_and_the_rest_applied() -> None:
    raw = raw_feed(hours=120, regions=("DE_a", "DE_b"))
    harness = Harness()
    corrupt = json.dumps([["DE_a", {"solar": [[430_000]], "weather": []}], ["DE_b", {"solar": []}]])
    harness.send(1, REGIONS_KEY, corrupt.encode())
    run(harness, raw, ingest_batch=50, align_batch=7)
    [(failed_partition, offset, reason)] = harness.align_failed
    assert (failed_partition, offset) == (1, 0)
    assert reason.startswith("internal error: IndexError")
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))


def test_new_regions_past_the_limit_are_refused_record_by_record() -> None:
    """With MAX_REGIONS=2, every raw record of a third region is refused with its raw position and the
    reason (the agent sends their originals to the dead letters), nothing of it is kept, and the rows of the
    two regions held are exactly the reference's."""
    regions = ("DE_a", "DE_b", "DE_c")
    raw = raw_feed(hours=72, regions=regions)
    settings = Settings()
    aligner = Aligner(settings.feature_set, settings.allowed_lateness_hours, max_regions=2)
    harness = Harness(aligner=aligner)
    run(harness, raw, ingest_batch=50, align_batch=7)
    held = set(harness.states())
    assert len(held) == 2
    [refused] = set(regions) - held
    messages = [RawMessage(m.topic, m.partition, m.offset, m.key, m.value) for m in raw]
    full = reference_features(messages, solar_topic=SOLAR, weather_topic=WEATHER)
    bad = {(r.topic, r.partition, r.offset) for r, _ in full.rejected}
    valid = [m for m in raw if (m.topic, m.partition, m.offset) not in bad]
    of_refused = sorted(
        (m.topic, m.partition, m.offset) for m in valid if region_of(m.key, m.value) == refused
    )
    topic = {Feed.SOLAR: SOLAR, Feed.WEATHER: WEATHER}
    assert sorted((topic[feed], p, o) for feed, p, o, _ in harness.refused) == of_refused
    reason = f"region limit: this worker holds MAX_REGIONS=2 regions, and {refused!r} would be one more"
    assert {r for *_, r in harness.refused} == {reason}
    expected = reference([m for m in valid if region_of(m.key, m.value) != refused])
    assert_rows_equal(expected, as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))


# --- one region's records (``align_batch``) ------------------------------------------------------------

# 2019-01-05 was a Saturday.
SATURDAY_NOON = int(datetime(2019, 1, 5, 12, tzinfo=UTC).timestamp()) // 3600
P = Position(0, 0, 0)
RETENTION = Retention(reach=24, lateness_hours=48)  # 72 h behind the watermark


def test_align_batch_writes_late_record_from_kept_history() -> None:
    state = RegionHours("R")
    h = SATURDAY_NOON
    first = align_batch(
        state, [Solar(h, P, 1.0), Weather(h, P, 1.0, 1.0, 1.0, 0.0, 0.0)], SPEC_ROWS, RETENTION
    )
    assert [r.hour for r in first.rows] == [h]
    ahead = align_batch(
        state, [Solar(h + 200, P, 1.0), Weather(h + 200, P, 1.0, 1.0, 1.0, 0.0, 0.0)], SPEC_ROWS, RETENTION
    )
    assert ahead.pruned_hours == [h]  # older than watermark - 72 h
    late = align_batch(
        state, [Solar(h + 1, P, 2.0), Weather(h + 1, P, 2.0, 2.0, 2.0, 0.0, 0.0)], SPEC_ROWS, RETENTION
    )
    assert late.late == 2
    assert [r.hour for r in late.rows] == [h + 1]
    assert late.rows[0].production_lag_1h is None  # h was forgotten: whatever history is kept
    assert late.pruned_hours == [h + 1] and not late.stored_hours


def test_align_batch_keeps_the_history_of_records_a_crash_may_bring_back() -> None:
    state = RegionHours("R")
    h = SATURDAY_NOON

    def both(hour: int) -> list[Solar | Weather]:
        return [Solar(hour, P, float(hour - h)), Weather(hour, P, 1.0, 1.0, 1.0, 0.0, 0.0)]

    for hour in range(h, h + 30):
        align_batch(state, both(hour), SPEC_ROWS, RETENTION)
    # Far ahead, while the records from h + 29 on are not committed: their rows' history stays.
    ahead = align_batch(state, both(h + 300), SPEC_ROWS, RETENTION, uncommitted=h + 29)
    assert ahead.pruned_hours == list(range(h, h + 29 - 24))
    again = align_batch(state, both(h + 29), SPEC_ROWS, RETENTION, uncommitted=h + 29)
    row = next(r for r in again.rows if r.hour == h + 29)
    assert row.production_lag_24h == 5.0 and row.production_ma_24h == sum(range(6, 30)) / 24
    # Once committed, retention catches up with the watermark.
    later = align_batch(state, both(h + 301), SPEC_ROWS, RETENTION)
    assert later.pruned_hours == list(range(h + 5, h + 30))


def test_a_batch_read_again_after_a_restart_prunes_nothing() -> None:
    state = RegionHours("R")
    h = SATURDAY_NOON

    def both(hour: int) -> list[Solar | Weather]:
        return [Solar(hour, P, 1.0), Weather(hour, P, 1.0, 1.0, 1.0, 0.0, 0.0)]

    for offset, hour in enumerate(range(h, h + 30)):
        align_batch(state, both(hour), SPEC_ROWS, RETENTION, offset=offset)
    assert state.applied_through == 29
    again = align_batch(state, both(h + 300), SPEC_ROWS, RETENTION, offset=10)  # read again: history stays
    assert again.pruned_hours == [] and state.applied_through == 29
    new = align_batch(state, both(h + 301), SPEC_ROWS, RETENTION, offset=30)
    assert new.pruned_hours == list(range(h, h + 30)) and state.applied_through == 30


def test_an_exact_duplicate_after_a_restore_changes_no_row() -> None:
    """SPEC: exact duplicates change nothing, and neither do restarts. The state goes through the table
    encodings (what a restart restores) before the duplicate of a kept record near the retention's edge."""
    h = SATURDAY_NOON
    live = RegionHours("R")
    written = {}
    for offset, hour in enumerate(range(h, h + 200)):
        records: list[Solar | Weather] = [
            Solar(hour, Position(0, offset, 0), float(hour % 37)),
            Weather(hour, Position(0, offset, 0), float(hour % 11), 50.0, 100.0, 53.6, 9.9),
        ]
        for row in align_batch(live, records, SPEC_ROWS, RETENTION, offset=offset).rows:
            written[row.key] = row

    restored = through_tables(live)
    assert restored == live

    kept = live.solar[h + 199 - 71]
    # The same message produced twice has another offset; read again after a crash, the same one.
    again = Solar(kept.hour, Position(0, 500, 0), kept.production_mw)
    for state, duplicate in ((live, kept), (restored, kept), (restored, again)):
        rows = align_batch(state, [duplicate], SPEC_ROWS, RETENTION, offset=200).rows
        assert rows, "a duplicate rewrites the rows it can compute exactly (their first write may be lost)"
        changed = [row for row in rows if row != written[row.key]]
        assert changed == [], f"{len(changed)} rows rewritten with cut windows"
