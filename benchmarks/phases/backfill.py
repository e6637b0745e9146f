"""The backfills: a fresh worker group over the history in the topics, from its Ready to its last row.

1x (phase 4): the measured rate, its rows compared with the SQL peer's, peak RSS and the changelog records
it wrote. 4x (phase 7): the history repeated with later years in fresh topics, for peak RSS against 1x and
the py-spy profile.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import kafka_io, sqlpeer
from benchmarks.changelog import ChangelogTally
from benchmarks.context import Run
from benchmarks.first_message import start_to_first_message
from benchmarks.phases import profiling
from benchmarks.phases.data import produce_history
from benchmarks.worker import LogEvent, WorkerProcess, remove_state


def prepare_table(run: Run, table: str) -> None:
    sqlpeer.create_features_table(run.conn, table)
    sqlpeer.install_write_log(run.conn, table)


def backfill(run: Run) -> None:
    prepare_table(run, run.g1.table)
    remove_state(run.g1.data_dir)
    worker = run.w1 = run.worker(run.g1, "1x").start()
    ready = worker.wait_ready()
    # Not profiled: this is the measured rate, and py-spy takes CPU the run would have (9 s of a 57 s
    # backfill on two cores). The 4x run carries the profile.
    cpu = run.cpu_snapshot(worker)
    expected = run.history_rows
    result = wait_backfill(run, worker, ready, expected_rows=expected, messages=run.messages_1x)
    cpu_used, cpu_per_message = run.cpu_per_message(worker, cpu, run.messages_1x)
    cpu_from_start = worker.cpu_seconds() + worker.helpers_cpu_seconds()
    run.compare["backfill_1x"] = result["compare"]
    memory = worker.memory_kib()
    run.figures["backfill"] = {
        **result["figure"],
        **start_to_first_message(run.bootstrap, worker, run.g1.name),
        "cpu_seconds": cpu_used,
        # The worker and its helper processes, from Ready to the end of the backfill, per raw message.
        "cpu_per_message_ms": cpu_per_message,
        "cpu_seconds_from_start": round(cpu_from_start, 2),
        "profiled": False,
    }
    run.figures["memory"]["hwm_1x_kib"] = memory["VmHWM"]
    run.figures["memory"]["rss_1x_kib"] = memory["VmRSS"]
    run.figures["memory"]["helpers_hwm_1x_kib"] = memory["helpers_VmHWM"]
    run.figures["memory"]["messages_1x"] = run.messages_1x
    changelog_after_backfill(run)
    if not result["compare"]["match"]:
        raise RuntimeError(f"pipeline rows differ from the SQL peer: {result['compare']}")


def changelog_after_backfill(run: Run) -> None:
    """Changelog records the 1x backfill wrote, per raw message, and each topic's largest value: the
    worker has written its last row, and the live phase has not begun."""
    tally = ChangelogTally()
    read = kafka_io.read_topics(
        run.bootstrap, kafka_io.changelog_topics(run.bootstrap, run.g1.name), on_message=tally
    )
    run.figures["changelog"] = {
        "records": read.messages,
        "raw_messages": run.messages_1x,
        "records_per_raw_message": round(read.messages / run.messages_1x, 5) if run.messages_1x else None,
        "records_by_topic": tally.records_by_topic(),
        "max_value_bytes_by_topic": tally.max_value_bytes_by_topic(),
        "value_bytes": read.bytes,
        "counted": "every <group>-*-changelog topic, right after the 1x backfill's last row",
    }
    run.progress(
        f"changelog after the backfill: {read.messages:,} records, "
        f"{run.figures['changelog']['records_per_raw_message']} per raw message"
    )


def wait_backfill(
    run: Run,
    worker: WorkerProcess,
    ready: LogEvent,
    expected_rows: int,
    messages: int,
    compare_with_peer: bool = True,
    table: str | None = None,
    stall_seconds: float = 90.0,
    budget_seconds: float = 0.0,
    peer_table: str | None = None,
) -> dict[str, Any]:
    """Wait until the table holds the expected rows (the peer's, when comparing); then measure.

    Gives up when no row was added for ``stall_seconds``, or after ``budget_seconds`` from Ready (0: no
    budget); the figure then says ``complete: false`` and has a rate estimate instead of a rate.
    """
    table = table or run.g1.table
    peer_table = peer_table or run.peer_table
    last_count, last_change = -1, time.monotonic()
    last_compare = 0.0
    comparison: dict[str, Any] = {}
    complete = False
    run.progress.reset()
    while True:
        if not worker.alive:
            raise RuntimeError(f"worker exited with {worker.returncode()}:\n{worker.tail()}")
        now = time.monotonic()
        count = sqlpeer.count_rows(run.conn, table)
        if count != last_count:
            last_count, last_change = count, now
        if count >= expected_rows:
            if compare_with_peer:
                if now - last_compare >= 2.0:
                    comparison = sqlpeer.compare(run.conn, table, peer_table)
                    last_compare = time.monotonic()
                    if comparison["match"]:
                        end, complete = comparison["last_write_at"], True
                        break
            else:
                _n, _first, last = sqlpeer.writes_of(run.conn, table)
                if last is not None and time.time() - last >= 2.0:
                    end, complete = last, True
                    break
        elapsed = time.time() - ready.at
        stalled = now - last_change > stall_seconds
        if stalled or (budget_seconds and elapsed > budget_seconds):
            why = f"no new rows for {stall_seconds:.0f} s" if stalled else f"budget of {budget_seconds:.0f} s"
            run.notes.append(f"{table}: stopped waiting ({why}) at {count:,}/{expected_rows:,} rows")
            if compare_with_peer:
                comparison = sqlpeer.compare(run.conn, table, peer_table)
            end = time.time()
            break
        done = min(1.0, count / expected_rows) if expected_rows else 1.0
        run.progress.tick(
            f"backfill {table}: {count:,}/{expected_rows:,} rows ({100 * done:.0f} %), "
            f"{elapsed:.0f} s since ready, ~{done * messages / max(elapsed, 1e-3):,.0f} raw msg/s"
        )
        time.sleep(0.5)
    n_writes, first, _last = sqlpeer.writes_of(run.conn, table)
    seconds = end - ready.at
    figure: dict[str, Any] = {
        "messages": messages,
        "rows": last_count,
        "expected_rows": expected_rows,
        "complete": complete,
        "seconds": round(seconds, 2),
        "rate": round(messages / seconds) if complete and seconds > 0 else None,
        "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
        "first_row_after_seconds": None if first is None else round(first - ready.at, 2),
        "write_statements": n_writes,
        "log_warnings": worker.log_warnings(),
    }
    if not complete and expected_rows and seconds > 0:
        # Rows written so far, as a share of the messages: only an estimate (rows trail the reads).
        figure["rate_estimate"] = round(min(1.0, last_count / expected_rows) * messages / seconds)
    if compare_with_peer:
        run.progress(
            f"backfill {table}: {'MATCH' if comparison.get('match') else 'MISMATCH'} with the SQL peer "
            f"({comparison.get('pipeline_rows')} rows); {figure['rate']} raw msg/s"
        )
    return {"figure": figure, "compare": comparison}


def backfill_4x(run: Run) -> None:
    messages = produce_history(run, run.g4, 4)
    prepare_table(run, run.g4.table)
    remove_state(run.g4.data_dir)
    worker = run.worker(run.g4, "4x").start()
    ready = worker.wait_ready()
    spy = profiling.start(run, worker, "4x")
    cpu = run.cpu_snapshot(worker)
    try:
        result = wait_backfill(
            run,
            worker,
            ready,
            expected_rows=4 * run.history_rows,
            messages=messages,
            compare_with_peer=False,
            table=run.g4.table,
            budget_seconds=run.o.budget_4x,
        )
        cpu_used = run.cpu_used(worker, cpu)
    finally:
        prof = profiling.finish(run, spy, "4x", "4x backfill, from the worker's Ready to its last row")
    if prof:
        run.profile["backfill_4x"] = prof
    memory = worker.memory_kib()
    worker.stop()
    run.figures["backfill_4x"] = {**result["figure"], "cpu_seconds": cpu_used, "profiled": bool(prof)}
    mem = run.figures["memory"]
    mem.update(
        hwm_4x_kib=memory["VmHWM"],
        rss_4x_kib=memory["VmRSS"],
        helpers_hwm_4x_kib=memory["helpers_VmHWM"],
        messages_4x=messages,
        complete_4x=result["figure"]["complete"],
    )
    if mem.get("hwm_1x_kib"):
        mem["hwm_ratio_4x_to_1x"] = round(memory["VmHWM"] / mem["hwm_1x_kib"], 3)
        # With its helper processes (each one's peak, summed): the align step's state lives in one.
        total_1x = mem["hwm_1x_kib"] + mem.get("helpers_hwm_1x_kib", 0)
        mem["hwm_with_helpers_ratio_4x_to_1x"] = round(
            (memory["VmHWM"] + memory["helpers_VmHWM"]) / total_1x, 3
        )
