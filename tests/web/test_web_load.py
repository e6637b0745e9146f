"""Web requests cannot stall the pipeline: a real worker holding 10,000 regions works through a backlog while
five dashboards poll it and bursts of 200 requests arrive.

How the rate is measured, and why so. At 10,000 regions the pipeline moves in surges: the align step's batch
writes thousands of table entries at once, Faust holds every stream while their changelog goes out, and the
worker's counts advance in steps some 15 s apart. Windows with and without the web load in a fixed
alternation (A B A B ...) of 8 s beat against that cycle: one run of the first version of this test gave
220 %, another 82 % for the same code. So the windows are short (4 s), many (12 of each), in a random order
(seeded, so a run can be replayed), and the rate of each phase is the work done in all its windows over all
its time: a surge falls in either phase by chance, not by the clock, and the machine's drift falls on both.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random

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
SEED_HOURS = 2  # every region exists before the measurement
LOAD_HOURS = 60  # the backlog worked through while measuring (it must outlast the windows)
WINDOW_SECONDS = 4.0
WINDOWS = 12  # of each phase
SEED = 25
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
    """Every 0.25 s, each in a thread of its own so that a slow broker or worker never holds another back:
    the raw messages processed (from the broker), the worker's resident memory (from /proc), and the
    worker's own counts from /healthz with how long it took to answer."""

    def __init__(self, committed: Committed, worker: Worker) -> None:
        assert worker.proc is not None
        self.committed = committed
        self.pid = worker.proc.pid
        self.health_url = worker.url + "/healthz"
        self.samples: list[tuple[float, int]] = []  # (time, raw messages committed)
        self.rss: list[tuple[float, float]] = []  # (time, RSS MiB)
        self.health: list[tuple[float, int, float]] = []  # (time, status, seconds)
        self.progress: list[tuple[float, int, int]] = []  # (time, messages ingested, rows written)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._committed, name="committed", daemon=True),
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

    def _committed(self) -> None:  # a broker call: seconds at times, with the two cores busy
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.committed.total()))
            self.stop.wait(0.25)

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

    def counts(self, rows: bool = False) -> list[tuple[float, int]]:
        """The worker's own count of raw messages ingested (or of rows written) over time; the committed
        offsets where it has none (a version without /healthz)."""
        if rows:
            return [(t, r) for t, _, r in self.progress]
        return [(t, n) for t, n, _ in self.progress] or self.samples

    @staticmethod
    def done(counts: list[tuple[float, int]], start: float, end: float) -> int:
        """How much the count grew from ``start`` to ``end`` (its last value at or before each)."""

        def at(moment: float) -> int:
            before = [n for t, n in counts if t <= moment]
            assert before, f"no sample before {moment}"
            return before[-1]

        return at(end) - at(start)

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


def schedule() -> str:
    """A window without web load first (the memory before) and last (the memory after), the rest shuffled."""
    middle = list("A" * (WINDOWS - 2) + "B" * WINDOWS)
    Random(SEED).shuffle(middle)
    return "A" + "".join(middle) + "A"


def background_priority() -> None:
    """The load generator shares the worker's two cores here, where real clients run on other machines: at the
    lowest CPU priority its own work (200 threads parsing answers) does not count against the worker's."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def burst(worker: Worker) -> list[tuple[int, float, bytes]]:
    """200 requests for the regions at once."""
    with ThreadPoolExecutor(BURST, initializer=background_priority) as pool:
        return list(pool.map(lambda _: get(worker.url + "/api/regions"), range(BURST)))


def test_web_load_does_not_starve_ingestion(
    kafka: Kafka, names: Names, workers: WorkerFactory, tmp_path: Path
) -> None:
    """At 10,000 regions, with five dashboards polling and a burst of 200 requests at the start of every
    window with web load, ingestion keeps at least 80 % of its rate without them, and the worker's memory
    grows by less than 20 % of its level before the first burst over the windows with web load. (It grows
    over the windows without too, as the backlog fills the table stores: that is not the web view's.)"""
    kafka.create_topics({names.solar: PARTITIONS, names.weather: PARTITIONS})
    seeded = produce_hours(kafka, names, range(SEED_HOURS))
    # The align agent holds the batches since its last table flush, up to TABLE_FLUSH_MAX_SECONDS of input
    # (about 35 MiB at this rate and 60 s): memory of the backlog, not of the web view. A short interval keeps
    # it out of what this test measures.
    worker = workers(TABLE_FLUSH_MAX_SECONDS="5")
    assert worker.proc is not None
    committed = Committed(kafka, names)
    try:
        wait_for(lambda: committed.total() >= seeded, 300, "the seed hours processed", worker.tail)
        backlog = seeded + produce_hours(kafka, names, range(SEED_HOURS, SEED_HOURS + LOAD_HOURS))
        sampler = Sampler(committed, worker)
        sampler.start()
        time.sleep(WINDOW_SECONDS)  # under way
        windows: list[tuple[str, float, float]] = []
        answers: Counter[int] = Counter()
        bursts: list[list[tuple[int, float, bytes]]] = []
        for phase in schedule():
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

    record = {
        "windows": windows,
        "samples": sampler.samples,
        "rss": sampler.rss,
        "progress": sampler.progress,
    }
    (tmp_path / "samples.json").write_text(json.dumps(record))
    print(f"\nsamples: {tmp_path / 'samples.json'}")
    ingested, written = sampler.counts(), sampler.counts(rows=True)

    def rate(phase: str, counts: list[tuple[float, int]]) -> float:
        mine = [(s, e) for p, s, e in windows if p == phase]
        return sum(sampler.done(counts, s, e) for s, e in mine) / sum(e - s for s, e in mine)

    quiet, loaded = rate("A", ingested), rate("B", ingested)
    rows_quiet, rows_loaded = (rate("A", written), rate("B", written)) if written else (0.0, 0.0)
    first_burst = next(s for p, s, _ in windows if p == "B")
    before = sampler.memory(first_burst - 3.0, first_burst)
    peak = max(m for t, m in sampler.rss if t >= first_burst)
    after = sampler.memory(windows[-1][2] - 3.0, windows[-1][2])

    def grown(phase: str) -> float:  # over the windows of ``phase``: memory at each end less at its start
        return sum(
            sampler.memory(e - 1.0, e) - sampler.memory(s, s + 1.0) for p, s, e in windows if p == phase
        )

    statuses = [Counter(status for status, _, _ in each) for each in bursts]
    slowest = [max(seconds for _, seconds, _ in each) for each in bursts]
    print(
        f"\n{WINDOWS} windows of {WINDOW_SECONDS:g} s each way: {''.join(p for p, _, _ in windows)}"
        f"\nraw messages ingested/s without web load {quiet:,.0f}, with {loaded:,.0f}: {loaded / quiet:.0%}"
        f"\nrows written/s without {rows_quiet:,.0f}, with {rows_loaded:,.0f} (in surges; not asserted)"
        f"\n{len(bursts)} bursts of {BURST}: {dict(sum(statuses, Counter()))}, the slowest answer of each "
        f"{min(slowest):.2f} to {max(slowest):.2f} s"
        f"\ndashboard answers {dict(answers)}"
        f"\nworker RSS before the first burst {before:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB; "
        f"grown over the windows without web load {grown('A'):+.0f} MiB, with {grown('B'):+.0f} MiB"
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
    assert grown("B") <= 0.2 * before, f"the worker's memory grew {grown('B'):.0f} MiB under web load"
    assert after <= 1.5 * before, f"the worker's memory went from {before:.0f} to {after:.0f} MiB"
    assert sampler.progress, "no counts from /healthz"
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
