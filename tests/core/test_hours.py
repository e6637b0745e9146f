"""Hour alignment, the choice of record per hour, watermark and retention."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from solar_agents.core.hours import (
    HOUR_US,
    InvalidTimestamp,
    Position,
    RegionHours,
    Retention,
    Solar,
    Uncommitted,
    Weather,
    hour_label,
    nearest_hour,
    to_micros,
)
from solar_agents.core.read_progress import NOT_YET_READ
from solar_agents.settings import Settings

H = 430_000  # an hour in 2019
RETENTION = Retention(reach=24, lateness_hours=48)  # 72 h behind the watermark


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
    pruned = state.prune(RETENTION)
    assert pruned == list(range(H, H + 199 - 72))
    assert min(state.solar) == min(state.weather) == H + 199 - 72


def test_floor_holds_the_watermark_and_retention() -> None:
    state = RegionHours("R")
    for h in range(H, H + 200):
        state.apply(
            [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)], 48
        )
    assert state.effective_watermark(H + 5) == H + 5
    assert state.prune(RETENTION, floor=NOT_YET_READ) == []
    assert state.prune(RETENTION, floor=H + 80) == list(range(H, H + 8))
    late = state.apply([Solar(H + 50, Position(0, 999, 0), 1.0)], 48, floor=H + 60)
    assert late.late == 0


def test_prune_is_incremental_and_catches_late_records_put_back() -> None:
    state = RegionHours("R")

    def both(h: int) -> list[Solar | Weather]:
        return [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)]

    for h in range(H, H + 100):
        state.apply(both(h), 48)
    assert state.prune(RETENTION) == list(range(H, H + 99 - 72))
    state.apply(both(H + 100), 48)
    assert state.prune(RETENTION) == [H + 99 - 72]
    late = state.apply([Solar(H + 3, Position(0, 5, 0), 2.0)], 48)
    assert late.late == 1 and H + 3 in state.solar
    assert state.prune(RETENTION, touched=late.hours) == [H + 3]
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


def test_keep_from_holds_retention_back_and_the_next_prune_catches_up() -> None:
    state = RegionHours("R")
    for h in range(H, H + 200):
        state.apply(
            [Solar(h, Position(0, h, 0), 1.0), Weather(h, Position(0, h, 0), 1.0, 1.0, 1.0, 0, 0)], 48
        )
    assert state.prune(RETENTION, keep_from=H + 100) == list(range(H, H + 100))
    assert state.pruned_below == H + 100
    assert state.prune(RETENTION, keep_from=H + 20) == []  # held further back: nothing more goes
    assert state.pruned_below == H + 100  # history below it may still be missing
    assert state.prune(RETENTION) == list(range(H + 100, H + 199 - 72))
    assert min(state.solar) == H + 199 - 72


def test_retention_is_the_lateness_and_what_a_row_reads() -> None:
    assert (RETENTION.reach, RETENTION.hours) == (24, 72)  # the 24 h lag reads further than the window
    wide = Retention(reach=167, lateness_hours=10)
    assert (wide.reach, wide.hours, wide.history_from(H)) == (167, 177, H - 167)
    assert RETENTION.horizon(None) is None  # no watermark: nothing is forgotten yet
    assert RETENTION.horizon(H + 100) == H + 28
    assert RETENTION.horizon(H + 100, keep_from=H + 5) == H + 5  # held back for records read again
    assert RETENTION.horizon(H + 100, keep_from=H + 50) == H + 28
    assert RETENTION.history_kept(H + 52, H + 28) and not RETENTION.history_kept(H + 51, H + 28)
    assert RETENTION.history_kept(H, None)
    settings = Settings(_env_file=None, feature_window_hours=168, allowed_lateness_hours=10)  # type: ignore[call-arg]
    assert settings.retention == wide and settings.retention_hours == 177


def test_records_of_several_messages_are_late_as_each_message_found_them() -> None:
    """A region's records of a batch are applied at once, each message's with the floor it came with: a
    record the floor held on time when its message came is not late because a later report raised it."""

    def solar(hour: int, offset: int) -> Solar:
        return Solar(H + hour, Position(0, offset, 0), 1.0)

    def weather(hour: int, offset: int) -> Weather:
        return Weather(H + hour, Position(0, offset, 1), 10.0, 50.0, 100.0, 53.0, 10.0)

    def start() -> RegionHours:
        state = RegionHours("DE")
        state.apply([solar(150, 1), weather(150, 1)], 48)  # the watermark at H + 150
        return state

    # Message 1 came while a raw partition was still at H + 60 (the floor); message 2 after a report
    # raised the floor to H + 200.
    messages = [([weather(60, 2), solar(61, 2)], H + 60), ([weather(62, 3), solar(155, 3)], H + 200)]
    one_by_one = start()
    late = sum(one_by_one.apply(records, 48, floor).late for records, floor in messages)
    at_once = start()
    records = [r for rs, _ in messages for r in rs]
    applied = at_once.apply(records, 48, H + 200, [(0, H + 60), (2, H + 200)])
    assert late == applied.late == 1  # H + 62 in message 2: behind H + 150 - 48 once the floor rose
    assert at_once.solar == one_by_one.solar and at_once.weather == one_by_one.weather
    assert at_once.apply([], 48, H + 200).late == 0
    assert start().apply(records, 48, H + 200).late == 3  # all at the last floor: two counted wrongly
