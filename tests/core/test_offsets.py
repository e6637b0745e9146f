"""``offsets``: the holes in what a consumer hands on, and the records read again put back in place."""

from __future__ import annotations

from solar_agents.core.messages import Message
from solar_agents.core.offsets import Continuity, Hole, fill, runs


def at(partition: int, *offsets: int) -> list[Message]:
    return [Message("t", partition, offset, None, b"%d" % offset) for offset in offsets]


def committed_at(**by_partition: int | None) -> dict[int, int | None]:
    return {int(name[1:]): value for name, value in by_partition.items()}


def test_in_order_from_the_committed_offset_has_no_hole() -> None:
    continuity = Continuity()
    committed = committed_at(p0=10, p1=None)
    assert continuity.holes(at(0, 10, 11, 12) + at(1, 0, 1), committed.get) == []
    assert continuity.holes(at(0, 13) + at(1, 2), committed.get) == []


def test_a_jump_is_a_hole_from_the_expected_offset_to_the_record_after_it() -> None:
    continuity = Continuity()
    committed = committed_at(p0=10)
    assert continuity.holes(at(0, 10, 11, 14, 15), committed.get) == [Hole(0, 12, 14)]
    # the next batch is checked against the record after the hole, not the hole
    assert continuity.holes(at(0, 16), committed.get) == []


def test_a_first_record_past_the_committed_offset_is_a_hole() -> None:
    """One record missing right after the committed offset: the case Faust's own commit passes over."""
    continuity = Continuity()
    assert continuity.holes(at(0, 11, 12), committed_at(p0=10).get) == [Hole(0, 10, 11)]


def test_reading_again_from_earlier_is_not_a_hole() -> None:
    continuity = Continuity()
    committed = committed_at(p0=10)
    continuity.holes(at(0, 10, 11, 12, 13), committed.get)
    assert continuity.holes(at(0, 11, 12, 13, 14), committed.get) == []  # sought back after a rebalance


def test_a_partition_the_group_read_on_elsewhere_starts_at_its_committed_offset() -> None:
    continuity = Continuity()
    continuity.holes(at(0, 0, 1, 2), committed_at(p0=None).get)
    # another worker held partition 0 meanwhile and committed up to 500
    assert continuity.holes(at(0, 500, 501), committed_at(p0=500).get) == []
    assert continuity.holes(at(0, 503), committed_at(p0=500).get) == [Hole(0, 502, 503)]


def test_nothing_known_of_a_partition_accepts_its_first_record() -> None:
    assert Continuity().holes(at(0, 7), committed_at(p0=None).get) == []


def test_fill_puts_what_was_read_in_front_of_the_record_after_the_hole() -> None:
    taken = at(0, 10, 13) + at(1, 5) + at(0, 14)
    read = at(0, 11, 12)
    filled = fill(taken, {Hole(0, 11, 13): read})
    assert [(m.partition, m.offset) for m in filled] == [(0, 10), (0, 11), (0, 12), (0, 13), (1, 5), (0, 14)]
    assert fill(taken, {}) == taken
    # a hole that held no records (transaction markers) leaves the batch as it was
    assert fill(taken, {Hole(0, 11, 13): []}) == taken


def test_runs_cover_offsets_in_few_ranges() -> None:
    assert runs([], 10) == []
    assert runs([5], 10) == [(5, 6)]
    assert runs([9, 5, 7, 5], 10) == [(5, 10)]
    assert runs([1, 2, 30, 31, 100], 10) == [(1, 3), (30, 32), (100, 101)]
