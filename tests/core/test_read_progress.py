"""The ingest's read progress as the align agent learns it: reports, replay markers, and their wire forms."""

from __future__ import annotations

import json

from solar_agents.core.read_progress import (
    NOT_YET_READ,
    Feed,
    FeedProgress,
    PartitionProgress,
    ProgressReport,
    RawPartition,
    Replay,
    ReplayMarker,
    ahead_of_slowest,
    decode_control,
    load_replay,
    replay_value,
)

H = 430_000  # an hour in 2019
SOLAR_0, SOLAR_1, WEATHER_0 = (
    RawPartition(Feed.SOLAR, 0),
    RawPartition(Feed.SOLAR, 1),
    RawPartition(Feed.WEATHER, 0),
)


def progress(
    hour: int | None, caught_up: bool, offset: int = 0, uncommitted: int | None = None
) -> PartitionProgress:
    return PartitionProgress(
        latest_hour=hour, caught_up=caught_up, next_offset=offset, uncommitted_hour=uncommitted
    )


def test_feed_progress_floor() -> None:
    state = FeedProgress()
    assert state.floor() == NOT_YET_READ  # nothing reported: anything may come
    state.set_count(Feed.SOLAR, 2)
    state.set_count(Feed.WEATHER, 1)
    state.update(SOLAR_0, progress(H + 10, False))
    state.update(WEATHER_0, progress(H + 50, True))
    assert state.floor() == NOT_YET_READ  # solar partition 1 has not reported
    state.update(SOLAR_1, progress(H + 3, False))
    assert state.floor() == H + 3
    state.update(SOLAR_1, progress(H + 90, True))
    assert state.floor() == H + 10
    state.update(SOLAR_0, progress(H + 20, True))
    assert state.floor() is None  # all read to the end: the watermark alone decides
    state.update(SOLAR_0, progress(H, False))  # a replay moves back
    assert state.floor() == H


def test_the_floor_is_kept_until_a_report_a_replay_or_a_new_partition_count_changes_it() -> None:
    state = FeedProgress()
    state.apply(ProgressReport(Feed.SOLAR, 1, {0: progress(H + 5, False)}))
    state.apply(ProgressReport(Feed.WEATHER, 1, {0: progress(H + 7, False)}))
    assert state.floor() == state.floor() == H + 5  # asked for every region: worked out once
    state.apply(ProgressReport(Feed.SOLAR, 1, {0: progress(H + 9, False)}))
    assert state.floor() == H + 7
    state.restart({WEATHER_0: 0})  # a replay: nothing known of it until it reports
    assert state.floor() == NOT_YET_READ
    state.apply(ProgressReport(Feed.WEATHER, 1, {0: progress(H + 8, False)}))
    assert state.floor() == H + 8
    state.set_count(Feed.SOLAR, 2)  # a partition added: it has not reported
    assert state.floor() == NOT_YET_READ


def test_partitions_ahead_of_the_slowest_by_more_than_the_skew_are_held() -> None:
    behind = {"s0": 1000, "s1": 1048, "s2": 1049, "w0": 5000}
    assert ahead_of_slowest(behind, 48) == {"s2", "w0"}
    assert ahead_of_slowest(behind, 0) == {"s1", "s2", "w0"}
    assert ahead_of_slowest(behind, 4000) == set()
    # The slowest is never held, so the read always moves on; one partition alone has nothing to wait for.
    assert ahead_of_slowest({"s0": 1000, "s1": 1000}, 0) == set()
    assert ahead_of_slowest({"w0": 9000}, 0) == set()
    assert ahead_of_slowest({}, 0) == set()


def test_feed_progress_uncommitted_is_the_lowest_report() -> None:
    state = FeedProgress()
    assert state.uncommitted() is None
    state.update(SOLAR_0, progress(H + 10, False, 100, H + 4))
    state.update(SOLAR_1, progress(H + 12, True, 80, None))
    state.update(WEATHER_0, progress(H + 9, False, 50, H + 6))
    assert state.uncommitted() == H + 4
    state.update(SOLAR_0, progress(H + 10, False, 100, None))  # committed since
    assert state.uncommitted() == H + 6


def test_a_report_round_trips_as_named_fields() -> None:
    report = ProgressReport(Feed.SOLAR, 2, {0: progress(H + 10, False, 120, H + 2), 1: progress(None, True)})
    value = report.encode()
    assert decode_control(value) == report
    data = json.loads(value)
    assert data["feed"] == "solar"
    assert data["partitions"][0] == {
        "partition": 0,
        "latest_hour": H + 10,
        "caught_up": False,
        "next_offset": 120,
        "uncommitted_hour": H + 2,
    }
    state = FeedProgress()
    assert state.apply(report) and not state.apply(report)  # the same report again changes nothing
    assert state.offset(SOLAR_0) == 120 and state.offset(WEATHER_0) is None
    assert state.uncommitted() == H + 2


def test_a_replay_marker_and_table_value_round_trip() -> None:
    replay = Replay(H + 100, "DE", {SOLAR_0: 120, WEATHER_0: 57})
    marker = ReplayMarker(replay, {SOLAR_0: 3, WEATHER_0: 0})
    assert decode_control(marker.encode()) == marker
    assert json.loads(marker.encode())["moved"][0] == {
        "feed": "solar",
        "partition": 0,
        "start": 3,
        "until": 120,
    }
    assert load_replay(json.loads(json.dumps(replay_value(replay)))) == replay
    assert Replay(None, None, {}).hides("DE", H) is False
    assert replay.hides("DE", H + 99) and not replay.hides("DE", H + 100) and not replay.hides("FR", H)


def test_a_replay_ends_once_the_reports_pass_where_it_stopped() -> None:
    replay = Replay(H + 100, "DE", {SOLAR_0: 120, WEATHER_0: 57})
    marker = decode_control(ReplayMarker(replay, {SOLAR_0: 3, WEATHER_0: 0}).encode())
    assert isinstance(marker, ReplayMarker)
    state = FeedProgress()
    state.restart(marker.starts)
    reports = (
        ProgressReport(Feed.SOLAR, 2, {0: progress(H + 10, False, 120, H + 2), 1: progress(None, True)}),
        ProgressReport(Feed.WEATHER, 1, {0: progress(H + 12, True, 57)}),
    )
    for sent in reports:
        report = decode_control(sent.encode())
        assert isinstance(report, ProgressReport)
        state.apply(report)
    assert replay.done(state)  # solar 0 at 120, weather 0 at 57
    assert state.floor() == H + 10 and state.uncommitted() == H + 2
    state.apply(ProgressReport(Feed.SOLAR, 2, {0: progress(H + 11, False, 119), 1: progress(None, True)}))
    assert not replay.done(state) and state.uncommitted() is None
    assert set(state.partitions) == {SOLAR_0, SOLAR_1, WEATHER_0}
    assert state.floor() == H + 11


def test_a_replay_restarts_the_moved_partitions_and_unknown_messages_are_ignored() -> None:
    state = FeedProgress()
    state.apply(ProgressReport(Feed.SOLAR, 1, {0: progress(H + 10, True, 120)}))
    state.apply(ProgressReport(Feed.WEATHER, 1, {0: progress(H + 10, True, 57)}))
    assert state.floor() is None
    state.restart({SOLAR_0: 3})
    assert state.floor() == NOT_YET_READ and state.offset(SOLAR_0) == 3  # read again: nothing known of it
    assert decode_control(b'{"type":"something newer"}') is None
