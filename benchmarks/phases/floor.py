"""Phase 4, floor: what Faust itself costs here. Runs the bare Faust app ``benchmarks.floor`` (its own
process) in a fresh group over the 1x raw topics, once right before and once right after the 1x backfill."""

from __future__ import annotations

import contextlib
import os
import statistics
import time

from benchmarks.context import Group, Run
from benchmarks.source import ROOT
from benchmarks.worker import LogEvent, WorkerProcess, remove_state


def floor(run: Run, when: str = "before") -> None:
    """The bare-Faust floor: ``benchmarks.floor`` in a fresh group over the 1x raw topics, from its Ready
    to the ack of the last raw message. Run twice, right before the 1x backfill (alone on the machine)
    and right after it (the caught-up 1x worker idles beside it): this machine's speed drifts by a
    third within minutes, and the ratio to the mean of the two bracketing runs drifts least."""
    suffix = "" if when == "before" else f"-{when}"
    group = Group(
        f"bf-floor{suffix}",
        run.g1.solar,
        run.g1.weather,
        "features_floor",
        run.o.workdir / f"state-floor{suffix}",
    )
    env = group.env(run.broker, run.pg, run.o.settings, run.source)
    # The snapshot of solar_agents first (the floor takes its settings and broker workarounds from it),
    # then this checkout, for benchmarks.floor itself.
    path = env["PYTHONPATH"].split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join([path[0], str(ROOT), *path[1:]])
    env["FLOOR_MESSAGES"] = str(run.messages_1x)
    remove_state(group.data_dir)
    worker = WorkerProcess(
        env, run.o.workdir / f"worker-floor{suffix}.log", cwd=run.o.workdir, app="benchmarks.floor:app"
    )
    run.workers.append(worker)
    worker.start()
    ready = worker.wait_ready()
    cpu = run.cpu_snapshot(worker)
    done = _wait_floor(run, worker, ready)
    cpu_used = run.cpu_used(worker, cpu)
    stop_seconds = worker.stop()
    last_ack = float(done.fields.get("last_ack_at") or done.at)
    first_batch = done.fields.get("first_batch_at")
    seconds = last_ack - ready.at
    figure = {
        "messages": run.messages_1x,
        "seconds": round(seconds, 2),
        "rate": round(run.messages_1x / seconds) if seconds > 0 else None,
        "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
        "first_batch_after_seconds": None if first_batch is None else round(first_batch - ready.at, 2),
        # More events than messages: some were delivered again after a rebalance.
        "events": done.fields.get("events"),
        "messages_by_topic": done.fields.get("by_topic"),
        "batch_size": int(run.setting("ingest_batch_size")),
        "batch_within_seconds": float(run.setting("ingest_batch_max_wait_seconds")),
        "cpu_seconds": cpu_used,
        "stop_seconds": round(stop_seconds, 2),
        "log_warnings": worker.log_warnings(),
        "what": "faust -A benchmarks.floor:app worker, fresh group: one agent per raw topic, "
        "noack_take(INGEST_BATCH_SIZE, within=INGEST_BATCH_MAX_WAIT_SECONDS) and an ack of every event; "
        "from Ready to the last ack",
    }
    rate = figure["rate"]
    run.progress(f"floor {when}: {run.messages_1x:,} messages in {seconds:.2f} s = {rate} msg/s")
    if when == "before":
        run.figures["floor"] = figure
        return
    # The floor's figure is the run before; its rate the mean of both runs, each kept beside it.
    first = run.figures["floor"]
    rates = [first["rate"], figure["rate"]]
    first["runs"] = {"before_backfill": dict(first), f"{when}_backfill": figure}
    first["rates"] = rates
    if all(rates):
        first["rate"] = round(statistics.mean(rates))
    first["what"] += "; rate: mean of a run right before and one right after the 1x backfill"


def _wait_floor(run: Run, worker: WorkerProcess, ready: LogEvent, stall_seconds: float = 60.0) -> LogEvent:
    """The floor's ``floor_done`` line; gives up when its count stands still for ``stall_seconds``."""
    last, last_change = -1, time.monotonic()
    run.progress.reset()
    while True:
        with contextlib.suppress(TimeoutError):
            return worker.wait_event(lambda e: e.event == "floor_done", 1.0, after=ready.at - 1)
        acked = max(
            (int(e.fields.get("messages", 0)) for e in worker.events() if e.event == "floor_progress"),
            default=0,
        )
        now = time.monotonic()
        if acked != last:
            last, last_change = acked, now
        if now - last_change > stall_seconds:
            raise RuntimeError(
                f"floor: no progress for {stall_seconds:.0f} s at {acked:,}/{run.messages_1x:,} "
                f"messages:\n{worker.tail()}"
            )
        run.progress.tick(
            f"floor: {acked:,}/{run.messages_1x:,} messages acked, {time.time() - ready.at:.0f} s since ready"
        )
