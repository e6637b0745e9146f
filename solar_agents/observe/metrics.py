"""Prometheus metrics of one worker, with ``prometheus-client``: the pipeline's counters and state, read at
scrape time, and Faust's own events through a sensor.

Every name starts with ``solar_agents_``; the ones fed by Faust's sensor hooks with ``solar_agents_faust_``.
The list as served is in the README ("Web view and API").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import prometheus_client
from faust.sensors import Sensor
from faust.types import TP
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from solar_agents.core.hours import RegionHours
from solar_agents.observe.stats import Stats, per_topic

# A "_created" sample per counter doubles the exposition and tells nothing here: counters restart at zero
# with the worker, which Prometheus sees as a reset anyway.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
PREFIX = "solar_agents_"
# Commits and rebalances on a local broker take milliseconds to seconds.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Snapshot:
    """What the pipeline collector reads at one scrape."""

    stats: Stats
    raw_topics: tuple[str, ...]
    lag: Sequence[Mapping[str, Any]]
    states: Mapping[str, RegionHours]  # the regions with series of their own (METRICS_REGION_SERIES_MAX)
    regions: int | None = None  # regions held, with or without series; None: as many as ``states``

    @property
    def regions_held(self) -> int:
        return len(self.states) if self.regions is None else self.regions


def _incomplete(state: RegionHours) -> int:
    return len(state.solar.keys() ^ state.weather.keys())


def _le(bound: float) -> str:
    return repr(float(bound))  # as prometheus-client writes its own bounds: 0.005, 5.0


class PipelineCollector(Collector):
    """The pipeline's counters, consumer lag and regions, computed when Prometheus scrapes."""

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        snap = self.read()
        s = snap.stats
        ingested = per_topic(s.ingested, snap.raw_topics)
        dead = per_topic(s.dead_letters, snap.raw_topics)

        def by_topic(name: str, doc: str, values: Mapping[str, int]) -> Metric:
            family = CounterMetricFamily(PREFIX + name, doc, labels=["topic"])
            for topic, n in sorted(values.items()):
                family.add_metric([topic], n)
            return family

        yield by_topic("messages_ingested", "Valid messages read from a raw topic.", ingested)
        yield by_topic("dead_letters", "Messages rejected to the dead-letter topic, by raw topic.", dead)
        for name, doc, value in (
            ("late_records", "Records older than watermark minus allowed lateness.", s.late),
            (
                "regions_refused",
                "Raw records of new regions past MAX_REGIONS (dead letters).",
                s.regions_refused,
            ),
            ("reads_held", "Times a raw partition waited for a slower one.", s.reads_held),
            (
                "records_read_again",
                "Records the consumer's hand-over dropped, read again.",
                s.records_read_again,
            ),
            (
                "offsets_absent",
                "Offsets skipped over that held no record (transaction markers).",
                s.offsets_absent,
            ),
            ("rows_emitted", "Feature rows computed and sent to the writer.", s.rows_emitted),
            ("rows_written", "Feature rows written to the database (rewrites included).", s.rows_written),
            ("write_failures", "Failed database write attempts (each is retried).", s.write_failures),
            (
                "table_entries_written",
                "Table entries the align step's flushes wrote (changelog records).",
                s.table_entries_written,
            ),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        flushes = CounterMetricFamily(
            PREFIX + "table_flushes",
            "Flushes of the align step's held table writes, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(s.table_flushes.items()):
            flushes.add_metric([reason], count)
        yield flushes
        # Stats counts a batch in every bucket it fits: its buckets are cumulative already.
        buckets = [(_le(bound), n) for bound, n in sorted(s.write_buckets.items())]
        yield HistogramMetricFamily(
            PREFIX + "write_batch_seconds",
            "Time to write one batch of rows to the database.",
            buckets=[*buckets, ("+Inf", s.batches_written)],
            sum_value=s.write_seconds_total,
        )
        lag = GaugeMetricFamily(
            PREFIX + "consumer_lag",
            "High-water mark minus committed offset, per assigned partition.",
            labels=["topic", "partition"],
        )
        for entry in snap.lag:
            if entry["lag"] is not None:
                lag.add_metric([entry["topic"], str(entry["partition"])], entry["lag"])
        yield lag
        yield GaugeMetricFamily(PREFIX + "regions", "Regions held by this worker.", value=snap.regions_held)
        yield GaugeMetricFamily(
            PREFIX + "region_series_omitted",
            "Regions held without per-region series here (past METRICS_REGION_SERIES_MAX).",
            value=snap.regions_held - len(snap.states),
        )
        watermark = GaugeMetricFamily(
            PREFIX + "region_watermark_timestamp_seconds",
            "A region's watermark hour, as epoch seconds.",
            labels=["region"],
        )
        incomplete = GaugeMetricFamily(
            PREFIX + "region_incomplete_hours",
            "Kept hours of a region with one of the two records.",
            labels=["region"],
        )
        for region, state in sorted(snap.states.items()):
            if state.watermark is not None:
                watermark.add_metric([region], state.watermark * 3600)
            incomplete.add_metric([region], _incomplete(state))
        yield watermark
        yield incomplete


class FaustSensor(Sensor):  # type: ignore[misc]
    """Faust's own events as Prometheus metrics: what reaches the consumer, commits, sends, rebalances.

    Only cheap work per message (one cached counter child): the worker's per-event path is its bottleneck.
    """

    def __init__(self, registry: CollectorRegistry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        name = PREFIX + "faust_"
        self.received = Counter(
            name + "messages_received", "Messages fetched by Faust's consumer.", ["topic"], registry=registry
        )
        self._received: dict[str, Any] = {}
        self.buffer_full = Counter(
            name + "topic_buffer_full",
            "Times a partition's buffer was full (the agents are behind the fetcher).",
            ["topic"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            name + "commit_seconds", "Time of one offset commit.", registry=registry, buckets=SECONDS_BUCKETS
        )
        self.committed = Gauge(
            name + "committed_offset",
            "The offset last committed, per partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.send_errors = Counter(
            name + "send_errors", "Messages the producer failed to send.", ["topic"], registry=registry
        )
        self.rebalances = Counter(
            name + "rebalances", "Rebalances this worker went through.", registry=registry
        )
        self.rebalance_seconds = Histogram(
            name + "rebalance_seconds",
            "From the start of a rebalance to the end of its recovery.",
            registry=registry,
            buckets=SECONDS_BUCKETS,
        )
        self.assignments = Counter(
            name + "assignments", "Partition assignments, by result.", ["result"], registry=registry
        )

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        self.on_run_in(tp, 1)

    def on_run_in(self, tp: TP, count: int) -> None:
        """A fetched run of a raw topic, handed over whole (``runtime.faust_drain``)."""
        child = self._received.get(tp.topic)
        if child is None:
            child = self._received[tp.topic] = self.received.labels(tp.topic)
        child.inc(count)

    def on_topic_buffer_full(self, tp: TP) -> None:
        self.buffer_full.labels(tp.topic).inc()

    def on_commit_initiated(self, consumer: Any) -> Any:
        return time.monotonic()

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        self.commit_seconds.observe(time.monotonic() - state)

    def on_tp_commit(self, tp_offsets: Mapping[TP, int]) -> None:
        for tp, offset in tp_offsets.items():
            self.committed.labels(tp.topic, str(tp.partition)).set(offset)

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valuesize: int) -> Any:
        return topic

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self.send_errors.labels(str(state)).inc()

    def on_assignment_completed(self, assignor: Any, state: dict[str, Any]) -> None:
        self.assignments.labels("completed").inc()

    def on_assignment_error(self, assignor: Any, state: dict[str, Any], exc: BaseException) -> None:
        self.assignments.labels("error").inc()

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        self.rebalances.inc()
        return {"time_start": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, Any]) -> None:
        self.rebalance_seconds.observe(time.monotonic() - state["time_start"])


class Metrics:
    """One worker's registry: the pipeline collector and, once installed, the Faust sensor."""

    def __init__(self, read: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(read))
        self.sensor = FaustSensor(self.registry)

    def text(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()


def pipeline_text(
    stats: Stats,
    raw_topics: Iterable[str],
    lag: Iterable[Mapping[str, Any]],
    states: Mapping[str, RegionHours],
    regions: int | None = None,
) -> str:
    """The exposition of the pipeline's metrics alone (no Faust sensor), from the values given: per-region
    series for ``states``, of ``regions`` held."""
    snapshot = Snapshot(stats, tuple(raw_topics), list(lag), states, regions)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(lambda: snapshot))
    return prometheus_client.generate_latest(registry).decode()
