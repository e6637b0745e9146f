"""Phase 5, live: fresh hours at a fixed rate into the running 1x worker; from ``produce()`` of an hour's
second half to the NOTIFY of its row."""

from __future__ import annotations

import math
import select
import statistics
import threading
import time
from datetime import timedelta
from typing import Any

import confluent_kafka

from benchmarks import kafka_io, sqlpeer, synth
from benchmarks.context import Run


def next_hours(run: Run, count_hours: int) -> list[tuple[synth.Obs, synth.Obs]]:
    """The next ``count_hours`` (region, hour) pairs of the clean live tail, in hour order."""
    pairs: list[tuple[synth.Obs, synth.Obs]] = []
    by_key: dict[tuple[int, int], dict[int, synth.Obs]] = {}
    for obs in run.live:
        by_key.setdefault((obs.hour, obs.region), {})[obs.feed] = obs
    keys = sorted(by_key)[run.live_next : run.live_next + count_hours]
    run.live_next += len(keys)
    for key in keys:
        halves = by_key[key]
        pairs.append((halves[synth.SOLAR], halves[synth.WEATHER]))
    return pairs


def _notify_key(run: Run, obs: synth.Obs) -> str:
    epoch = int((synth.DEFAULT_START + timedelta(hours=obs.hour)).timestamp())
    return f"{run.regions[obs.region].name}|{epoch}"


def live_latency(run: Run) -> None:
    worker = run.w1
    if not worker.alive:
        raise RuntimeError("the 1x worker is not running")
    sqlpeer.install_notify(run.conn, run.g1.table)
    seen: dict[str, float] = {}
    stop = threading.Event()
    listening = threading.Event()
    listener = threading.Thread(target=_listen, args=(run, seen, stop, listening), daemon=True)
    listener.start()
    listening.wait(10)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": run.bootstrap, "linger.ms": 1, "acks": 1, "partitioner": "murmur2_random"}
    )
    errors = kafka_io.DeliveryErrors()
    pairs = next_hours(run, int(run.o.live_rate * run.o.live_seconds))
    produced: dict[str, float] = {}
    interval = 1.0 / run.o.live_rate
    started = time.perf_counter()
    wall_started = time.time()
    run.progress.reset()
    for i, (solar, weather) in enumerate(pairs):
        due = started + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for obs in (solar, weather):
            feed, key, value = synth.encode(obs, run.regions)
            producer.produce(run.topic(run.g1, feed), value=value, key=key, on_delivery=errors)
        # The second half of the hour is out: from now on its row may be written.
        produced[_notify_key(run, weather)] = time.time()
        producer.poll(0)
        run.progress.tick(f"live: {i + 1:,}/{len(pairs):,} hours produced, {len(seen):,} rows visible")
    producer.flush(30)
    errors.raise_if_any()
    send_seconds = time.perf_counter() - started
    drain = 30 + 2 * run.batch_wait()
    deadline = time.monotonic() + drain
    run.progress.reset()
    while time.monotonic() < deadline and not all(k in seen for k in produced):
        run.progress.tick(f"live: waiting for rows, {len(seen):,}/{len(produced):,} visible")
        time.sleep(0.1)
    stop.set()
    listener.join(5)
    sqlpeer.drop_notify(run.conn, run.g1.table)
    latencies = [seen[k] - t for k, t in produced.items() if k in seen]
    missing = len(produced) - len(latencies)
    fig: dict[str, Any] = {
        "rate_hours_per_second": run.o.live_rate,
        "achieved_hours_per_second": round(len(pairs) / send_seconds, 1) if send_seconds > 0 else None,
        "hours": len(pairs),
        "messages": 2 * len(pairs),
        "visible": len(latencies),
        "missing": missing,
        "drain_seconds": drain,
        "started_at": wall_started,
    }
    if latencies:
        # A row never seen counts as slower than every row seen: a percentile that lands on one is
        # unknown (None), and the wait after the last produce() is a lower bound for it.
        ranked = latencies + [math.inf] * missing
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
            latency = sqlpeer.percentile(ranked, q)
            fig[f"{name}_seconds"] = None if math.isinf(latency) else round(latency, 3)
        fig.update(
            max_seconds=None if missing else round(max(latencies), 3),
            max_seen_seconds=round(max(latencies), 3),
            mean_seen_seconds=round(statistics.fmean(latencies), 3),
        )
        # Median latency per second of the phase: flat means a steady delay, rising means a backlog.
        by_second: dict[int, list[float]] = {}
        for k, t in produced.items():
            if k in seen:
                by_second.setdefault(int(t - wall_started), []).append(seen[k] - t)
        fig["p50_by_second"] = [round(statistics.median(v), 2) for _, v in sorted(by_second.items())]
    fig["measured"] = "produce() of an hour's second half to the NOTIFY of its row (sent at commit)"
    run.figures["live"] = fig
    run.progress(
        f"live: {len(latencies):,}/{len(pairs):,} rows visible, p50 {fig.get('p50_seconds')} s, "
        f"p99 {fig.get('p99_seconds')} s"
    )


def _listen(run: Run, seen: dict[str, float], stop: threading.Event, listening: threading.Event) -> None:
    """LISTEN on its own connection; the first time each row's NOTIFY arrived, by its key."""
    conn = run.pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {sqlpeer.NOTIFY_CHANNEL}")
        listening.set()
        while not stop.is_set():
            if select.select([conn], [], [], 0.05)[0]:
                conn.poll()
                now = time.time()
                while conn.notifies:
                    seen.setdefault(conn.notifies.pop(0).payload, now)
    finally:
        conn.close()
