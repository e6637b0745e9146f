"""Hour alignment, the choice of record per hour, watermark and retention."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from solar_agents.hours import (
    HOUR_US,
    NOT_YET_READ,
    FeedProgress,
    InvalidTimestamp,
    Position,
    RegionHours,
    Solar,
    Uncommitted,
    Weather,
    hour_label,
    nearest_hour,
    to_micros,
)

H = 430_000  # an hour in 2019


def test_iso_and_epoch_agree() -> None:
    us = to_micros("2019-01-01T00:00:00Z")
    assert us == to_micros("2019-01-01T01:00:00+01:00") == to_micros("2019-01-01T00:00:00")
    assert us == to_micros(1546300800) == to_micros(1546300800.0)
    assert to_micros("2019-01-01T00:00:00.250Z") == us + 250_000


@pytest.mark.parametrize(
    "value", [True, None, "yesterday", float("nan"), float("inf"), [1], "9999-12-31T23:45"]
)
def test_bad_timestamps(value: object) -> None:
    with pytest.raises(InvalidTimestamp):
        to_micros(value)


def test_nearest_hour_half_past_rounds_up() -> None:
    base = H * HOUR_US
    assert nearest_hour(base) == (H, 0)
    assert nearest_hour(base + HOUR_US // 2 - 1) == (H, HOUR_US // 2 - 1)
    assert nearest_hour(base + HOUR_US // 2) == (H + 1, HOUR_US // 2)
    assert nearest_hour(base - 60_000_000) == (H, 60_000_000)
    assert hour_label(int(datetime(2019, 1, 1, 5, tzinfo=UTC).timestamp()) // 3600) == "2019-01-01T05:00Z"


def test_nearest_record_wins_then_later_offset() -> None:
    state = RegionHours("R")
    far = Solar(H, Position(600_000_000, 5, 0), 1.0)
    near = Solar(H, Position(60_000_000, 1, 0), 2.0)
    state.apply([far, near], 48)
    assert state.solar[H].production_mw == 2.0
    state.apply([far], 48)  # arriving again changes nothing
    assert state.solar[H].production_mw == 2.0
    correction = Solar(H, Position(60_000_000, 9, 0), 3.0)
    applied = state.apply([correction], 48)
    assert state.solar[H].production_mw == 3.0 and applied.solar_hours == {H}
    # The same record again is reported again: its writes may have been lost in a crash.
    assert state.apply([correction], 48).solar_hours == {H}


def test_watermark_is_the_smaller_latest_hour_and_counts_late() -> None:
    state = RegionHours("R")
    weather = Weather(H, Position(0, 0, 0), None, None, None, 0.0, 0.0)
    state.apply([Solar(H + 100, Position(0, 0, 0), 1.0)], 48)
    assert state.watermark is None
    state.apply([weather], 48)
    assert state.watermark == H
    late = state.apply([Solar(H - 49, Position(0, 1, 0), 1.0), Solar(H - 48, Position(0, 2, 0), 1.0)], 48)
    assert late.late == 1


def test_prune_by_event_time() -> None:
    state = RegionHours("R")
    for h in range(H, H + 200):
        state.apply(
            [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)], 48
        )
    pruned = state.prune(72)
    assert pruned == list(range(H, H + 199 - 72))
    assert min(state.solar) == min(state.weather) == H + 199 - 72


def test_feed_progress_floor() -> None:
    progress = FeedProgress()
    assert progress.floor() == NOT_YET_READ  # nothing reported: anything may come
    progress.set_count("s", 2)
    progress.set_count("w", 1)
    progress.update("s", 0, H + 10, False)
    progress.update("w", 0, H + 50, True)
    assert progress.floor() == NOT_YET_READ  # solar partition 1 has not reported
    progress.update("s", 1, H + 3, False)
    assert progress.floor() == H + 3
    progress.update("s", 1, H + 90, True)
    assert progress.floor() == H + 10
    progress.update("s", 0, H + 20, True)
    assert progress.floor() is None  # all read to the end: the watermark alone decides
    progress.update("s", 0, H, False)  # a replay moves back
    assert progress.floor() == H


def test_floor_holds_the_watermark_and_retention() -> None:
    state = RegionHours("R")
    for h in range(H, H + 200):
        state.apply(
            [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)], 48
        )
    assert state.effective_watermark(H + 5) == H + 5
    assert state.prune(72, floor=NOT_YET_READ) == []
    assert state.prune(72, floor=H + 80) == list(range(H, H + 8))
    late = state.apply([Solar(H + 50, Position(0, 999, 0), 1.0)], 48, floor=H + 60)
    assert late.late == 0


def test_prune_is_incremental_and_catches_late_records_put_back() -> None:
    state = RegionHours("R")

    def both(h: int) -> list[Solar | Weather]:
        return [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)]

    for h in range(H, H + 100):
        state.apply(both(h), 48)
    assert state.prune(72) == list(range(H, H + 99 - 72))
    state.apply(both(H + 100), 48)
    assert state.prune(72) == [H + 99 - 72]
    late = state.apply([Solar(H + 3, Position(0, 5, 0), 2.0)], 48)
    assert late.late == 1 and H + 3 in state.solar
    assert state.prune(72, touched=late.hours) == [H + 3]
    assert min(state.solar) == H + 100 - 72


def test_uncommitted_is_the_lowest_hour_at_or_after_the_committed_offset() -> None:
    tracker = Uncommitted()
    assert tracker.lowest(None) is None
    tracker.add(10, H + 5)
    tracker.add(20, H + 2)  # lower and later: the entry before can never be the answer again
    tracker.add(30, H + 9)
    assert tracker.lowest(None) == H + 2
    assert tracker.lowest(20) == H + 2  # offset 20 is the next to read: it comes back after a crash
    assert tracker.lowest(21) == H + 9
    assert tracker.lowest(31) is None
    tracker.add(40, H + 1)
    tracker.add(35, H + 7)  # read again from an earlier offset: what came after it is read again too
    assert tracker.lowest(31) == H + 7


def test_feed_progress_uncommitted_is_the_lowest_report() -> None:
    progress = FeedProgress()
    assert progress.uncommitted() is None
    progress.update("s", 0, H + 10, False, 100, H + 4)
    progress.update("s", 1, H + 12, True, 80, None)
    progress.update("w", 0, H + 9, False, 50, H + 6)
    assert progress.uncommitted() == H + 4
    progress.update("s", 0, H + 10, False, 100, None)  # committed since
    assert progress.uncommitted() == H + 6


def test_keep_from_holds_retention_back_and_the_next_prune_catches_up() -> None:
    state = RegionHours("R")
    for h in range(H, H + 200):
        state.apply(
            [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)], 48
        )
    assert state.prune(72, keep_from=H + 100) == list(range(H, H + 100))
    assert state.pruned_below == H + 100
    assert state.prune(72, keep_from=H + 20) == []  # held further back: nothing more goes
    assert state.pruned_below == H + 100  # history below it may still be missing
    assert state.prune(72) == list(range(H + 100, H + 199 - 72))
    assert min(state.solar) == H + 199 - 72
