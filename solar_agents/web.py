"""The worker's own web pages: a live dashboard, a JSON API over the kept state, and Prometheus metrics.

    /                                   dashboard (inline HTML, CSS, SVG and JavaScript; no external assets)
    /api/regions                        per-region summary, counters, consumer lag
    /api/regions/{region}/hours         kept records and feature rows of one region, by time range
    /api/deadletters?limit=N            the latest rejected messages and why
    /metrics                            Prometheus metrics (prometheus-client; see metrics.py)

The views only read: the pipeline's states and counters, the Faust consumer's offsets. Every answer is
computed on the event loop, between two events, so it is consistent with itself.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import faust
from aiokafka.partitioner import murmur2
from faust.web import Request, Response, View
from yarl import URL

from solar_agents import compat
from solar_agents.agents import Pipeline
from solar_agents.features import COLUMNS, feature_row
from solar_agents.hours import (
    HOUR_US,
    InvalidTimestamp,
    RegionHours,
    Retention,
    Solar,
    Weather,
    hour_start,
    to_micros,
)
from solar_agents.log import get_logger
from solar_agents.metrics import Metrics, Snapshot
from solar_agents.stats import RECENT_DEAD_LETTERS, DeadLetter, Stats

log = get_logger(__name__)

MAX_RANGE_HOURS = 31 * 24  # /hours answers at most this span (31 days), so one request stays small
INCOMPLETE_SHOWN = 50  # incomplete hours listed per region, latest first
DEADLETTERS_DEFAULT = 50
# A forwarded request carries this header; its receiver answers itself, so a request makes one hop at most,
# even while two workers disagree about the assignment during a rebalance.
FORWARDED_HEADER = "X-Solar-Agents-Forwarded-By"
FORWARD_TIMEOUT_SECONDS = 10.0
STATES_TTL_SECONDS = 1.0


class BadRequest(ValueError):
    """The request cannot be answered as asked; ``str()`` is the message for the client (400)."""


# --- placement ----------------------------------------------------------------------------------------------


def region_partition(region: str, partitions: int) -> int:
    """The partition of the records topic (and of the tables) that holds ``region``.

    The records topic is keyed by the region's UTF-8 bytes and placed by Kafka's default partitioner
    (murmur2, sign bit cleared, modulo the partition count). Faust's ``table_route`` would hash the table's
    JSON-serialized key instead, which lands elsewhere.
    """
    return (int(murmur2(region.encode("utf-8"))) & 0x7FFFFFFF) % partitions


def owner_of(metadata: Mapping[str, Mapping[str, Iterable[int]]], topic: str, partition: int) -> str | None:
    """The URL of the worker that holds ``partition`` of ``topic`` in the assignor's map, if any."""
    for url, topics in metadata.items():
        if partition in topics.get(topic, ()):
            return url
    return None


def _host_port(url: URL) -> tuple[str, int]:
    return (url.host or "", url.port or 80)


# --- parsing ------------------------------------------------------------------------------------------------


def parse_time(name: str, raw: str | None) -> int:
    """An ISO 8601 query parameter as microseconds since the epoch (no offset means UTC)."""
    if raw is None or not raw.strip():
        raise BadRequest(f"missing query parameter {name!r} (an ISO 8601 time, e.g. 2019-01-05T00:00Z)")
    text = raw.strip()
    candidates = [text]
    if " " in text:  # an unencoded "+01:00" in a URL arrives as " 01:00"
        candidates.append(text.replace(" ", "+"))
    for candidate in candidates:
        try:
            return to_micros(candidate)
        except InvalidTimestamp:
            continue
    raise BadRequest(f"{name!r} is not an ISO 8601 time: {text[:40]!r}")


def parse_limit(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"'limit' is not an integer: {raw[:20]!r}") from None
    if not 1 <= value <= maximum:
        raise BadRequest(f"'limit' must be between 1 and {maximum}, got {value}")
    return value


def hour_range(from_us: int, to_us: int) -> range:
    """The hours whose start lies in [from, to]; a 400 for a reversed or too long range."""
    if from_us > to_us:
        raise BadRequest("'from' is after 'to'")
    first = -(-from_us // HOUR_US)  # ceiling: an hour that starts before 'from' is not in the range
    last = to_us // HOUR_US
    if last - first + 1 > MAX_RANGE_HOURS:
        raise BadRequest(f"range too long: at most {MAX_RANGE_HOURS // 24} days ({MAX_RANGE_HOURS} hours)")
    return range(first, last + 1)


def check_region(region: str) -> str:
    if not 1 <= len(region) <= 64:
        raise BadRequest("a region name has 1 to 64 characters")
    return region


# --- answers ------------------------------------------------------------------------------------------------


def iso_hour(hour: int | None) -> str | None:
    return None if hour is None else hour_start(hour).isoformat().replace("+00:00", "Z")


def iso_time(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def complete_hours(state: RegionHours) -> list[int]:
    return sorted(state.solar.keys() & state.weather.keys())


def incomplete_hours(state: RegionHours) -> list[tuple[int, str]]:
    """(hour, missing half), latest first: hours kept with only one of their two records."""
    only_solar = [(h, "weather") for h in state.solar.keys() - state.weather.keys()]
    only_weather = [(h, "solar") for h in state.weather.keys() - state.solar.keys()]
    return sorted(only_solar + only_weather, reverse=True)


def region_summary(state: RegionHours, partitions: int, shown: int = INCOMPLETE_SHOWN) -> dict[str, Any]:
    complete = complete_hours(state)
    incomplete = incomplete_hours(state)
    return {
        "region": state.region,
        "partition": region_partition(state.region, partitions),
        "watermark": iso_hour(state.watermark),
        "latest_solar": iso_hour(state.latest_solar),
        "latest_weather": iso_hour(state.latest_weather),
        "latest_complete": iso_hour(complete[-1] if complete else None),
        "hours_kept": len(state.solar.keys() | state.weather.keys()),
        "complete_hours": len(complete),
        "incomplete_count": len(incomplete),
        "incomplete": [{"hour": iso_hour(h), "missing": missing} for h, missing in incomplete[:shown]],
    }


def _solar_json(record: Solar) -> dict[str, Any]:
    return {
        "production_mw": record.production_mw,
        "partition": record.position.partition,
        "offset": record.position.offset,
        "seconds_from_hour": record.position.distance_us / 1e6,
    }


def _weather_json(record: Weather) -> dict[str, Any]:
    return {
        "temperature_c": record.temperature_c,
        "cloud_cover_pct": record.cloud_cover_pct,
        "solar_radiation_wm2": record.solar_radiation_wm2,
        "latitude": record.latitude,
        "longitude": record.longitude,
        "partition": record.position.partition,
        "offset": record.position.offset,
        "seconds_from_hour": record.position.distance_us / 1e6,
    }


def hours_answer(state: RegionHours, hours: range, retention: Retention) -> dict[str, Any]:
    """The kept records of the region in ``hours`` and, where both halves are there, the feature row.

    ``history_kept`` is false where the row's window or lags may reach behind the retention horizon: its
    averages and lags may then be computed from less than the row written at the time. (Pruning can lag the
    horizon, so it is false for a few rows whose history is in fact still there: the safe side.)
    """
    window_hours = retention.window_hours
    horizon = state.horizon(retention)
    every = state.solar.keys() | state.weather.keys()
    kept = sorted(h for h in every if h in hours)
    out: list[dict[str, Any]] = []
    for hour in kept:
        solar, weather = state.solar.get(hour), state.weather.get(hour)
        row = feature_row(state, hour, window_hours)
        feature: dict[str, Any] | None = None
        if row is not None:
            feature = dict(zip(COLUMNS, row.as_tuple(), strict=True))
            feature["timestamp"] = iso_hour(hour)
        out.append(
            {
                "hour": iso_hour(hour),
                "solar": None if solar is None else _solar_json(solar),
                "weather": None if weather is None else _weather_json(weather),
                "feature": feature,
                "history_kept": retention.history_kept(hour, horizon),
            }
        )
    return {
        "region": state.region,
        "from": iso_hour(hours.start),
        "to": iso_hour(hours.stop - 1),
        "watermark": iso_hour(state.watermark),
        "oldest_hour": iso_hour(min(every, default=None)),
        "window_hours": window_hours,
        "hours": out,
    }


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "reason": letter.reason,
        "time": iso_time(letter.time),
        "value_size": letter.value_size,
        "value": letter.value_preview,
    }


def counts(stats: Stats, raw_topics: Iterable[str]) -> dict[str, Any]:
    topics = list(raw_topics)
    ingested = {t: stats.ingested.get(t, 0) for t in topics} | dict(stats.ingested)
    dead = {t: stats.dead_letters.get(t, 0) for t in topics} | dict(stats.dead_letters)
    return {
        "ingested": ingested,
        "ingested_total": sum(ingested.values()),
        "dead_letters": dead,
        "dead_letters_total": sum(dead.values()),
        "late": stats.late,
        "rows_emitted": stats.rows_emitted,
        "rows_written": stats.rows_written,
        "batches_written": stats.batches_written,
        "write_failures": stats.write_failures,
        "write_seconds_total": stats.write_seconds_total,
        "write_seconds_last": stats.write_seconds_last,
    }


def consumer_lag(app: faust.App, topics: Sequence[str]) -> list[dict[str, Any]]:
    """Per assigned partition of ``topics``: high-water mark, committed offset, next offset to read, lag.

    The high-water mark is the one of the latest fetch response, kept by the Kafka client: ListOffsets is
    wrong on some brokers after batched writes, a fetch response is not. Lag is high-water mark minus
    committed offset: what a restart now would read again or for the first time. Before the first commit it
    counts from the next offset to read; it is 0 for a partition never written to, else unknown (None).
    """
    consumer = app.consumer
    try:
        order = {topic: i for i, topic in enumerate(topics)}  # the raw topics first
        assigned = sorted(
            (tp for tp in consumer.assignment() if tp.topic in order),
            key=lambda tp: (order[tp.topic], tp.partition),
        )
    except Exception:  # not started yet, or between generations
        return []
    # Faust keeps what it committed and what it read (no public accessor); .get() never inserts into these
    # defaultdicts.
    committed_offsets = compat.committed_offsets(consumer)
    read_offsets = compat.read_offsets(consumer)
    out: list[dict[str, Any]] = []
    for tp in assigned:
        highwater: int | None
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # revoked between the two calls
            highwater = None
        committed = committed_offsets.get(tp)
        read = read_offsets.get(tp)
        position = read + 1 if read is not None else committed
        lag: int | None = None
        if highwater is not None:
            if committed is not None:
                lag = max(0, highwater - committed)
            elif position is not None:  # read from, nothing committed yet
                lag = max(0, highwater - position)
            elif highwater == 0:  # never written to
                lag = 0
        out.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "highwater": highwater,
                "committed": committed,
                "position": position,
                "lag": lag,
            }
        )
    return out


# --- views --------------------------------------------------------------------------------------------------

_API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _View(View):
    """A view whose bad input is a 400 and whose failure is a 500, both as JSON (never aiohttp's HTML)."""

    async def dispatch(self, request: Any) -> Any:
        try:
            return await super().dispatch(request)
        except BadRequest as exc:
            return self.json({"error": str(exc)}, status=400, headers=dict(_API_HEADERS))
        except Exception as exc:
            log.exception("web_request_failed", path=str(getattr(request, "path", "?")))
            return self.json(
                {"error": f"internal error: {type(exc).__name__}"}, status=500, headers=dict(_API_HEADERS)
            )

    def answer(self, value: Any) -> Response:
        return self.json(value, headers=dict(_API_HEADERS))


class Site:
    """What the views read, in one place: the app, its pipeline, and a short-lived copy of the states."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self._states: Mapping[str, RegionHours] = {}
        self._states_at = -math.inf
        self.prometheus = Metrics(self.snapshot)

    @property
    def raw_topics(self) -> tuple[str, str]:
        return self.settings.kafka_topic_solar, self.settings.kafka_topic_weather

    @property
    def input_topics(self) -> tuple[str, ...]:
        return (*self.raw_topics, self.settings.records_topic, self.settings.rows_topic)

    def states(self) -> Mapping[str, RegionHours]:
        # One copy serves the few requests of one dashboard refresh: right after a restart, before the first
        # event, each read is a scan of the tables.
        now = time.monotonic()
        if now - self._states_at > STATES_TTL_SECONDS:
            self._states = self.pipeline.region_states()
            self._states_at = now
        return self._states

    def state(self, region: str) -> RegionHours:
        state = self.states().get(check_region(region))
        if state is None:
            raise BadRequest("unknown region (no kept hours for it on this worker)")
        return state

    def owned_partitions(self) -> list[int]:
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.settings.records_topic)

    def regions(self) -> dict[str, Any]:
        partitions = self.settings.topic_partitions
        states = self.states()
        return {
            "worker": {
                "url": str(self.app.conf.canonical_url),
                "group": self.settings.kafka_consumer_group,
                "partitions": self.owned_partitions(),
                "partition_count": partitions,
            },
            "generated_at": iso_time(time.time()),
            "settings": {
                "window_hours": self.settings.feature_window_hours,
                "allowed_lateness_hours": self.settings.allowed_lateness_hours,
                "retention_hours": self.settings.retention_hours,
            },
            "counts": counts(self.pipeline.stats, self.raw_topics),
            "lag": consumer_lag(self.app, self.input_topics),
            "regions": [region_summary(states[r], partitions) for r in sorted(states)],
        }

    def hours(self, region: str, query: Mapping[str, str]) -> dict[str, Any]:
        hours = hour_range(parse_time("from", query.get("from")), parse_time("to", query.get("to")))
        state = self.state(region)
        return hours_answer(state, hours, self.settings.retention)

    def dead_letters(self, query: Mapping[str, str]) -> dict[str, Any]:
        limit = parse_limit(query.get("limit"), DEADLETTERS_DEFAULT, RECENT_DEAD_LETTERS)
        stats = self.pipeline.stats
        latest = list(stats.recent_dead_letters)[-limit:]
        return {
            "totals": counts(stats, self.raw_topics)["dead_letters"],
            "kept": len(stats.recent_dead_letters),
            "capacity": RECENT_DEAD_LETTERS,
            "dead_letters": [dead_letter_json(d) for d in reversed(latest)],
        }

    def snapshot(self) -> Snapshot:
        lag = consumer_lag(self.app, self.input_topics)
        return Snapshot(self.pipeline.stats, self.raw_topics, lag, self.states())

    def metrics(self) -> str:
        return self.prometheus.text()

    def owner(self, region: str) -> URL | None:
        """The URL of the worker holding ``region``, or None when it is this one or nobody knows yet."""
        table = self.pipeline.region_table
        topic = table.changelog_topic.get_topic_name()
        try:
            metadata = self.app.router.table_metadata(table.name)
        except Exception:  # no assignment yet
            return None
        url = owner_of(metadata, topic, region_partition(region, self.settings.topic_partitions))
        if url is None:
            return None
        owner = URL(url)
        return None if _host_port(owner) == _host_port(self.app.conf.canonical_url) else owner

    async def forward(self, view: View, request: Request, owner: URL) -> Response:
        """The owner's answer to the same request (one hop, like Faust's table_route)."""
        target = request.url.with_host(owner.host or "").with_port(owner.port)
        headers = {FORWARDED_HEADER: str(self.app.conf.canonical_url), "Accept": "application/json"}
        timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
        try:
            async with self.app.http_client.get(target, headers=headers, timeout=timeout) as response:
                body = await response.read()
                return view.bytes(
                    body,
                    content_type=response.content_type,
                    status=response.status,
                    headers={**_API_HEADERS, FORWARDED_HEADER: str(owner)},
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("web_forward_failed", owner=str(owner), error=f"{type(exc).__name__}: {exc}"[:200])
            return view.json(
                {"error": f"the worker holding this region ({owner}) did not answer"},
                status=503,
                headers=dict(_API_HEADERS),
            )


def register_views(app: faust.App, pipeline: Pipeline) -> Site:
    """Add the dashboard, the API and /metrics to the worker's web server."""
    site = Site(app, pipeline)
    app.sensors.add(site.prometheus.sensor)

    # "/" first: Faust's own index blueprint is added later, and aiohttp answers with the first match.
    @app.page("/", name="solar_agents_dashboard")
    class Dashboard(_View):
        async def get(self, request: Request) -> Response:
            return self.html(DASHBOARD_HTML, headers=dict(_PAGE_HEADERS))

    @app.page("/api/regions", name="solar_agents_regions")
    class Regions(_View):
        async def get(self, request: Request) -> Response:
            return self.answer(site.regions())

    @app.page("/api/regions/{region}/hours", name="solar_agents_region_hours")
    class RegionHoursView(_View):
        async def get(self, request: Request, region: str) -> Response:
            check_region(region)
            if FORWARDED_HEADER not in request.headers:
                owner = site.owner(region)
                if owner is not None:
                    return await site.forward(self, request, owner)
            return self.answer(site.hours(region, request.query))

    @app.page("/api/deadletters", name="solar_agents_deadletters")
    class DeadLetters(_View):
        async def get(self, request: Request) -> Response:
            return self.answer(site.dead_letters(request.query))

    @app.page("/metrics", name="solar_agents_metrics")
    class Metrics(_View):
        async def get(self, request: Request) -> Response:
            return self.text(
                site.metrics(), content_type="text/plain; version=0.0.4", headers=dict(_API_HEADERS)
            )

    return site


# --- the page -----------------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (importlib.resources.files("solar_agents") / "web_assets" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# One self-contained page: style and script inline, data only from this worker's API (users may be offline).
_STYLE = _asset("dashboard.css")
_SCRIPT = _asset("dashboard.js")
DASHBOARD_HTML = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Solar features</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
{_asset("dashboard.html")}
<script>{_SCRIPT}</script>
</body>
</html>
"""

# Only this page's own script and style run, and it talks only to this worker: injected markup would be inert
# even if an escape were missed somewhere.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
