"""The worker's own web pages: a live dashboard, a JSON API over the kept state, and Prometheus metrics.

    /                                   dashboard (inline HTML, CSS, SVG and JavaScript; no external assets)
    /api/regions                        per-region summary, counters, consumer lag
    /api/regions/{region}/hours         kept records and feature rows of one region, by time range
    /api/deadletters?limit=N            the latest rejected messages and why
    /metrics                            Prometheus metrics (prometheus-client; see observe/metrics.py)

The views only read: the pipeline's states and counters, the Faust consumer's offsets. Every answer is
computed on the event loop, between two events, so it is consistent with itself. The answers themselves are
``web.api``'s.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import aiohttp
import faust
from faust.web import Request, Response, View
from yarl import URL

from solar_agents.core.features import row_type
from solar_agents.core.hours import RegionHours
from solar_agents.observe.lag import partition_offsets
from solar_agents.observe.log import get_logger
from solar_agents.observe.metrics import Metrics, Snapshot
from solar_agents.observe.stats import RECENT_DEAD_LETTERS
from solar_agents.runtime.topology import Pipeline
from solar_agents.web.api import (
    DEADLETTERS_DEFAULT,
    BadRequest,
    check_region,
    dead_letter_json,
    features_json,
    hour_range,
    hours_answer,
    iso_time,
    owner_of,
    parse_limit,
    parse_time,
    region_partition,
    region_summary,
)
from solar_agents.web.auth import AccessPolicy

log = get_logger(__name__)

# A forwarded request carries this header; its receiver answers itself, so a request makes one hop at most,
# even while two workers disagree about the assignment during a rebalance.
FORWARDED_HEADER = "X-Solar-Agents-Forwarded-By"
FORWARD_TIMEOUT_SECONDS = 10.0
STATES_TTL_SECONDS = 1.0


def _host_port(url: URL) -> tuple[str, int]:
    return (url.host or "", url.port or 80)


# --- parsing ------------------------------------------------------------------------------------------------


def consumer_lag(app: faust.App, topics: Sequence[str]) -> list[dict[str, Any]]:
    """Per assigned partition of ``topics``: high-water mark, committed offset, next offset to read, lag
    (``observe.lag``)."""
    return [asdict(o) | {"lag": o.lag} for o in partition_offsets(app.consumer, topics)]


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
                "features": features_json(self.settings.feature_set),
            },
            "counts": self.pipeline.stats.counts(self.raw_topics),
            "lag": consumer_lag(self.app, self.input_topics),
            "regions": [region_summary(states[r], partitions) for r in sorted(states)],
        }

    def hours(self, region: str, query: Mapping[str, str]) -> dict[str, Any]:
        hours = hour_range(parse_time("from", query.get("from")), parse_time("to", query.get("to")))
        state = self.state(region)
        return hours_answer(state, hours, row_type(self.settings.feature_set), self.settings.retention)

    def dead_letters(self, query: Mapping[str, str]) -> dict[str, Any]:
        limit = parse_limit(query.get("limit"), DEADLETTERS_DEFAULT, RECENT_DEAD_LETTERS)
        stats = self.pipeline.stats
        latest = list(stats.recent_dead_letters)[-limit:]
        return {
            "totals": stats.counts(self.raw_topics)["dead_letters"],
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
        headers = {
            FORWARDED_HEADER: str(self.app.conf.canonical_url),
            "Accept": "application/json",
            **AccessPolicy.of(self.settings).bearer(),
        }
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
    return (importlib.resources.files("solar_agents.web") / "assets" / name).read_text(encoding="utf-8")


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
