"""Liveness as pure state: a crash ends the worker with one line, a full disk named as the cause."""

from __future__ import annotations

import errno

from solar_agents.observe.health import Failing, Health, disk_full, pending


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


def test_a_full_data_dir_is_named_as_the_cause() -> None:
    health = Health("/srv/state")
    line = health.crashed("align", rocksdb_full())
    assert line is not None and line.startswith("stopped: DATA_DIR (/srv/state) is full")
    assert "No space left on device" in line and "\n" not in line
    assert health.crashed("align", rocksdb_full()) is None  # said once
    assert health.live([]) == (False, line)
    assert health.crashes == {"align": 2}


def test_any_other_crash_ends_the_worker_naming_the_agent() -> None:
    health = Health("/d")
    assert health.live([]) == (True, None)
    line = health.crashed("write", RuntimeError("boom\nwith a second line"))
    assert line == (
        "stopped: agent write failed with RuntimeError: boom with a second line; a new worker goes on from "
        "the last commit: input not yet written is read again"
    )
    assert health.live([]) == (False, line)


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
    assert health.live([]) == (False, "stopping")
