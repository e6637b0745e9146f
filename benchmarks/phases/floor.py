"""Phase 4, floor: what Faust itself costs here. Runs the bare Faust app ``benchmarks.floor`` (its own
process) in a fresh group over the 1x raw topics, with the pipeline's tuned consumer settings (``floor``)
and with Faust's own defaults (``floor_defaults``), each once right before and once right after the 1x
backfill."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Any

from benchmarks.context import Group, Run
from benchmarks.source import ROOT
from benchmarks.worker import LogEvent, WorkerProcess, remove_state

WHAT = {
    False: "faust -A benchmarks.floor:app worker, fresh group, the pipeline's consumer settings and "
    "broker workarounds: one agent per raw topic, noack_take(INGEST_BATCH_SIZE, "
    "within=INGEST_BATCH_MAX_WAIT_SECONDS) and an ack of every event; from Ready to the last ack",
    True: "faust -A benchmarks.floor:app worker with FLOOR_FAUST_DEFAULTS=1, fresh group: Faust's own "
    "consumer defaults (given only the broker's address and, for the local broker's first join, the "
    "pipeline's session timeout and heartbeat interval), no broker workarounds; the same agents; from "
    "Ready to the last ack",
}


def floor(run: Run, when: str = "before", defaults: bool = False) -> None:
    """A bare-Faust floor (``figures.floor``, or ``figures.floor_defaults`` with Faust's defaults) over the
    1x raw topics. Run twice, right before the 1x backfill (alone on the machine) and right after it (the
    caught-up 1x worker idles beside it): this machine's speed drifts by a third within minutes, and the
    ratio to the mean of the two bracketing runs drifts least."""
    key = "floor_defaults" if defaults else "floor"
    name = key.replace("_", "-") + ("" if when == "before" else f"-{when}")
    figure = run_floor(run, name, defaults=defaults)
    run.progress(
        f"{key} {when}: {figure['messages']:,} messages in {figure['seconds']:.2f} s = {figure['rate']} "
        f"msg/s; first message {figure['start_to_first_message_seconds']} s after the start; "
        f"{figure['cpu_per_message_ms']} ms CPU per message"
    )
    if when == "before":
        run.figures[key] = figure
        return
    # The floor's figure is the run before; its rate (and the other means) of both runs, each kept beside it.
    first = run.figures[key]
    first["runs"] = {"before_backfill": dict(first), f"{when}_backfill": figure}
    first["rates"] = [first["rate"], figure["rate"]]
    for field in ("rate", "start_to_first_message_seconds", "cpu_per_message_ms"):
        values = [first["runs"]["before_backfill"].get(field), figure.get(field)]
        if all(v is not None for v in values):
            mean = statistics.mean(values)
            first[field] = round(mean) if field == "rate" else round(mean, 4 if "cpu" in field else 2)
    first["what"] += (
        "; rate, start to first message and CPU per message: means of a run right before and one right "
        "after the 1x backfill"
    )


def run_floor(
    run: Run,
    name: str,
    defaults: bool,
    loop: str | None = None,
    solar: str | None = None,
    weather: str | None = None,
    messages: int | None = None,
) -> dict[str, Any]:
    """One run of the floor app in a fresh group named after ``name`` (its log ``worker-NAME.log``), over
    the 1x raw topics unless others are given; its figure."""
    messages = run.messages_1x if messages is None else messages
    group = Group(
        f"bf-{name}",
        solar or run.g1.solar,
        weather or run.g1.weather,
        "features_floor",
        run.o.workdir / f"state-{name}",
    )
    env = group.env(run.broker, run.pg, run.o.settings, run.source)
    # The snapshot of solar_agents first (the floor takes its settings and broker workarounds from it),
    # then this checkout, for benchmarks.floor itself.
    path = env["PYTHONPATH"].split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join([path[0], str(ROOT), *path[1:]])
    env["FLOOR_MESSAGES"] = str(messages)
    if defaults:
        env["FLOOR_FAUST_DEFAULTS"] = "1"
    remove_state(group.data_dir)
    worker = WorkerProcess(
        env, run.o.workdir / f"worker-{name}.log", cwd=run.o.workdir, app="benchmarks.floor:app", loop=loop
    )
    run.workers.append(worker)
    worker.start()
    ready = worker.wait_ready()
    cpu = run.cpu_snapshot(worker)
    done = _wait_floor(run, worker, ready, messages)
    cpu_used, cpu_per_message = run.cpu_per_message(worker, cpu, messages)
    cpu_from_start = worker.cpu_seconds() + worker.helpers_cpu_seconds()
    stop_seconds = worker.stop()
    last_ack = float(done.fields.get("last_ack_at") or done.at)
    first_batch = done.fields.get("first_batch_at")
    first_message = done.fields.get("first_message_at")
    seconds = last_ack - ready.at
    return {
        "messages": messages,
        "seconds": round(seconds, 2),
        "rate": round(messages / seconds) if seconds > 0 else None,
        "start_to_ready_seconds": round(ready.at - worker.started_at, 2),
        # From the process's start (the command) to the first raw message in an agent.
        "start_to_first_message_seconds": (
            None if first_message is None else round(float(first_message) - worker.started_at, 2)
        ),
        "first_batch_after_seconds": None if first_batch is None else round(first_batch - ready.at, 2),
        # More events than messages: some were delivered again after a rebalance.
        "events": done.fields.get("events"),
        "messages_by_topic": done.fields.get("by_topic"),
        "batch_size": int(run.setting("ingest_batch_size")),
        "batch_within_seconds": float(run.setting("ingest_batch_max_wait_seconds")),
        "consumer_settings": "Faust defaults" if defaults else "the pipeline's",
        "loop": loop or "asyncio",
        "loop_seen": worker.loop_seen(),
        "cpu_seconds": cpu_used,
        # The process's CPU (it has no helpers) from Ready to its last ack, per raw message.
        "cpu_per_message_ms": cpu_per_message,
        "cpu_seconds_from_start": round(cpu_from_start, 2),
        "stop_seconds": round(stop_seconds, 2),
        "log_warnings": worker.log_warnings(),
        "what": WHAT[defaults],
    }


def _wait_floor(
    run: Run, worker: WorkerProcess, ready: LogEvent, messages: int, stall_seconds: float = 60.0
) -> LogEvent:
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
                f"floor: no progress for {stall_seconds:.0f} s at {acked:,}/{messages:,} "
                f"messages:\n{worker.tail()}"
            )
        run.progress.tick(
            f"floor: {acked:,}/{messages:,} messages acked, {time.time() - ready.at:.0f} s since ready"
        )
