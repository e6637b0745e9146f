"""Phase 6, restore: stop the 1x worker, delete DATA_DIR, restart; the cold restore from the changelogs,
then a check that the restored state is complete and its rows still equal the SQL peer's."""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import confluent_kafka

from benchmarks import kafka_io, sqlpeer, synth
from benchmarks.changelog import ChangelogTally
from benchmarks.context import Group, Run
from benchmarks.phases import profiling
from benchmarks.phases.live import next_hours
from benchmarks.phases.sql_peer import load_raw
from benchmarks.worker import LogEvent, WorkerProcess, remove_state
from solar_agents.core.wire import block_hours, table_value


def _hours_in(value: bytes | None) -> int:
    """Hours held by a value of the hour table: a block, or one hour (earlier versions)."""
    if value is None:
        return 0
    data = table_value(value)
    return len(block_hours(data)) if isinstance(data, dict) else 1


def restore(run: Run) -> None:
    group = run.g1
    stop_seconds = run.w1.stop()
    run.progress(f"restore: 1x worker stopped in {stop_seconds:.1f} s; counting changelog records")
    # Every table's changelog: hours and regions, and whatever tables the pipeline has besides.
    changelogs = kafka_io.changelog_topics(run.bootstrap, group.name)
    hours_topic = f"{group.name}-hours-changelog"
    live_keys: dict[bytes | None, int] = {}  # key -> hours its latest value holds
    tally = ChangelogTally()

    def on_message(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        tally(topic, partition, offset, key, value)
        if topic == hours_topic:
            live_keys[key] = _hours_in(value)

    counted = kafka_io.read_topics(run.bootstrap, changelogs, on_message=on_message)
    expected_hours = sum(live_keys.values())
    remove_state(group.data_dir)
    worker = run.worker(group, "1x-restore").start()
    spy = profiling.start(run, worker, "restore")
    cpu = run.cpu_snapshot(worker)
    timeout = max(300.0, counted.messages / 1000)
    run.progress(f"restore: {counted.messages:,} changelog records; worker restarted without DATA_DIR")
    try:
        ready = _wait_with_progress(run, worker, "[^Worker]: Ready", timeout, "restore")
        cpu_used = run.cpu_used(worker, cpu)
    finally:
        prof = profiling.finish(run, spy, "restore", "cold restore, from the worker's start to its Ready")
    if prof:
        run.profile["restore"] = prof
    events = list(worker.events())
    started_at = next(
        (e.at for e in events if e.event == "[^---Recovery]: Restoring state from changelog topics..."),
        None,
    )
    done_at = next((e.at for e in events if e.event == "[^---Recovery]: Recovery complete"), None)
    highwaters = _faust_highwaters(events)
    fig: dict[str, Any] = {
        "changelog_records": counted.messages,
        "changelog_records_by_topic": tally.records_by_topic(),
        "changelog_max_value_bytes_by_topic": tally.max_value_bytes_by_topic(),
        "changelog_read_rate_confluent": round(counted.rate) if counted.seconds > 0 else None,
        "faust_highwater_records_by_topic": highwaters,
        "faust_highwater_records": None if highwaters is None else sum(highwaters.values()),
        "stop_seconds": round(stop_seconds, 2),
        "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
        "cpu_seconds": cpu_used,
        "profiled": bool(prof),
    }
    if started_at is not None and done_at is not None:
        seconds = done_at - started_at
        fig.update(seconds=round(seconds, 2), rate=round(counted.messages / seconds) if seconds > 0 else None)
    else:
        run.notes.append(
            "restore: no 'Restoring state from changelog topics' / 'Recovery complete' log lines"
        )
    for topic, n in (highwaters or {}).items():
        if n < tally.records[topic]:
            run.notes.append(
                f"restore: Faust's highwaters (the broker's ListOffsets answer) cover {n:,} of "
                f"{tally.records[topic]:,} records of {topic}: its restore stops short of the end"
            )
    # Check the restored state: one more hour for every region makes the align agent load its state from
    # the tables (the 'state_loaded' log line), and writes rows that need the restored window and lags.
    _produce_pairs(run, run.g1, next_hours(run, run.o.regions))
    loaded = worker.wait_event(lambda e: e.event == "state_loaded", 60, after=worker.started_at - 1)
    fig["state_hours"] = loaded.fields.get("hours")
    fig["expected_state_hours"] = expected_hours
    fig["state_complete"] = loaded.fields.get("hours") == expected_hours
    load_raw(run)
    sqlpeer.compute_features(run.conn, run.peer_table, run.window_hours)
    comparison: dict[str, Any] = {}
    deadline = time.monotonic() + 30 + 2 * run.batch_wait()
    while time.monotonic() < deadline:
        comparison = sqlpeer.compare(run.conn, group.table, run.peer_table)
        if comparison["match"]:
            break
        time.sleep(1.0)
    run.compare["after_live_and_restore"] = comparison
    fig["rows_match_after_restore"] = comparison.get("match")
    run.figures["restore"] = fig
    worker.stop()
    run.progress(
        f"restore: {counted.messages:,} records in {fig.get('seconds')} s = {fig.get('rate')} records/s; "
        f"state {fig['state_hours']}/{expected_hours} hours; "
        f"rows {'MATCH' if comparison.get('match') else 'MISMATCH'}"
    )


def _wait_with_progress(run: Run, worker: WorkerProcess, event: str, timeout: float, label: str) -> LogEvent:
    deadline = time.monotonic() + timeout
    run.progress.reset()
    while True:
        try:
            return worker.wait_event(lambda e: e.event == event, 2.0, after=worker.started_at - 1)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise
            run.progress.tick(f"{label}: waiting for {event!r}, {time.time() - worker.started_at:.0f} s")


def _faust_highwaters(events: list[LogEvent]) -> dict[str, int] | None:
    """Records Faust means to restore per changelog topic: the sum of (highwater + 1) of its log table.

    The table names a topic on its first row and repeats it with a ditto mark below.
    """
    for event in events:
        if event.event.startswith("[^---Recovery]: Highwater for active changelog partitions"):
            totals: Counter[str] = Counter()
            topic = ""
            for line in event.event.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) == 3 and cells[1].isdigit() and re.fullmatch(r"-?\d+", cells[2]):
                    if cells[0] and cells[0] != "\u3003":
                        topic = cells[0]
                    totals[topic] += int(cells[2]) + 1
            return dict(sorted(totals.items()))
    return None


def _produce_pairs(run: Run, group: Group, pairs: list[tuple[synth.Obs, synth.Obs]]) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": run.bootstrap, "linger.ms": 1})
    for solar, weather in pairs:
        for obs in (solar, weather):
            feed, key, value = synth.encode(obs, run.regions)
            producer.produce(run.topic(group, feed), value=value, key=key)
    producer.flush(30)
