"""The worker's web server: dashboard, JSON API and /metrics.

On real services: a real broker, PostgreSQL and worker process fed with the real data set, and the dashboard
in a real headless Chromium. A few pure checks of the parsing and rendering come first.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, find_browser
from dashboard_page import LISTED, PAGE_STATE, READY, SEARCH, SELECT
from http_util import bad_requests
from kafka_util import Kafka
from kafka_util import produce as produce_raw
from scenario import build_feed, interleave
from worker import Names, Worker, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.core.features import COLUMNS, SPEC_ROWS, FeatureRow
from solar_agents.core.hours import Position, RegionHours, Retention, Solar, Weather
from solar_agents.core.wire import decode_message_records, records_partition
from solar_agents.observe.metrics import pipeline_text
from solar_agents.observe.stats import Stats
from solar_agents.steps.align_region import align_batch
from solar_agents.web.api import (
    BadRequest,
    hour_range,
    hours_answer,
    incomplete_hours,
    parse_limit,
    parse_time,
    region_summary,
)
from solar_agents.web.views import FORWARDED_HEADER

XSS_REGION = "<img src=x onerror=alert(1)>"
REGIONS = ("DE_50hertz", XSS_REGION)
HOURS = 120
FIRST_HOUR = datetime(2019, 1, 1, tzinfo=UTC)
LAST_HOUR = FIRST_HOUR + timedelta(hours=HOURS - 1)
HTML_DEAD_LETTER = b'<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
PARTITIONS = 4  # TOPIC_PARTITIONS of the test workers


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- pure ---------------------------------------------------------------------------------------------------


def test_parse_time_accepts_iso_forms() -> None:
    expected = int(datetime(2019, 1, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000
    for text in ("2019-01-05T10:00:00Z", "2019-01-05T10:00Z", "2019-01-05T10:00:00", "2019-01-05 10:00"):
        assert parse_time("from", text) == expected, text
    assert parse_time("from", "2019-01-05T11:00:00+01:00") == expected
    assert parse_time("from", "2019-01-05T11:00:00 01:00") == expected  # '+' unencoded in a query string


@pytest.mark.parametrize(
    "text", [None, "", "  ", "yesterday", "2019-13-01T00:00Z", "1546300800", "2019-01-05T25"]
)
def test_parse_time_rejects(text: str | None) -> None:
    with pytest.raises(BadRequest):
        parse_time("from", text)


def test_hour_range() -> None:
    hour = 3_600_000_000
    assert hour_range(10 * hour, 12 * hour) == range(10, 13)
    assert hour_range(10 * hour + 1, 12 * hour + 5) == range(11, 13)  # an hour starting before 'from' is out
    assert hour_range(10 * hour + 1, 10 * hour + 2) == range(11, 11)  # no hour starts inside: empty
    assert len(hour_range(0, 31 * 24 * hour - 1)) == 31 * 24
    with pytest.raises(BadRequest, match="after"):
        hour_range(2 * hour, hour)
    with pytest.raises(BadRequest, match="too long"):
        hour_range(0, 31 * 24 * hour)


@pytest.mark.parametrize("text", ["abc", "0", "-1", "501", "1.5", ""])
def test_parse_limit_rejects(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_limit(text, 50, 500)


def test_parse_limit() -> None:
    assert parse_limit(None, 50, 500) == 50
    assert parse_limit(" 7 ", 50, 500) == 7
    assert parse_limit("500", 50, 500) == 500


@pytest.mark.parametrize(
    ("key", "partition"), [("", 681), ("a", 524), ("ab", 434), ("abc", 107), ("123456789", 566)]
)
def test_records_partition_matches_the_java_client(key: str, partition: int) -> None:
    # The Java client's partitions of these keys among 1000 partitions (its murmur2 compatibility cases).
    assert records_partition(key, 1000) == partition


def _state() -> RegionHours:
    state = RegionHours("a")
    for hour in range(100, 110):
        state.solar[hour] = Solar(hour, Position(0, hour, 0), float(hour))
    for hour in range(98, 108):
        if hour != 103:
            state.weather[hour] = Weather(hour, Position(0, hour, 0), 1.0, 2.0, 3.0, 50.0, 9.0)
    state.latest_solar, state.latest_weather = 109, 107
    return state


def test_incomplete_hours_and_summary() -> None:
    state = _state()
    assert incomplete_hours(state) == [
        (109, "weather"), (108, "weather"), (103, "weather"), (99, "solar"), (98, "solar"),
    ]  # fmt: skip
    summary = region_summary(state, PARTITIONS, shown=2)
    assert summary["watermark"] == iso(datetime(1970, 1, 5, 11, tzinfo=UTC))  # hour 107
    assert summary["latest_complete"] == summary["watermark"]
    assert summary["incomplete_count"] == 5
    assert summary["incomplete"] == [
        {"hour": "1970-01-05T13:00:00Z", "missing": "weather"},
        {"hour": "1970-01-05T12:00:00Z", "missing": "weather"},
    ]
    assert (summary["hours_kept"], summary["complete_hours"]) == (12, 7)


def test_history_kept_is_where_align_kept_every_hour_a_row_reads() -> None:
    """The view and align share one retention: a row marked as kept is the row align wrote."""
    retention = Retention(reach=24, lateness_hours=48)
    state = RegionHours("R")
    written: dict[int, FeatureRow] = {}
    for hour in range(500_000, 500_200):
        records: list[Solar | Weather] = [
            Solar(hour, Position(0, hour, 0), float(hour % 7)),
            Weather(hour, Position(0, hour, 0), float(hour % 5), 10.0, 20.0, 53.6, 9.9),
        ]
        for row in align_batch(state, records, SPEC_ROWS, retention).rows:
            written[row.hour] = row
    answer = hours_answer(state, range(500_000, 500_200), SPEC_ROWS, retention)
    kept = [entry for entry in answer["hours"] if entry["history_kept"]]
    assert len(answer["hours"]) == retention.hours + 1 and len(kept) == retention.hours + 1 - retention.reach
    horizon = state.horizon(retention)
    assert horizon is not None and min(state.solar) == horizon
    for entry in answer["hours"]:
        hour = int(datetime.fromisoformat(entry["hour"]).timestamp()) // 3600
        assert entry["history_kept"] == (hour - retention.reach >= horizon)
        if entry["history_kept"]:
            expected = dict(zip(COLUMNS, written[hour].as_tuple(), strict=True))
            assert entry["feature"] == {**expected, "timestamp": entry["hour"]}


def test_metrics_text_escapes_labels_and_is_cumulative() -> None:
    stats = Stats()
    stats.ingested["solar"] = 3
    stats.dead_letter("weather", 0, 7, "not JSON", b"{")
    stats.observe_write(10, 0.02)
    stats.observe_write(5, 3.0)
    weird = 'a"b\\c\nd'
    text = pipeline_text(
        stats, ("solar", "weather"), [], {weird: RegionHours(weird, latest_solar=1, latest_weather=2)}
    )
    samples = parse_metrics(text)
    assert samples[("solar_agents_region_watermark_timestamp_seconds", (("region", weird),))] == 3600
    assert samples[("solar_agents_messages_ingested_total", (("topic", "weather"),))] == 0
    assert samples[("solar_agents_dead_letters_total", (("topic", "weather"),))] == 1
    buckets = {
        dict(k[1])["le"]: v for k, v in samples.items() if k[0] == "solar_agents_write_batch_seconds_bucket"
    }
    assert buckets["0.025"] == 1 and buckets["2.5"] == 1 and buckets["5.0"] == 2 and buckets["+Inf"] == 2
    assert samples[("solar_agents_write_batch_seconds_count", ())] == 2
    assert samples[("solar_agents_write_batch_seconds_sum", ())] == pytest.approx(3.02)


def test_metrics_per_region_series_have_a_budget() -> None:
    """Per-region series for the regions shown (METRICS_REGION_SERIES_MAX of them), the rest counted."""
    states = {r: RegionHours(r, latest_solar=5, latest_weather=6) for r in ("a", "b")}
    samples = parse_metrics(pipeline_text(Stats(), ("solar", "weather"), [], states, regions=10_000))
    assert samples[("solar_agents_regions", ())] == 10_000
    assert samples[("solar_agents_region_series_omitted", ())] == 10_000 - 2
    watermarks = [k for k in samples if k[0] == "solar_agents_region_watermark_timestamp_seconds"]
    assert sorted(dict(k[1])["region"] for k in watermarks) == ["a", "b"]
    assert samples[("solar_agents_regions_refused_total", ())] == 0


def test_dead_letter_ring_is_bounded_and_keeps_a_preview() -> None:
    stats = Stats()
    for offset in range(600):
        stats.dead_letter("t", 0, offset, "bad", b"\xff" + b"x" * 300)
    assert len(stats.recent_dead_letters) == 500
    last = stats.recent_dead_letters[-1]
    assert (last.offset, last.value_size) == (599, 301)
    assert last.value_preview == "\ufffd" + "x" * 199
    assert stats.dead_letters["t"] == 600


# --- Prometheus text parsing --------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_metrics(text: str) -> dict[MetricKey, float]:
    """Samples of a Prometheus text exposition; every sample's family must have HELP and TYPE lines first."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    helped: set[str] = set()
    samples: dict[MetricKey, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            typed[name] = kind
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels_text, value_text = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed and family in helped, f"{name} has no HELP/TYPE"
        assert name.startswith("solar_agents_")
        labels: list[tuple[str, str]] = []
        if labels_text:
            consumed = "".join(m.group(0) for m in _LABEL.finditer(labels_text))
            assert consumed == labels_text, f"bad labels: {labels_text!r}"
            labels = [(m.group(1), _unescape(m.group(2))) for m in _LABEL.finditer(labels_text)]
        value = float(value_text)
        assert not math.isnan(value), line
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = value
    return samples


# --- real services ------------------------------------------------------------------------------------------


def http(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    return http_request(urllib.request.Request(url), timeout)


def http_request(request: urllib.request.Request, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def get_json(url: str) -> Any:
    status, _, body = http(url)
    assert status == 200, f"{url}: {status} {body[:300]!r}"
    return json.loads(body)


def hours_url(base: str, region: str, start: str, end: str) -> str:
    query = urllib.parse.urlencode({"from": start, "to": end})
    return f"{base}/api/regions/{urllib.parse.quote(region, safe='')}/hours?{query}"


def produce(kafka: Kafka, order: Sequence[tuple[str, bytes | None, bytes]]) -> Counter[str]:
    by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
    for topic, key, value in order:
        by_topic.setdefault(topic, []).append((key, value))
    for topic, messages in by_topic.items():
        kafka.produce(topic, messages)
    return Counter({topic: len(messages) for topic, messages in by_topic.items()})


def sink_count(postgres: LocalPostgres, table: str) -> int:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            return int(cur.fetchone()[0])
    except Exception as exc:
        if "does not exist" in str(exc):
            return 0
        raise
    finally:
        conn.close()


def sink_rows(postgres: LocalPostgres, table: str, region: str) -> dict[datetime, dict[str, Any]]:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT * FROM "{table}" WHERE region = %s', (region,))
            columns = [d[0] for d in cur.description]
            return {row[1]: dict(zip(columns, row, strict=True)) for row in cur.fetchall()}
    finally:
        conn.close()


def settled(base: str, ingested: Counter[str], dead: Counter[str]) -> dict[str, Any] | None:
    """The /api/regions answer once every message is counted and every input partition fully committed."""
    answer = get_json(base + "/api/regions")
    counts = answer["counts"]
    lag = answer["lag"]
    if counts["ingested"] != dict(ingested) or counts["dead_letters"] != dict(dead):
        return None
    if len(lag) < 2 * 2 + 2 * PARTITIONS or any(entry["lag"] != 0 for entry in lag):
        return None
    return dict(answer)


def wait_settled(
    worker: Worker, postgres: LocalPostgres, table: str, rows: int, ingested: Counter[str], dead: Counter[str]
) -> dict[str, Any]:
    """Wait until the worker is settled and stays so for 6 s (two commit intervals): right after the last
    commit the ingest still reports that nothing it read is uncommitted any more, which is new input for the
    align agent, committed in turn."""
    deadline = time.monotonic() + 120
    answer: dict[str, Any] | None = None
    since: float | None = None
    while time.monotonic() < deadline:
        assert worker.alive, worker.tail()
        answer = settled(worker.url, ingested, dead) if sink_count(postgres, table) == rows else None
        if answer is None:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= 6.0:
            return answer
        time.sleep(0.5)
    raise AssertionError(f"worker never settled; last answer {json.dumps(answer)[:2000]}\n{worker.tail()}")


@dataclass
class Loaded:
    worker: Worker
    names: Names
    kafka: Kafka
    ingested: Counter[str]
    dead: Counter[str]
    rows: int
    tmp: Path


@pytest.fixture(scope="module")
def loaded(
    broker: LocalBroker, postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    """One worker that has processed five days of two regions (one named like markup) and some bad messages.

    Shared by the API and the browser test: both only read.
    """
    names = Names()
    kafka = Kafka(broker.bootstrap_servers)
    kafka.create_topics({names.solar: 2, names.weather: 2})
    tmp = tmp_path_factory.mktemp("web")
    worker = Worker(worker_env(broker, postgres, names, tmp / "state"), tmp / "worker.log")
    try:
        worker.start()
        feed = build_feed(hours=HOURS, regions=REGIONS, solar_topic=names.solar, weather_topic=names.weather)
        order = [*interleave(feed), (names.solar, b"html", HTML_DEAD_LETTER)]
        produced = produce(kafka, order)
        dead = Counter(topic for topic, _, _ in feed.malformed) + Counter({names.solar: 1})
        ingested = produced - dead
        assert ingested == Counter({names.solar: len(feed.solar), names.weather: len(feed.weather)})
        rows = HOURS * len(REGIONS)
        wait_settled(worker, postgres, names.table, rows, ingested, dead)
        yield Loaded(worker, names, kafka, ingested, dead, rows, tmp)
    finally:
        worker.terminate(timeout=15)


def test_records_partition_is_where_a_kafka_producer_puts_the_key(kafka: Kafka) -> None:
    """librdkafka's Java-compatible partitioner, an independent implementation, on the real broker."""
    topic = kafka.new_topic(partitions=7)
    keys = [*REGIONS, *(f"zone-{i}" for i in range(40)), "Nord-Ost \u00fc\u2600", "x" * 64]
    placed = produce_raw(
        kafka.bootstrap, topic, [(k.encode(), b"{}") for k in keys], config={"partitioner": "murmur2"}
    )
    assert [p for p, _ in placed] == [records_partition(k, 7) for k in keys]


def test_api_regions_counts_and_lag(loaded: Loaded) -> None:
    answer = get_json(loaded.worker.url + "/api/regions")
    counts = answer["counts"]
    assert counts["ingested"] == dict(loaded.ingested)
    assert counts["ingested_total"] == sum(loaded.ingested.values())
    assert counts["dead_letters"] == dict(loaded.dead)
    assert counts["dead_letters_total"] == sum(loaded.dead.values())
    assert counts["write_failures"] == 0
    # Rows are written again when a later record changes them; the writer drops superseded ones per batch.
    assert loaded.rows <= counts["rows_written"] <= counts["rows_emitted"]
    assert answer["worker"]["partitions"] == list(range(PARTITIONS))  # one worker holds everything

    lag = {(e["topic"], e["partition"]): e for e in answer["lag"]}
    for topic in (loaded.names.solar, loaded.names.weather):
        total = sum(lag[(topic, p)]["highwater"] for p in (0, 1))
        assert total == loaded.ingested[topic] + loaded.dead[topic]  # high-water marks count every message
        assert all(lag[(topic, p)]["committed"] == lag[(topic, p)]["highwater"] for p in (0, 1))

    regions = {r["region"]: r for r in answer["regions"]}
    assert sorted(regions) == sorted(REGIONS)
    # Where the worker placed each region: the records topic's messages name their regions.
    records = loaded.kafka.consume_all(f"{loaded.names.group}-records", min_messages=1)
    placed: dict[str, set[int]] = {}
    for message in records:
        if message.key and message.value is not None:  # not a progress report
            for region, _ in decode_message_records(message.key, message.value):
                placed.setdefault(region, set()).add(message.partition)
    for name, region in regions.items():
        assert region["watermark"] == iso(LAST_HOUR)
        assert region["latest_solar"] == region["latest_weather"] == iso(LAST_HOUR)
        assert region["latest_complete"] == iso(LAST_HOUR)
        assert region["hours_kept"] == region["complete_hours"]
        assert answer["settings"]["retention_hours"] + 1 <= region["hours_kept"] <= HOURS
        assert region["incomplete_count"] == 0 and region["incomplete"] == []
        assert placed[name] == {region["partition"]} == {records_partition(name, PARTITIONS)}


def test_api_hours_equal_the_sink(loaded: Loaded, postgres: LocalPostgres) -> None:
    base = loaded.worker.url
    overview = get_json(base + "/api/regions")
    retention = overview["settings"]["retention_hours"]
    for summary in overview["regions"]:
        region = summary["region"]
        answer = get_json(hours_url(base, region, iso(FIRST_HOUR), iso(LAST_HOUR)))
        assert answer["region"] == region
        assert answer["watermark"] == iso(LAST_HOUR)
        hours = answer["hours"]
        # Every kept hour, in order, without gaps, up to the last one.
        first_kept = LAST_HOUR - timedelta(hours=summary["hours_kept"] - 1)
        assert answer["oldest_hour"] == iso(first_kept)
        assert [h["hour"] for h in hours] == [
            iso(first_kept + timedelta(hours=i)) for i in range(summary["hours_kept"])
        ]
        assert all(h["feature"] is not None for h in hours)
        stored = sink_rows(postgres, loaded.names.table, region)
        exact = [h for h in hours if h["history_kept"]]
        assert len(exact) == retention + 1 - 24  # the rows whose window and lags are inside the retention
        for entry in exact:
            row = stored[datetime.fromisoformat(entry["hour"])]
            feature = entry["feature"]
            assert feature["timestamp"] == entry["hour"]
            for column, value in row.items():
                if column == "timestamp":
                    continue
                assert feature[column] == (pytest.approx(value) if isinstance(value, float) else value), (
                    column
                )
            assert entry["solar"]["production_mw"] == pytest.approx(row["production_mw"])
            assert entry["weather"]["solar_radiation_wm2"] == (
                None if row["solar_radiation_wm2"] is None else pytest.approx(row["solar_radiation_wm2"])
            )

    # A range inside the kept hours, in other ISO forms: hours whose start lies in [from, to].
    answer = get_json(hours_url(base, REGIONS[0], "2019-01-05T10:30:00", "2019-01-05T13:00:00+01:00"))
    assert [h["hour"] for h in answer["hours"]] == ["2019-01-05T11:00:00Z", "2019-01-05T12:00:00Z"]
    assert (answer["from"], answer["to"]) == ("2019-01-05T11:00:00Z", "2019-01-05T12:00:00Z")
    # Before the kept state: nothing, and no error.
    assert get_json(hours_url(base, REGIONS[0], "2018-12-01T00:00Z", "2018-12-31T23:59Z"))["hours"] == []


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"/api/regions/{'R' * 65}/hours?from=2019-01-05T00:00Z&to=2019-01-05T01:00Z", "1 to 64"),
        ("/api/regions/DE_50hertz/hours?from=yesterday&to=2019-01-05T01:00Z", "ISO 8601"),
        ("/api/regions/DE_50hertz/hours?from=2019-01-05T00:00Z", "missing"),
        ("/api/regions/DE_50hertz/hours?to=2019-01-05T00:00Z", "missing"),
        ("/api/regions/DE_50hertz/hours?from=2019-01-06T00:00Z&to=2019-01-05T00:00Z", "after"),
        ("/api/regions/DE_50hertz/hours?from=2019-01-01T00:00Z&to=2019-03-01T00:00Z", "too long"),
        ("/api/regions/DE_50hertz/hours?from=2019-01-01T00:00Z&to=99999-01-01", "ISO 8601"),
        ("/api/regions/DE_50hertz/hours?from=%00&to=%FF", "ISO 8601"),
        ("/api/deadletters?limit=abc", "integer"),
        ("/api/deadletters?limit=0", "between"),
        ("/api/deadletters?limit=-3", "between"),
        ("/api/deadletters?limit=100000", "between"),
    ],
)
def test_bad_requests_are_400_with_a_json_message(loaded: Loaded, path: str, message: str) -> None:
    status, headers, body = http(loaded.worker.url + path)
    assert status == 400, body[:300]
    assert headers["Content-Type"].startswith("application/json")
    assert message in json.loads(body)["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/regions/nowhere/hours?from=2019-01-05T00:00Z&to=2019-01-05T01:00Z",
        "/api/regions/nowhere",
    ],
)
def test_an_unknown_region_is_a_404_with_a_json_message(loaded: Loaded, path: str) -> None:
    status, headers, body = http(loaded.worker.url + path)
    assert status == 404, body[:300]
    assert headers["Content-Type"].startswith("application/json")
    assert "unknown region" in json.loads(body)["error"]


def test_every_error_is_json_even_before_routing(loaded: Loaded) -> None:
    """What the web server refuses before any view (a request line over 8,190 bytes, NUL or 0xff in the
    path, bytes that are not HTTP) and a path no view has: JSON errors, never the request echoed back."""
    for name, status, headers, body in bad_requests(loaded.worker.web_port):
        assert status == (404 if name == "unknown path" else 400), (name, status, body[:200])
        assert headers["content-type"].startswith("application/json"), (name, headers)
        error = json.loads(body)["error"]
        assert error and b"aaaa" not in body and b"\x00" not in body, (name, error)
    request = urllib.request.Request(loaded.worker.url + "/api/regions", data=b"{}", method="POST")
    status, headers, body = http_request(request)
    assert status == 405 and headers["Allow"] == "GET,HEAD" and "not allowed" in json.loads(body)["error"]


def test_api_regions_pages_and_finds(loaded: Loaded) -> None:
    """/api/regions pages in name order (``limit``, ``after``) and finds (``search``, case-insensitive);
    /api/regions/{region} is one region's summary, the same as in the list."""
    base = loaded.worker.url
    every = get_json(base + "/api/regions")
    names = sorted(REGIONS)
    assert [r["region"] for r in every["regions"]] == names
    assert every["page"] == {
        "after": None, "limit": 100, "search": None, "next_after": None, "total": 2, "matching": 2,
    }  # fmt: skip
    first = get_json(base + "/api/regions?limit=1")
    assert [r["region"] for r in first["regions"]] == names[:1] and first["page"]["next_after"] == names[0]
    query = urllib.parse.urlencode({"limit": 1, "after": first["page"]["next_after"]})
    second = get_json(f"{base}/api/regions?{query}")
    assert [r["region"] for r in second["regions"]] == names[1:] and second["page"]["next_after"] is None
    found = get_json(base + "/api/regions?search=50HERTZ")
    assert [r["region"] for r in found["regions"]] == ["DE_50hertz"]
    assert (found["page"]["matching"], found["page"]["total"]) == (1, 2)
    assert get_json(base + "/api/regions?search=nowhere")["regions"] == []
    for summary in every["regions"]:
        one = get_json(f"{base}/api/regions/{urllib.parse.quote(summary['region'], safe='')}")
        assert one == summary
    for bad, message in (("limit=0", "between"), ("limit=1001", "between"), (f"after={'x' * 65}", "1 to 64")):
        status, _, body = http(f"{base}/api/regions?{bad}")
        assert status == 400 and message in json.loads(body)["error"], body


def test_health_endpoints(loaded: Loaded) -> None:
    status, headers, body = http(loaded.worker.url + "/healthz")
    health = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json"), body
    assert health["live"] is True and health["reason"] is None and health["crashes"] == {}
    assert health["progress"]["ingested"] == sum(loaded.ingested.values())
    assert health["progress"]["rows_written"] >= loaded.rows
    assert health["agents"] == dict.fromkeys(("ingest_solar", "ingest_weather", "align", "write"), "running")
    status, _, body = http(loaded.worker.url + "/readyz")
    assert status == 200, body
    ready = json.loads(body)
    assert ready["partitions"] > 0
    assert ready == {
        "ready": True,
        "live": True,
        "recovered": True,
        "partitions": ready["partitions"],
        "reason": None,
    }


def test_api_dead_letters(loaded: Loaded) -> None:
    base = loaded.worker.url
    answer = get_json(base + "/api/deadletters?limit=500")
    total = sum(loaded.dead.values())
    assert answer["totals"] == dict(loaded.dead)
    assert answer["kept"] == total == len(answer["dead_letters"])
    letters = answer["dead_letters"]
    assert [d["time"] for d in letters] == sorted((d["time"] for d in letters), reverse=True)  # newest first
    assert Counter(d["topic"] for d in letters) == loaded.dead
    assert all(d["reason"] and "\n" not in d["reason"] for d in letters)
    html = [d for d in letters if d["value"] == HTML_DEAD_LETTER.decode()]
    assert len(html) == 1 and html[0]["reason"].startswith("not JSON")
    assert html[0]["value_size"] == len(HTML_DEAD_LETTER)
    not_utf8 = [d for d in letters if d["value"].startswith("\ufffd\ufffd{")]
    assert len(not_utf8) == 1  # the value that is not UTF-8, its bytes replaced
    assert [d["offset"] for d in get_json(base + "/api/deadletters?limit=3")["dead_letters"]] == [
        d["offset"] for d in letters[:3]
    ]
    assert len(get_json(base + "/api/deadletters")["dead_letters"]) == min(total, 50)


def test_metrics_equal_the_api(loaded: Loaded) -> None:
    base = loaded.worker.url
    status, headers, body = http(base + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = parse_metrics(body.decode())
    api = get_json(base + "/api/regions")
    counts = api["counts"]

    def one(name: str, **labels: str) -> float:
        return samples[(f"solar_agents_{name}", tuple(sorted(labels.items())))]

    for topic, n in counts["ingested"].items():
        assert one("messages_ingested_total", topic=topic) == n
    for topic, n in counts["dead_letters"].items():
        assert one("dead_letters_total", topic=topic) == n
    assert one("late_records_total") == counts["late"]
    assert one("rows_written_total") == counts["rows_written"]
    assert one("rows_emitted_total") == counts["rows_emitted"]
    assert one("write_failures_total") == counts["write_failures"]
    assert one("write_batch_seconds_count") == counts["batches_written"] > 0
    assert one("write_batch_seconds_sum") == pytest.approx(counts["write_seconds_total"])
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in samples.items()
        if k[0] == "solar_agents_write_batch_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1] == (math.inf, counts["batches_written"])
    for entry in api["lag"]:
        assert (
            one("consumer_lag", topic=entry["topic"], partition=str(entry["partition"])) == entry["lag"] == 0
        )
    assert one("regions") == len(REGIONS)
    for region in api["regions"]:
        watermark = datetime.fromisoformat(region["watermark"]).timestamp()
        assert one("region_watermark_timestamp_seconds", region=region["region"]) == watermark
        assert one("region_incomplete_hours", region=region["region"]) == region["incomplete_count"]


def test_metrics_carry_faust_sensor_events(loaded: Loaded) -> None:
    samples = parse_metrics(http(loaded.worker.url + "/metrics")[2].decode())
    api = get_json(loaded.worker.url + "/api/regions")

    def one(name: str, **labels: str) -> float:
        return samples[(f"solar_agents_faust_{name}", tuple(sorted(labels.items())))]

    # Every message ingest counted reached Faust's consumer first (dead letters too).
    for topic, n in api["counts"]["ingested"].items():
        received = one("messages_received_total", topic=topic)
        assert received >= n + api["counts"]["dead_letters"].get(topic, 0) > 0
    assert one("commit_seconds_count") > 0 and one("commit_seconds_sum") > 0
    assert one("rebalances_total") >= 1 and one("rebalance_seconds_count") >= 1
    assert one("assignments_total", result="completed") >= 1
    # The committed offsets it reports are the ones the lag is computed from.
    for entry in api["lag"]:
        committed = samples.get(
            (
                "solar_agents_faust_committed_offset",
                (("partition", str(entry["partition"])), ("topic", entry["topic"])),
            )
        )
        if entry["committed"] is not None and committed is not None:
            assert committed == entry["committed"]


def test_readme_lists_every_metric_as_served(loaded: Loaded) -> None:
    text = http(loaded.worker.url + "/metrics")[2].decode()
    served = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Metrics", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(solar_agents_[a-z_]+)", section))
    assert served == listed, (served - listed, listed - served)


# --- the dashboard in a real browser ------------------------------------------------------------------------


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _hour_text(value: str | None) -> str:
    return "—" if value is None else value[:16].replace("T", " ")


def test_dashboard_in_a_real_browser(loaded: Loaded) -> None:
    found = find_browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed (scripts/bootstrap --browser installs them)")
        pytest.skip("chromium and chromedriver are not installed (scripts/bootstrap --browser)")
    base = loaded.worker.url
    shots = loaded.tmp / "screenshots"
    shots.mkdir(exist_ok=True)
    api = get_json(base + "/api/regions")
    first = api["regions"][0]["region"]  # selected when the page opens
    other = api["regions"][1]["region"]
    with Browser(*found) as browser:
        browser.get(base + "/")
        try:
            browser.wait_for(READY, first)
        except TimeoutError:
            print(json.dumps(browser.console(), indent=1))
            raise
        page = browser.script(PAGE_STATE)

        # The numbers on the page are the API's.
        counts = api["counts"]
        for topic, n in counts["ingested"].items():
            assert _number(page["metrics"][f"ingested:{topic}"]) == n
        for key in ("rows_written", "rows_emitted", "dead_letters_total", "late", "write_failures"):
            assert _number(page["metrics"][key]) == counts[key], key
        assert [r["key"] for r in page["regions"]] == [r["region"] for r in api["regions"]]
        for shown, region in zip(page["regions"], api["regions"], strict=True):
            assert shown["region"] == region["region"]  # as text, exactly
            assert shown["watermark"] == _hour_text(region["watermark"])
            assert shown["latest_complete"] == _hour_text(region["latest_complete"])
            for key in ("hours_kept", "complete_hours", "incomplete_count", "partition"):
                assert _number(shown[key]) == region[key], key
        assert sorted(page["lag"]) == sorted([f"{e['topic']}:{e['partition']}", "0"] for e in api["lag"])

        # The chart: one point per hour with a production value in the last 72 hours, and both other lines.
        end = datetime.fromisoformat(api["regions"][0]["latest_complete"])
        chart = get_json(hours_url(base, first, iso(end - timedelta(hours=71)), iso(end)))
        assert page["circles"] == sum(1 for h in chart["hours"] if h["solar"]) == 72
        assert page["average"].count("L") > 24 and page["radiation"].count("L") > 24

        # Another region on a click, and back.
        assert browser.script(SELECT, other)
        browser.wait_for(READY, other)
        assert browser.script(SELECT, XSS_REGION)
        browser.wait_for(READY, XSS_REGION)

        # Markup in data stays text: the region name, the rejected payload.
        page = browser.script(PAGE_STATE)
        assert page["title"] == XSS_REGION
        assert XSS_REGION in [r["region"] for r in page["regions"]]
        assert HTML_DEAD_LETTER.decode() in page["deadValues"]
        assert page["images"] == 0 and page["scripts"] == 1 and page["pwned"] is None
        assert page["circles"] == 72
        assert browser.alert_text() is None

        # Find a region by a part of its name (any case): the table lists the matches only.
        assert browser.script(SEARCH, "50HERTZ")
        browser.wait_for(LISTED, ["DE_50hertz"], True)
        assert browser.script(SEARCH, "")
        browser.wait_for(LISTED, [r["region"] for r in api["regions"]], False)
        browser.wait_for(READY, XSS_REGION)

        screenshot = browser.screenshot(shots / "dashboard.png")
        full = browser.full_page_screenshot(shots / "dashboard-full.png")
        print(f"\nscreenshots: {screenshot} {full}")

        # Two refreshes later still no error of any kind in the console (CSP violations included).
        time.sleep(7)
        errors = [e for e in browser.console() if e.get("level") == "SEVERE"]
        assert errors == [], errors


# --- several workers ----------------------------------------------------------------------------------------


def test_region_hours_are_answered_by_the_worker_that_holds_the_region(
    broker: LocalBroker, postgres: LocalPostgres, kafka: Kafka, names: Names, tmp_path: Path
) -> None:
    regions = tuple(f"zone-{i}" for i in range(8))
    assert len({records_partition(r, PARTITIONS) for r in regions}) >= 3
    kafka.create_topics({names.solar: 2, names.weather: 2})
    # Both workers first, then the data: the assignment is settled before there is any state to move.
    pair = [
        Worker(
            worker_env(broker, postgres, names, tmp_path / f"state-{i}"),
            tmp_path / f"worker-{i}.log",
            args=("--web-host", "127.0.0.1"),  # the URL the other worker forwards to
        )
        for i in range(2)
    ]
    try:
        for worker in pair:
            worker.start()
        deadline = time.monotonic() + 60
        while True:
            held = [set(get_json(w.url + "/api/regions")["worker"]["partitions"]) for w in pair]
            if all(held) and not held[0] & held[1] and held[0] | held[1] == set(range(PARTITIONS)):
                break
            assert time.monotonic() < deadline, f"partitions never split: {held}"
            time.sleep(0.5)

        hours = 30
        feed = build_feed(hours=hours, regions=regions, solar_topic=names.solar, weather_topic=names.weather)
        produce(kafka, interleave(feed))
        last = iso(FIRST_HOUR + timedelta(hours=hours - 1))
        deadline = time.monotonic() + 120
        while True:
            answers = [get_json(w.url + "/api/regions") for w in pair]
            where = {
                r["region"]: i for i, a in enumerate(answers) for r in a["regions"] if r["watermark"] == last
            }
            if sink_count(postgres, names.table) == hours * len(regions) and len(where) == len(regions):
                break
            assert time.monotonic() < deadline, f"never settled: {where}\n{pair[0].tail()}\n{pair[1].tail()}"
            time.sleep(0.5)
        assert held == [set(a["worker"]["partitions"]) for a in answers]  # no rebalance since
        assert set(where.values()) == {0, 1}

        for region in regions:
            owner = where[region]
            assert records_partition(region, PARTITIONS) in held[owner]
            url_of = [hours_url(w.url, region, "2019-01-01T00:00Z", "2019-01-02T05:00Z") for w in pair]
            local = http(url_of[owner])
            forwarded = http(url_of[1 - owner])
            assert local[0] == forwarded[0] == 200, (local, forwarded)
            assert FORWARDED_HEADER not in local[1]
            assert forwarded[1][FORWARDED_HEADER] == answers[owner]["worker"]["url"]
            assert json.loads(forwarded[2]) == json.loads(local[2])
            assert len(json.loads(local[2])["hours"]) == hours

            summaries = [http(f"{w.url}/api/regions/{region}") for w in pair]
            assert summaries[0][0] == summaries[1][0] == 200
            assert json.loads(summaries[0][2]) == json.loads(summaries[1][2])

        # An unknown region is the owner's 404, forwarded as it is.
        unknown = "nowhere"
        status, _, body = http(hours_url(pair[0].url, unknown, "2019-01-01T00:00Z", "2019-01-01T05:00Z"))
        assert status == 404 and "unknown region" in json.loads(body)["error"]
    finally:
        for worker in pair:
            worker.terminate(timeout=15)
