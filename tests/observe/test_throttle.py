"""Dead-letter logging throttled: the first of each kind of reason in full, then counts per interval."""

from __future__ import annotations

from solar_agents.observe.throttle import OTHER, Throttle, reason_kind


def test_reason_kind_drops_the_values() -> None:
    assert reason_kind("not JSON: Expecting value at line 1 column 1") == "not JSON"
    assert reason_kind("field 'production_mw': Input should be greater than or equal to 0 (got -5)") == (
        "field 'production_mw'"
    )
    assert reason_kind("missing field 'timestamp'") == "missing field 'timestamp'"
    assert reason_kind("region limit: this worker holds MAX_REGIONS=3 regions") == "region limit"
    assert reason_kind("") == "unknown"


def test_first_of_each_kind_then_a_summary_of_counts() -> None:
    throttle = Throttle()
    assert throttle.first("not JSON", 0.0)
    assert [throttle.first("not JSON", t) for t in (1.0, 2.0, 3.0)] == [False, False, False]
    assert throttle.first("field 'x'", 4.0)
    assert not throttle.first("field 'x'", 5.0)
    summary = throttle.summary(60.0)
    assert summary == {
        "counts": {"not JSON": 4, "field 'x'": 2},
        "total": 6,
        "not_logged": 4,
        "seconds": 60.0,
    }
    assert throttle.summary(120.0) is None  # nothing since
    assert not throttle.first("not JSON", 130.0)  # still known: counted, not logged again
    assert throttle.summary(190.0) == {
        "counts": {"not JSON": 1},
        "total": 1,
        "not_logged": 1,
        "seconds": 60.0,
    }


def test_every_occurrence_logged_in_full_needs_no_summary() -> None:
    throttle = Throttle()
    assert throttle.first("a", 0.0) and throttle.first("b", 1.0)
    assert throttle.summary(60.0) is None


def test_endless_variety_is_bounded() -> None:
    throttle = Throttle(max_kinds=3)
    logged = [throttle.first(f"kind {i}", float(i)) for i in range(10)]
    assert logged == [True, True, True, True] + [False] * 6  # three kinds and "other" once
    summary = throttle.summary(10.0)
    assert summary is not None and summary["counts"] == {OTHER: 7, "kind 0": 1, "kind 1": 1, "kind 2": 1}
