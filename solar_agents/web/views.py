"""The worker's own web pages: a live dashboard, a JSON API over the kept state, and Prometheus metrics.

    /                                   dashboard (inline HTML, CSS, SVG and JavaScript; no external assets)
    /api/regions?limit=&after=&search=  a page of regions (summaries), counters, consumer lag
    /api/regions/{region}               one region's summary
    /api/regions/{region}/hours         kept records and feature rows of one region, by time range
    /api/deadletters?limit=N            the latest rejected messages and why
    /metrics                            Prometheus metrics (prometheus-client; see observe/metrics.py)
    /healthz, /readyz                   live and ready (``web.server``)

Identical requests for a page of regions share one answer for a second (``web.shared``).

The views only read: the pipeline's counters, the Faust consumer's offsets, and from the tables only the
regions they show (``observe.regions`` says which regions and blocks there are). The align step holds its
table writes until a flush; a read of regions first writes the held entries of those regions alone
(``AlignAgent.flush_regions``), so the view shows what the step holds. Every answer is
computed on the event loop the agents share, so each is bounded: a page of regions, one region, a budget of
per-region series. The answers themselves are ``web.api``'s.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.resources
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, cast

import aiohttp
import faust
from faust.utils import json as faust_json
from faust.web import Request, Response, View
from yarl import URL

from solar_agents.core.features import row_type
from solar_agents.core.hours import RegionHours
from solar_agents.core.wire import records_partition
from solar_agents.observe.lag import partition_offsets
from solar_agents.observe.log import get_logger
from solar_agents.observe.metrics import Metrics, Snapshot
from solar_agents.observe.stats import RECENT_DEAD_LETTERS
from solar_agents.runtime.topology import Pipeline
from solar_agents.web.api import (
    DEADLETTERS_DEFAULT,
    BadRequest,
    NotFound,
    check_region,
    dead_letter_json,
    features_json,
    hour_range,
    hours_answer,
    iso_time,
    owner_of,
    parse_limit,
    parse_page,
    parse_time,
    region_summary,
)
from solar_agents.web.auth import AccessPolicy
from solar_agents.web.server import serve
from solar_agents.web.shared import SharedAnswers

log = get_logger(__name__)

# A forwarded request carries this header; its receiver answers itself, so a request makes one hop at most,
# even while two workers disagree about the assignment during a rebalance.
FORWARDED_HEADER = "X-Solar-Agents-Forwarded-By"
FORWARD_TIMEOUT_SECONDS = 10.0
# Regions read from the tables between two turns of the event loop: the agents run in between.
REGIONS_PER_TURN = 20
# Identical /api/regions requests within this long share one answer (``web.shared``).
SHARED_ANSWER_SECONDS = 1.0
SHARED_ANSWERS_MAX = 64


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
    """A view whose bad input is a 400 (an unknown region a 404) and whose failure is a 500, all as JSON."""

    async def dispatch(self, request: Any) -> Any:
        try:
            return await super().dispatch(request)
        except BadRequest as exc:
            return self.json({"error": str(exc)}, status=exc.status, headers=dict(_API_HEADERS))
        except Exception as exc:
            log.exception("web_request_failed", path=str(getattr(request, "path", "?")))
            return self.json(
                {"error": f"internal error: {type(exc).__name__}"}, status=500, headers=dict(_API_HEADERS)
            )

    def answer(self, value: Any) -> Response:
        return self.json(value, headers=dict(_API_HEADERS))


class Site:
    """What the views read, in one place: the app and its pipeline."""

    def __init__(self, app: faust.App, pipeline: Pipeline) -> None:
        self.app = app
        self.pipeline = pipeline
        self.settings = pipeline.settings
        self.prometheus = Metrics(self._snapshot)
        self._prepared: Snapshot | None = None
        self.shared = SharedAnswers(SHARED_ANSWER_SECONDS, SHARED_ANSWERS_MAX)

    @property
    def raw_topics(self) -> tuple[str, str]:
        return self.settings.kafka_topic_solar, self.settings.kafka_topic_weather

    @property
    def input_topics(self) -> tuple[str, ...]:
        return (*self.raw_topics, self.settings.records_topic, self.settings.rows_topic)

    async def state(self, region: str) -> RegionHours:
        await self.pipeline.align.flush_regions([check_region(region)])
        state = self.pipeline.region_state(region)
        if state is None:
            raise NotFound("unknown region (no kept hours for it on this worker)")
        return state

    async def states(self, names: list[str]) -> dict[str, RegionHours]:
        """The kept hours of ``names`` (those still held), read a few regions per turn of the event loop."""
        await self.pipeline.align.flush_regions(names)
        out = {}
        for count, name in enumerate(names, 1):
            state = self.pipeline.region_state(name)
            if state is not None:
                out[name] = state
            if not count % REGIONS_PER_TURN:
                await asyncio.sleep(0)
        return out

    def owned_partitions(self) -> list[int]:
        try:
            assignment = self.app.consumer.assignment()
        except Exception:
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.settings.records_topic)

    async def regions_json(self, query: Mapping[str, str]) -> bytes:
        """``regions`` as JSON, shared by identical requests for a second (``web.shared``)."""
        after, limit, search = parse_page(query)  # bad input fails here, never shared

        async def build() -> bytes:
            encoded = faust_json.dumps(await self.regions(after, limit, search))  # as the other answers
            return encoded if isinstance(encoded, bytes) else encoded.encode()

        return await self.shared.get((after, limit, search), build)

    async def regions(self, after: str | None, limit: int, search: str | None) -> dict[str, Any]:
        page = self.pipeline.regions().page(after, limit, search)
        partitions = self.settings.topic_partitions
        states = await self.states(page.regions)
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
                "max_regions": self.settings.max_regions,
            },
            "counts": self.pipeline.stats.counts(self.raw_topics),
            "lag": consumer_lag(self.app, self.input_topics),
            "page": {
                "after": after,
                "limit": limit,
                "search": search,
                "next_after": page.next_after,
                "total": page.total,
                "matching": page.matching,
            },
            "regions": [region_summary(states[r], partitions) for r in page.regions if r in states],
        }

    async def region(self, region: str) -> dict[str, Any]:
        return region_summary(await self.state(region), self.settings.topic_partitions)

    async def hours(self, region: str, query: Mapping[str, str]) -> dict[str, Any]:
        hours = hour_range(parse_time("from", query.get("from")), parse_time("to", query.get("to")))
        state = await self.state(region)
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

    def _snapshot(self) -> Snapshot:
        assert self._prepared is not None, "metrics() prepares the snapshot"
        return self._prepared

    async def metrics(self) -> str:
        """The exposition: per-region series for the first ``METRICS_REGION_SERIES_MAX`` regions by name
        (the rest counted), read a few regions per turn of the event loop."""
        index = self.pipeline.regions()
        shown = await self.states(index.names()[: self.settings.metrics_region_series_max])
        lag = consumer_lag(self.app, self.input_topics)
        self._prepared = Snapshot(self.pipeline.stats, self.raw_topics, lag, shown, len(index))
        try:
            return self.prometheus.text()
        finally:
            self._prepared = None

    def owner(self, region: str) -> URL | None:
        """The URL of the worker holding ``region``, or None when it is this one or nobody knows yet."""
        table = self.pipeline.region_table
        topic = table.changelog_topic.get_topic_name()
        try:
            metadata = self.app.router.table_metadata(table.name)
        except Exception:  # no assignment yet
            return None
        url = owner_of(metadata, topic, records_partition(region, self.settings.topic_partitions))
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
    serve(cast(Any, app.web).web_app, pipeline.liveness, pipeline.settings.web_max_concurrent_requests)

    # "/" first: Faust's own index blueprint is added later, and aiohttp answers with the first match.
    @app.page("/", name="solar_agents_dashboard")
    class Dashboard(_View):
        async def get(self, request: Request) -> Response:
            return self.html(DASHBOARD_HTML, headers=dict(_PAGE_HEADERS))

    @app.page("/api/regions", name="solar_agents_regions")
    class Regions(_View):
        async def get(self, request: Request) -> Response:
            body = await site.regions_json(request.query)
            return self.bytes(body, content_type="application/json", headers=dict(_API_HEADERS))

    @app.page("/api/regions/{region}", name="solar_agents_region")
    class Region(_View):
        async def get(self, request: Request, region: str) -> Response:
            forwarded = await _forwarded(self, request, region)
            return forwarded or self.answer(await site.region(region))

    @app.page("/api/regions/{region}/hours", name="solar_agents_region_hours")
    class RegionHoursView(_View):
        async def get(self, request: Request, region: str) -> Response:
            forwarded = await _forwarded(self, request, region)
            return forwarded or self.answer(await site.hours(region, request.query))

    async def _forwarded(view: View, request: Request, region: str) -> Response | None:
        """The answer of the worker that holds ``region``, when that is another one (one hop at most)."""
        check_region(region)
        if FORWARDED_HEADER in request.headers:
            return None
        owner = site.owner(region)
        return None if owner is None else await site.forward(view, request, owner)

    @app.page("/api/deadletters", name="solar_agents_deadletters")
    class DeadLetters(_View):
        async def get(self, request: Request) -> Response:
            return self.answer(site.dead_letters(request.query))

    @app.page("/metrics", name="solar_agents_metrics")
    class Metrics(_View):
        async def get(self, request: Request) -> Response:
            return self.text(
                await site.metrics(), content_type="text/plain; version=0.0.4", headers=dict(_API_HEADERS)
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
