"""Liveness as pure state: crashes counted in a window, a full disk fatal at once, a crash loop soon."""

from __future__ import annotations

import errno

from solar_agents.observe.health import CRASH_LIMIT, Failing, Health, disk_full, pending


def rocksdb_full() -> Exception:
    # What rocksdict raises when a write hits a full filesystem (its status text).
    return Exception("IO error: No space left on device: While appending to file: /data/tables/000012.log")


def test_disk_full_is_recognised_in_the_error_or_its_cause() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(rocksdb_full())
    try:
        try:
            raise rocksdb_full()
        except Exception as exc:
            raise RuntimeError("table write failed") from exc
    except RuntimeError as wrapped:
        assert disk_full(wrapped)
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(ValueError("bad"))


def test_a_full_data_dir_is_fatal_at_the_first_crash() -> None:
    health = Health("/srv/state")
    line = health.crashed("align", rocksdb_full(), now=10.0)
    assert line is not None and line.startswith("stopped: DATA_DIR (/srv/state) is full")
    assert "No space left on device" in line and "\n" not in line
    assert health.crashed("align", rocksdb_full(), now=11.0) is None  # said once
    live, reason = health.live(12.0, [])
    assert not live and reason == line


def test_other_crashes_end_the_worker_only_when_they_repeat_within_the_window() -> None:
    health = Health("/d")
    assert health.crashed("write", RuntimeError("boom"), now=0.0) is None
    assert health.live(1.0, []) == (True, None)  # one crash, restarted: live
    assert health.crashed("write", RuntimeError("boom"), now=2.0) is None
    live, reason = health.live(3.0, [])
    assert not live and reason is not None and "crash" in reason and "RuntimeError: boom" in reason
    assert health.live(63.0, []) == (True, None)  # the window passed
    for moment in range(100, 100 + CRASH_LIMIT - 1):
        assert health.crashed("ingest_solar", RuntimeError("x"), now=float(moment)) is None
    line = health.crashed("ingest_solar", RuntimeError("x"), now=110.0)
    assert line is not None and line.startswith(f"stopped: agent ingest_solar crashed {CRASH_LIMIT} times")


def test_report_and_what_a_timed_out_stop_waited_for() -> None:
    health = Health("/d")
    retrying = {"sink_write_failed": Failing(since=5.0, attempts=4, error="OperationalError: refused")}
    body = health.report(20.0, {"align": "running", "write": "down"}, retrying)
    assert body["live"] is False and body["reason"] == "agents not running: write"
    assert body["retrying"] == {
        "sink_write_failed": {"seconds": 15.0, "attempts": 4, "error": "OperationalError: refused"}
    }
    assert pending(20.0, retrying) == "sink_write_failed for 15 s (OperationalError: refused)"
    assert pending(20.0, {}) == "no retry under way"
    health.stopping = True
    assert health.live(21.0, []) == (False, "stopping")
