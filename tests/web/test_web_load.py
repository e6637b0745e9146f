"""Web requests cannot stall the pipeline: a real worker holding 10,000 regions works through a backlog while
five dashboards poll it and bursts of 200 requests arrive.

The ingestion rate is measured from outside the worker (the group's committed offsets on the raw topics,
read from the broker), in windows with and without the web load, interleaved (without, with, without, ...)
so that a drift of the machine's speed falls on both; the rates compared are the medians of the windows.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from conftest import WorkerFactory
from faults_util import wait_for
from kafka_util import Kafka
from worker import Names, Worker

REGIONS = [f"site-{i:05d}" for i in range(10_000)]
PARTITIONS = 4  # of each raw topic
SEED_HOURS = 2  # every region exists before the measurement
LOAD_HOURS = 10  # the backlog worked through while measuring
WINDOW_SECONDS = 8.0
SCHEDULE = "ABABABA"  # A: no web load; B: five dashboards polling, a burst of 200 requests at its start
DASHBOARDS = 5
BURST = 200
FIRST_HOUR = datetime(2019, 6, 1, tzinfo=UTC)


def hour_messages(names: Names, hour: int) -> dict[str, list[tuple[bytes | None, bytes | None]]]:
    """Both feeds' messages of one hour for every region, keyed by region."""
    moment = (FIRST_HOUR + timedelta(hours=hour)).isoformat()
    solar, weather = [], []
    for i, region in enumerate(REGIONS):
        key = region.encode()
        production = {"timestamp": moment, "region": region, "production_mw": float((i * 7 + hour) % 500)}
        solar.append((key, json.dumps(production).encode()))
        observed = {
            "timestamp": moment,
            "region": region,
            "temperature_c": 10.0 + (i + hour) % 15,
            "cloud_cover_pct": float((i * 3 + hour) % 100),
            "solar_radiation_wm2": float((i + 5 * hour) % 800),
            "latitude": 50.0 + (i % 100) / 50,
            "longitude": 8.0 + (i // 100) / 50,
        }
        weather.append((key, json.dumps(observed).encode()))
    return {names.solar: solar, names.weather: weather}


def produce_hours(kafka: Kafka, names: Names, hours: range) -> int:
    count = 0
    for hour in hours:
        for topic, messages in hour_messages(names, hour).items():
            kafka.produce(topic, messages)
            count += len(messages)
    return count


class Committed:
    """The group's committed offsets on the raw topics, summed: raw messages the worker has processed."""

    def __init__(self, kafka: Kafka, names: Names) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": kafka.bootstrap, "group.id": names.group, "enable.auto.commit": False}
        )
        self.tps = [TopicPartition(t, p) for t in (names.solar, names.weather) for p in range(PARTITIONS)]

    def total(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=10))

    def close(self) -> None:
        self.consumer.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Sampler:
    """Every 0.25 s, in two threads so that a slow worker never holds the other back: the raw messages
    processed (from the broker) and the worker's resident memory (from /proc); and the worker's own counts
    from /healthz, with how long it took to answer."""

    def __init__(self, committed: Committed, worker: Worker) -> None:
        assert worker.proc is not None
        self.committed = committed
        self.pid = worker.proc.pid
        self.health_url = worker.url + "/healthz"
        self.samples: list[tuple[float, int, float]] = []  # (time, raw messages committed, RSS MiB)
        self.health: list[tuple[float, int, float]] = []  # (time, status, seconds)
        self.progress: list[tuple[float, int, int]] = []  # (time, messages ingested, rows written)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._outside, name="sampler", daemon=True),
            threading.Thread(target=self._health, name="health", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _outside(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.committed.total(), rss_mib(self.pid)))
            self.stop.wait(0.25)

    def _health(self) -> None:
        while not self.stop.is_set():
            status, seconds, body = get(self.health_url, timeout=5)
            self.health.append((time.monotonic(), status, seconds))
            if status == 200:  # the worker's own counts, batch by batch (finer than commits)
                progress = json.loads(body)["progress"]
                self.progress.append((time.monotonic(), progress["ingested"], progress["rows_written"]))
            self.stop.wait(0.25)

    def rate(self, start: float, end: float, rows: bool = False) -> float:
        """Raw messages ingested (or rows written) a second in [start, end]: the slope of a least-squares
        line through the worker's own counts (through the committed offsets where it has none)."""
        if rows:
            counts = [(t, r) for t, _, r in self.progress]
        else:
            counts = [(t, n) for t, n, _ in self.progress] or [(t, n) for t, n, _ in self.samples]
        points = [(t, n) for t, n in counts if start <= t <= end]
        assert len(points) >= 10, f"{len(points)} samples in {end - start:.1f} s: {points}"
        mean_t = statistics.fmean(t for t, _ in points)
        mean_n = statistics.fmean(n for _, n in points)
        num = sum((t - mean_t) * (n - mean_n) for t, n in points)
        return num / sum((t - mean_t) ** 2 for t, _ in points)

    def memory(self, start: float, end: float) -> float:
        return statistics.median(m for t, _, m in self.samples if start <= t <= end)


def get(url: str, timeout: float = 20.0) -> tuple[int, float, bytes]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError:
        status, body = 0, b""
    return status, time.monotonic() - started, body


class Dashboard(threading.Thread):
    """What an open dashboard asks every 3 s: a page of regions, the dead letters, the selected region and
    the 72 hours of its chart."""

    def __init__(self, worker: Worker, index: int, stop: threading.Event, answers: Counter[int]) -> None:
        super().__init__(name=f"dashboard-{index}", daemon=True)
        self.base, self.index, self.stop, self.answers = worker.url, index, stop, answers

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            status, _, body = get(self.base + "/api/regions?limit=50")
            self.answers[status] += 1
            region = REGIONS[self.index * 37]
            if status == 200:
                listed = json.loads(body)["regions"]
                region = listed[self.index % len(listed)]["region"] if listed else region
            for path in (
                "/api/deadletters?limit=20",
                f"/api/regions/{region}",
                f"/api/regions/{region}/hours?from=2019-06-01T00:00Z&to=2019-06-03T23:00Z",
            ):
                status, _, _ = get(self.base + path)
                self.answers[status] += 1
            self.stop.wait(max(0.0, 3.0 - (time.monotonic() - started)))


def burst(worker: Worker) -> list[tuple[int, float, bytes]]:
    """200 requests for the regions at once."""
    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(lambda _: get(worker.url + "/api/regions"), range(BURST)))


def test_web_load_does_not_starve_ingestion(
    kafka: Kafka, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """At 10,000 regions, with five dashboards polling and bursts of 200 requests, ingestion keeps at least
    80 % of its rate without them (medians of interleaved windows), and the worker's memory returns within
    20 % of its level before the first burst."""
    kafka.create_topics({names.solar: PARTITIONS, names.weather: PARTITIONS})
    seeded = produce_hours(kafka, names, range(SEED_HOURS))
    worker = workers()
    assert worker.proc is not None
    committed = Committed(kafka, names)
    try:
        wait_for(lambda: committed.total() >= seeded, 300, "the seed hours processed", worker.tail)
        backlog = seeded + produce_hours(kafka, names, range(SEED_HOURS, SEED_HOURS + LOAD_HOURS))
        sampler = Sampler(committed, worker)
        sampler.start()
        time.sleep(WINDOW_SECONDS / 2)  # under way
        windows: list[tuple[str, float, float]] = []
        answers: Counter[int] = Counter()
        bursts: list[list[tuple[int, float, bytes]]] = []
        for phase in SCHEDULE:
            start = time.monotonic()
            if phase == "B":
                stop = threading.Event()
                dashboards = [Dashboard(worker, i, stop, answers) for i in range(DASHBOARDS)]
                for dashboard in dashboards:
                    dashboard.start()
                bursts.append(burst(worker))
            time.sleep(max(0.0, start + WINDOW_SECONDS - time.monotonic()))
            if phase == "B":
                stop.set()
                for dashboard in dashboards:
                    dashboard.join(30)
            windows.append((phase, start, time.monotonic()))
        sampler.join()
        processed = sampler.samples[-1][1]
    finally:
        committed.close()

    record = {"windows": windows, "samples": sampler.samples, "progress": sampler.progress}
    (tmp_path / "samples.json").write_text(json.dumps(record))
    print(f"\nsamples: {tmp_path / 'samples.json'}")
    rates = {phase: [sampler.rate(s + 0.5, e) for p, s, e in windows if p == phase] for phase in "AB"}
    quiet, loaded = statistics.median(rates["A"]), statistics.median(rates["B"])
    rows = {
        phase: [sampler.rate(s + 0.5, e, rows=True) for p, s, e in windows if p == phase] for phase in "AB"
    }
    rows_quiet, rows_loaded = statistics.median(rows["A"]), statistics.median(rows["B"])
    first_burst = windows[1][1]
    before = sampler.memory(first_burst - 3.0, first_burst)
    peak = max(m for t, _, m in sampler.samples if t >= first_burst)
    after = sampler.memory(windows[-1][2] - 3.0, windows[-1][2])
    statuses = [Counter(status for status, _, _ in each) for each in bursts]
    slowest = [max(seconds for _, seconds, _ in each) for each in bursts]
    print(
        f"\nraw messages/s without web load {[round(r) for r in rates['A']]} (median {quiet:,.0f}), with "
        f"{[round(r) for r in rates['B']]} (median {loaded:,.0f}): {loaded / quiet:.0%}"
        f"\nrows written/s without {[round(r) for r in rows['A']]} (median {rows_quiet:,.0f}), with "
        f"{[round(r) for r in rows['B']]} (median {rows_loaded:,.0f}): {rows_loaded / rows_quiet:.0%}"
        f"\nbursts of {BURST}: {[dict(s) for s in statuses]}, slowest {[round(s, 2) for s in slowest]} s"
        f"\ndashboard answers {dict(answers)}"
        f"\nworker RSS before the first burst {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB"
        f"\n{processed:,} of {backlog:,} raw messages processed by the end of the windows"
    )
    for phase in "AB":
        took = sorted(
            seconds
            for t, _, seconds in sampler.health
            if any(p == phase and s <= t <= e for p, s, e in windows)
        )
        median, p95 = took[len(took) // 2], took[int(0.95 * (len(took) - 1))]
        label = "without" if phase == "A" else "with"
        print(
            f"/healthz {label} web load: median {1000 * median:.0f} ms, 95th percentile {1000 * p95:.0f} ms"
        )
    assert processed < backlog, "the backlog ran out during the windows: the rates are not a full load"
    assert loaded >= 0.8 * quiet, f"ingestion with web load at {loaded / quiet:.0%} of its rate without"
    assert after <= 1.2 * before, f"the worker's memory went from {before:.0f} to {after:.0f} MiB"
    assert sampler.progress, "no counts from /healthz"
    assert rows_loaded >= 0.8 * rows_quiet, f"rows written with web load at {rows_loaded / rows_quiet:.0%}"
    for each in statuses:  # every request answered: served, or refused at once as busy
        assert set(each) <= {200, 503} and each[200] > 0, each
    assert answers[200] > 0 and set(answers) <= {200, 503}, answers
