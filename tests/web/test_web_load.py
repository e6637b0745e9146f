"""Web requests cannot stall the pipeline: a real worker holding 10,000 regions works through a backlog while
five dashboards poll it and bursts of 200 requests arrive.

How the rate is measured, and why so. At 10,000 regions the pipeline moves in cycles of 5 to 20 s: the align
helper works through batches (the raw ingest waits meanwhile, as Faust's consumer holds every topic while
the records stream is full), then the worker writes a flush of 30,000 table entries, for seconds that grow
as the hour blocks fill. Within one run the raw rate swings between 0 and 40,000 a second, and phases of
the same work took 14 to 28 s. Windows of one run with and without the web load measured where those
stalls fell, not the web view: 220 % and 82 % for the same code; later 62 %, 67 % and 138 %. So the
comparison is paired: three runs (A, B, A) of three fresh workers over the same input, the same hours
measured in each, the second under web load. Each goes through the same cycles at the same hours; the As
before and after it put the machine's drift on both sides.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from browser import Browser, find_browser
from confluent_kafka import Consumer, TopicPartition
from conftest import WorkerFactory
from dashboard_page import LISTED, PAGE_STATE, READY, SEARCH, SELECT
from faults_util import wait_for
from kafka_util import Kafka
from worker import Names, Worker

REGIONS = [f"site-{i:05d}" for i in range(10_000)]
PARTITIONS = 4  # of each raw topic
PER_HOUR = 2 * len(REGIONS)  # raw messages: both feeds
SEED_HOURS = 2  # every region exists before the measurement
WARM_UP_HOURS = 2  # worked through before it
MEASURED_HOURS = 16  # the hours timed in every run
SPARE_HOURS = 2  # still unread when the measured hours are done: they are timed at full load
RUNS = "ABA"  # A without web load, B with it
DASHBOARDS = 5
BURST = 200
BURST_EVERY = 4.0  # seconds, while there is web load
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
    """Every 0.25 s, each in a thread of its own so that a slow worker never holds another back: the worker's
    resident memory (from /proc), and its own counts from /healthz with how long it took to answer."""

    def __init__(self, worker: Worker) -> None:
        assert worker.proc is not None
        self.pid = worker.proc.pid
        self.health_url = worker.url + "/healthz"
        self.rss: list[tuple[float, float]] = []  # (time, RSS MiB)
        self.health: list[tuple[float, int, float]] = []  # (time, status, seconds)
        self.progress: list[tuple[float, int, int]] = []  # (time, raw messages ingested, rows written)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._memory, name="memory", daemon=True),
            threading.Thread(target=self._health, name="health", daemon=True),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _memory(self) -> None:
        while not self.stop.is_set():
            self.rss.append((time.monotonic(), rss_mib(self.pid)))
            self.stop.wait(0.25)

    def _health(self) -> None:
        while not self.stop.is_set():
            status, seconds, body = get(self.health_url, timeout=5)
            self.health.append((time.monotonic(), status, seconds))
            if status == 200:  # the worker's own counts, batch by batch (finer than commits)
                progress = json.loads(body)["progress"]
                self.progress.append((time.monotonic(), progress["ingested"], progress["rows_written"]))
            self.stop.wait(0.25)

    def reached(self, ingested: int, worker: Worker) -> tuple[float, int]:
        """The first sample at which the worker had ingested ``ingested`` raw messages: its time and count."""

        def first() -> tuple[float, int] | None:
            return next(((t, n) for t, n, _ in self.progress if n >= ingested), None)

        wait_for(lambda: first() is not None, 300, f"{ingested:,} raw messages ingested", worker.tail)
        found = first()
        assert found is not None
        return found

    def memory(self, start: float, end: float) -> float:
        """The median RSS from ``start`` to ``end``; the sample nearest to them if none fell between."""
        inside = [m for t, m in self.rss if start <= t <= end]
        if inside:
            return statistics.median(inside)
        middle = (start + end) / 2
        return min(self.rss, key=lambda sample: abs(sample[0] - middle))[1]


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
        background_priority()
        while not self.stop.is_set():
            started = time.monotonic()
            status, _, body = get(self.base + "/api/regions?limit=50")
            self.answers[status] += 1
            paths = ["/api/deadletters?limit=20"]
            listed = json.loads(body)["regions"] if status == 200 else []
            if listed:  # none before the worker's first table flush: a dashboard then shows an empty list
                region = listed[self.index % len(listed)]["region"]
                paths += [
                    f"/api/regions/{region}",
                    f"/api/regions/{region}/hours?from=2019-06-01T00:00Z&to=2019-06-03T23:00Z",
                ]
            for path in paths:
                status, _, _ = get(self.base + path)
                self.answers[status] += 1
            self.stop.wait(max(0.0, 3.0 - (time.monotonic() - started)))


def background_priority() -> None:
    """The load generator shares the worker's two cores here, where real clients run on other machines: at the
    lowest CPU priority its own work (200 threads parsing answers) does not count against the worker's."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def burst(worker: Worker) -> list[tuple[int, float, bytes]]:
    """200 requests for the regions at once."""
    with ThreadPoolExecutor(BURST, initializer=background_priority) as pool:
        return list(pool.map(lambda _: get(worker.url + "/api/regions"), range(BURST)))


class WebLoad:
    """Five dashboards polling, and a burst of 200 requests every ``BURST_EVERY`` seconds, from ``start`` to
    ``stop``."""

    def __init__(self, worker: Worker, answers: Counter[int], bursts: list[list[tuple[int, float, bytes]]]):
        self.worker, self.answers, self.bursts = worker, answers, bursts
        self.halt = threading.Event()
        self.threads: list[threading.Thread] = [
            Dashboard(worker, i, self.halt, answers) for i in range(DASHBOARDS)
        ]
        self.threads.append(threading.Thread(target=self._bursts, name="bursts", daemon=True))

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(30)

    def _bursts(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            self.bursts.append(burst(self.worker))
            self.halt.wait(max(0.0, started + BURST_EVERY - time.monotonic()))


@dataclass
class Run:
    """One worker's pass over the measured hours: when it began and ended them (by its own count of raw
    messages ingested) and its samples."""

    phase: str
    start: tuple[float, int]
    end: tuple[float, int]
    sampler: Sampler

    @property
    def seconds(self) -> float:
        return self.end[0] - self.start[0]

    @property
    def ingested(self) -> int:
        return self.end[1] - self.start[1]

    def memory(self) -> tuple[float, float, float]:
        """The worker's RSS before the measured hours, at their end (medians of 3 s), and its peak."""
        (start, _), (end, _) = self.start, self.end
        peak = max(m for t, m in self.sampler.rss if start <= t <= end)
        return self.sampler.memory(start - 3.0, start), self.sampler.memory(end - 3.0, end), peak

    def healthz(self) -> tuple[float, float]:
        """The median and 95th percentile of /healthz's answer times over the measured hours."""
        took = sorted(s for t, _, s in self.sampler.health if self.start[0] <= t <= self.end[0])
        return took[len(took) // 2], took[int(0.95 * (len(took) - 1))]


def test_web_load_does_not_starve_ingestion(
    kafka: Kafka, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """At 10,000 regions, with five dashboards polling and a burst of 200 requests every 4 s, the pipeline
    keeps at least 80 % of its rate over the same hours without them, and the worker's memory grows over
    them by less than 20 % of its level before more than it grows without the web load, its peak within 20 %
    of the peak without."""
    kafka.create_topics({names.solar: PARTITIONS, names.weather: PARTITIONS})
    hours = SEED_HOURS + WARM_UP_HOURS + MEASURED_HOURS + SPARE_HOURS
    produced = produce_hours(kafka, names, range(hours))
    first = (SEED_HOURS + WARM_UP_HOURS) * PER_HOUR  # raw messages ingested when the measured hours begin
    last = first + MEASURED_HOURS * PER_HOUR
    answers: Counter[int] = Counter()
    bursts: list[list[tuple[int, float, bytes]]] = []
    runs: list[Run] = []
    for index, phase in enumerate(RUNS):
        # A fresh worker each time: its own group, tables and feature table, over the same raw topics. The
        # align agent holds the batches since its last table flush, up to TABLE_FLUSH_MAX_SECONDS of input
        # (about 35 MiB at this rate and 60 s): memory of the backlog, not of the web view. A short interval
        # keeps it out of what this test measures.
        worker = workers(
            data_dir=tmp_path / f"state-{index}",
            KAFKA_CONSUMER_GROUP=f"{names.group}-{index}",
            FEATURES_TABLE=f"{names.table}_{index}",
            TABLE_FLUSH_MAX_SECONDS="5",
        )
        sampler = Sampler(worker)
        sampler.start()
        try:
            start = sampler.reached(first, worker)
            load = WebLoad(worker, answers, bursts) if phase == "B" else None
            if load:
                load.start()
            end = sampler.reached(last, worker)
            if load:
                load.stop()
        finally:
            sampler.join()
        worker.kill()  # its work is measured; a stop's flush would only take the next run's cores
        runs.append(Run(phase, start, end, sampler))
        assert end[1] < produced, "the input ran out during the measured hours: the rate is not a full load"

    record = {
        "runs": [
            {
                "phase": r.phase,
                "start": r.start,
                "end": r.end,
                "rss": r.sampler.rss,
                "progress": r.sampler.progress,
            }
            for r in runs
        ]
    }
    (tmp_path / "samples.json").write_text(json.dumps(record))
    print(f"\nsamples: {tmp_path / 'samples.json'}")

    def rate(phase: str) -> float:
        mine = [r for r in runs if r.phase == phase]
        return sum(r.ingested for r in mine) / sum(r.seconds for r in mine)

    def growth(phase: str) -> float:
        grown = [after - before for before, after, _ in (r.memory() for r in runs if r.phase == phase)]
        return sum(grown) / len(grown)

    quiet, loaded = rate("A"), rate("B")
    (before, _, peak) = next(r.memory() for r in runs if r.phase == "B")
    peak_without = max(r.memory()[2] for r in runs if r.phase == "A")
    statuses = [Counter(status for status, _, _ in each) for each in bursts]
    slowest = [max(seconds for _, seconds, _ in each) for each in bursts]
    print(
        f"\n{MEASURED_HOURS} hours ({MEASURED_HOURS * PER_HOUR:,} raw messages) at {len(REGIONS):,} regions:"
    )
    for r in runs:
        rss = r.memory()
        median, p95 = r.healthz()
        print(
            f"  {r.phase} ({'with' if r.phase == 'B' else 'without'} web load): {r.seconds:.1f} s, "
            f"{r.ingested / r.seconds:,.0f} raw messages/s; RSS {rss[0]:.0f} -> {rss[1]:.0f} MiB "
            f"(peak {rss[2]:.0f}); /healthz median {1000 * median:.0f} ms, "
            f"95th percentile {1000 * p95:.0f} ms"
        )
    print(
        f"raw messages ingested/s without web load {quiet:,.0f}, with {loaded:,.0f}: {loaded / quiet:.0%}"
        f"\n{len(bursts)} bursts of {BURST}: {dict(sum(statuses, Counter()))}, the slowest answer of each "
        f"{min(slowest):.2f} to {max(slowest):.2f} s"
        f"\ndashboard answers {dict(answers)}"
        f"\nworker RSS grown over the hours without web load {growth('A'):+.0f} MiB (mean), with "
        f"{growth('B'):+.0f} MiB, from {before:.0f} MiB"
    )
    assert loaded >= 0.8 * quiet, f"ingestion with web load at {loaded / quiet:.0%} of its rate without"
    web = growth("B") - growth("A")
    assert web <= 0.2 * before, f"the worker's memory grew {web:.0f} MiB more under web load"
    # Over the measured hours the worker grows about as much without the web load as with it (about 50 MiB
    # in each run): that is the pipeline's memory, whatever the web view does, so the peak under web load is
    # held to the peak without, not to the level before (docs/DESIGN.md, "Table writes held until a flush").
    assert peak <= 1.2 * peak_without, (
        f"the worker's peak {peak:.0f} MiB, without web load {peak_without:.0f}"
    )
    for each in statuses:  # every request answered: served, or refused at once as busy
        assert set(each) <= {200, 503} and each[200] > 0, each
    assert answers[200] > 0 and set(answers) <= {200, 503}, answers


def test_the_dashboard_at_10000_regions_renders_within_2_s_and_finds_a_region(
    kafka: Kafka, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """At 10,000 regions the operator's view stays usable: in Chromium the dashboard shows its first page
    of regions and the selected region's chart within 2 s of navigating to it, finds a region by a part of
    its name and shows it, and /metrics keeps to the per-region series budget."""
    found = find_browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed (scripts/bootstrap --browser installs them)")
        pytest.skip("chromium and chromedriver are not installed (scripts/bootstrap --browser)")
    kafka.create_topics({names.solar: PARTITIONS, names.weather: PARTITIONS})
    produced = produce_hours(kafka, names, range(SEED_HOURS + 1))
    worker = workers()
    committed = Committed(kafka, names)
    try:
        wait_for(lambda: committed.total() >= produced, 300, "every raw message processed", worker.tail)
    finally:
        committed.close()

    def every_region_complete() -> bool:
        page = json.loads(get(worker.url + f"/api/regions?limit=1&after={REGIONS[-2]}")[2] or b"{}")
        summary = (page.get("regions") or [{}])[0]
        return summary.get("latest_complete") is not None and page["page"]["total"] == len(REGIONS)

    wait_for(every_region_complete, 300, "every region's hours written", worker.tail)
    # The view at rest: the align step's held writes flushed once the input was all read (at 10,000 regions
    # that flush writes 30,000 entries, seconds of the event loop; the view answers meanwhile, slower).
    wait_for(
        lambda: 'solar_agents_table_flushes_total{reason="idle"}' in get(worker.url + "/metrics")[2].decode(),
        120,
        "the held table writes flushed",
        worker.tail,
    )
    target = REGIONS[9_999]
    with Browser(*found) as browser:
        browser.get(worker.url + "/")
        browser.wait_for(READY, REGIONS[0])
        # From the start of the navigation to the first poll that saw it all (polls are 0.2 s apart).
        rendered = browser.script("return performance.now() / 1000;")
        shown = [r["key"] for r in browser.script(PAGE_STATE)["regions"]]
        assert shown == REGIONS[: len(shown)] and len(shown) >= 50
        started = time.monotonic()
        assert browser.script(SEARCH, target.removeprefix("site-"))
        browser.wait_for(LISTED, [target], True)
        assert browser.script(SELECT, target)
        browser.wait_for(READY, target)
        found_in = time.monotonic() - started
        screenshot = browser.screenshot(tmp_path / "dashboard-10000-regions.png")
    with urllib.request.urlopen(worker.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    series = [line for line in metrics.splitlines() if 'region="' in line]
    print(
        f"\ndashboard at {len(REGIONS):,} regions: first page and chart within {rendered:.2f} s of "
        f"navigating; {target} found and shown in {found_in:.2f} s; /metrics {len(metrics):,} bytes, "
        f"{len(series)} per-region series\nscreenshot: {screenshot}"
    )
    assert rendered <= 2.0, f"the dashboard took {rendered:.2f} s to render"
    assert "solar_agents_regions 10000.0" in metrics
    # METRICS_REGION_SERIES_MAX (500) regions with at most two series each; the rest counted.
    assert 500 <= len(series) <= 2 * 500
    assert "solar_agents_region_series_omitted 9500.0" in metrics
