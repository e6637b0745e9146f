"""The ``backfill`` command (``faust -A solar_agents backfill``: a worker, in the command's own process, that
exits by itself once every input is processed, written and committed), in a fresh group over the 1x
history: how fast it starts and how fast it finishes.

Not the 1x backfill: that one is a long-running worker (``worker``) that the live phase and the restore go
on with. This one is started as an operator starts a backfill and waited for until it exits: process start
to its first raw message, Ready to its last write (the rate), last write to exit, and its exit code; then
its rows against the SQL peer's and its committed offsets against the raw messages (everything flushed and
committed before the exit).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import cpu as cpu_module
from benchmarks import kafka_io, sqlpeer
from benchmarks.context import Group, Run
from benchmarks.first_message import start_to_first_message
from benchmarks.phases.backfill import prepare_table
from benchmarks.worker import WorkerProcess, remove_state


def backfill_command(run: Run) -> None:
    figure = run_backfill_command(run, "backfill-command")
    run.figures["backfill_command"] = figure
    if figure["exit_code"] != 0 or not figure["rows_match"]:
        raise RuntimeError(
            f"backfill command: exit code {figure['exit_code']}, rows "
            f"{'match' if figure['rows_match'] else 'differ from'} the SQL peer's"
        )


def run_backfill_command(
    run: Run,
    name: str,
    loop: str | None = None,
    messages: int | None = None,
    stall_seconds: float = 90.0,
) -> dict[str, Any]:
    """One ``backfill`` in a fresh group and table named after ``name`` (its log ``worker-NAME.log``) over
    the 1x raw topics, on Faust's event loop ``loop`` (None: asyncio's); its figure. ``messages``: what the
    topics hold (default: the history; more after the live phase), the SQL peer's table computed from
    them."""
    messages = run.messages_1x if messages is None else messages
    table = "features_" + name.replace("-", "_")
    group = Group(f"bc-{name}", run.g1.solar, run.g1.weather, table, run.o.workdir / f"state-{name}")
    prepare_table(run, table)
    remove_state(group.data_dir)
    env = group.env(run.broker, run.pg, run.o.settings, run.source)
    worker = WorkerProcess(
        env, run.o.workdir / f"worker-{name}.log", cwd=run.o.workdir, command="backfill", loop=loop
    )
    run.workers.append(worker)
    worker.start()
    ready = worker.wait_ready()
    cpu = run.cpu_snapshot(worker)
    code, last_snapshot = _wait_exit(run, worker, table, stall_seconds)
    # The process is gone: the last snapshot taken while it ran (at most half a second before its exit).
    cpu_used = cpu_module.used(cpu, last_snapshot)
    assert worker.exited_at is not None
    n_writes, first_write, last_write = sqlpeer.writes_of(run.conn, table)
    comparison = sqlpeer.compare(run.conn, table, run.peer_table)
    committed = kafka_io.committed_total(run.bootstrap, group.name, [group.solar, group.weather])
    done = next((e for e in worker.events() if e.event == "backfill_done"), None)
    seconds = None if last_write is None else last_write - ready.at
    figure: dict[str, Any] = {
        "command": " ".join(["faust", *worker.argv()[1:]]),
        "loop": loop or "asyncio",
        "loop_seen": worker.loop_seen(),
        "messages": messages,
        "rows": comparison.get("pipeline_rows"),
        "seconds": None if seconds is None else round(seconds, 2),
        "rate": round(messages / seconds) if seconds and code == 0 else None,
        "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
        **start_to_first_message(run.bootstrap, worker, group.name),
        "first_row_after_seconds": None if first_write is None else round(first_write - ready.at, 2),
        "write_statements": n_writes,
        "exit_code": code,
        # From the commit-side time of its last write (the statement trigger) to the process's end.
        "last_write_to_exit_seconds": (
            None if last_write is None else round(worker.exited_at - last_write, 2)
        ),
        "backfill_done_to_exit_seconds": None if done is None else round(worker.exited_at - done.at, 2),
        "last_write_to_backfill_done_seconds": (
            None if done is None or last_write is None else round(done.at - last_write, 2)
        ),
        "rows_match": comparison.get("match"),
        "committed_messages": committed,
        "committed_all": committed == messages,
        "cpu_seconds": cpu_used,
        # Its own and its helpers' CPU, start to exit (wait4), per raw message.
        "cpu_seconds_start_to_exit": (
            None if worker.exit_cpu_seconds is None else round(worker.exit_cpu_seconds, 2)
        ),
        "cpu_per_message_ms_start_to_exit": (
            None
            if worker.exit_cpu_seconds is None
            else cpu_module.per_message_ms(worker.exit_cpu_seconds, messages)
        ),
        "log_warnings": worker.log_warnings(),
    }
    run.compare["backfill_command" + ("" if name == "backfill-command" else f"_{name.replace('-', '_')}")] = (
        comparison
    )
    run.progress(
        f"backfill command {name}: exit {code}, {figure['rate']} raw msg/s, first message "
        f"{figure['start_to_first_message_seconds']} s after the start, exit "
        f"{figure['last_write_to_exit_seconds']} s after the last write; rows "
        f"{'MATCH' if comparison.get('match') else 'MISMATCH'}; committed {committed:,}/{messages:,}"
    )
    return figure


def _wait_exit(
    run: Run, worker: WorkerProcess, table: str, stall_seconds: float
) -> tuple[int, dict[str, float]]:
    """The worker's exit code once it exits by itself, and the last CPU snapshot taken while it ran (one
    every half second: /proc has nothing of it after its exit); stops it and raises when no row was added
    for ``stall_seconds``."""
    last_count, last_change = -1, time.monotonic()
    snapshot = run.cpu_snapshot(worker)
    run.progress.reset()
    while True:
        try:
            return worker.wait_exit(0.5), snapshot
        except TimeoutError:
            now_cpu = run.cpu_snapshot(worker)
            # Taken as it exited, it reads nothing of it or of its helpers: not kept.
            if all(now_cpu[k] >= snapshot[k] for k in ("worker", "helpers")):
                snapshot = now_cpu
        count = sqlpeer.count_rows(run.conn, table)
        now = time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        if now - last_change > stall_seconds:
            worker.stop()
            raise RuntimeError(f"backfill command: no new rows for {stall_seconds:.0f} s:\n{worker.tail()}")
        run.progress.tick(
            f"backfill command {table}: {count:,} rows, {time.time() - worker.started_at:.0f} s since start"
        )
