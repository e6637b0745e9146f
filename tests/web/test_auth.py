"""The web view behind ``WEB_AUTH_TOKEN``: the decision (pure), and a real worker in a real Chromium, where
markup that came in with the data stays text."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from browser import Browser, find_browser
from faults_util import sink_count
from kafka_util import Kafka
from pipeline_util import produce_in_order
from pydantic import SecretStr
from scenario import build_feed, interleave
from worker import Names, Worker, http_get, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.runtime.worker import beyond_loopback, warn_if_open
from solar_agents.settings import Settings
from solar_agents.web.auth import COOKIE, AccessPolicy, Decision

TOKEN = "tok-4f1c9e-web"
POLICY = AccessPolicy(SecretStr(TOKEN))


def _decide(
    path: str = "/api/regions",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    method: str = "GET",
    policy: AccessPolicy = POLICY,
) -> Decision:
    return policy.decide(method, path, headers or {}, cookies or {}, query or {})


def test_without_a_token_everything_is_open() -> None:
    assert _decide(policy=AccessPolicy(None)) is Decision.ALLOW


def test_a_request_needs_the_token_as_a_bearer_or_the_session_cookie() -> None:
    assert _decide() is Decision.DENY
    assert _decide(headers={"Authorization": f"Bearer {TOKEN}"}) is Decision.ALLOW
    assert _decide(headers={"Authorization": f"bearer {TOKEN}"}) is Decision.ALLOW
    assert _decide(headers={"Authorization": f"Bearer {TOKEN}x"}) is Decision.DENY
    assert _decide(headers={"Authorization": f"Basic {TOKEN}"}) is Decision.DENY
    assert _decide(cookies={COOKIE: POLICY.session()}) is Decision.ALLOW
    assert _decide(cookies={COOKIE: TOKEN}) is Decision.DENY  # the cookie is not the token itself
    assert POLICY.session() != AccessPolicy(SecretStr("other")).session()
    for path in ("/", "/metrics", "/table/hours/", "/router/", "/api/deadletters"):
        assert _decide(path) is Decision.DENY, path


def test_the_token_in_the_query_logs_a_browser_in_once() -> None:
    assert _decide("/", query={"token": TOKEN}) is Decision.LOGIN
    assert _decide("/", query={"token": "wrong"}) is Decision.DENY
    assert _decide("/", query={"token": TOKEN}, method="POST") is Decision.DENY


def test_public_paths_are_exempt() -> None:
    metrics_public = AccessPolicy(SecretStr(TOKEN), frozenset({"/metrics"}))
    assert _decide("/metrics", policy=metrics_public) is Decision.ALLOW
    assert _decide("/metrics/", policy=metrics_public) is Decision.ALLOW
    assert _decide("/api/regions", policy=metrics_public) is Decision.DENY
    assert POLICY.bearer() == {"Authorization": f"Bearer {TOKEN}"} and AccessPolicy(None).bearer() == {}


def test_a_view_open_beyond_loopback_without_a_token_is_warned_about(tmp_path: Path) -> None:
    assert not any(beyond_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert all(beyond_loopback(host) for host in ("0.0.0.0", "::", "10.1.2.3", "web.internal"))

    def warnings(**values: object) -> list[str]:
        settings = Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[call-arg]
        with structlog.testing.capture_logs() as logs:
            warn_if_open(settings)
        return [entry["event"] for entry in logs]

    assert warnings() == ["web_view_open"]  # the default binds 0.0.0.0
    assert warnings(web_auth_token=TOKEN) == []
    assert warnings(web_host="127.0.0.1") == []


# --- a real worker in a real browser ------------------------------------------------------------------------

XSS_REGION = '<img src=x onerror="window.__x=1">'
HTML_DEAD_LETTER = b'<script>window.__x = 2</script><b onmouseover="window.__x=3">bold</b>'
HOURS = 30
PATHS = (
    "/",
    "/api/regions",
    "/api/deadletters",
    "/metrics",
    "/api/regions/DE_50hertz/hours?from=2019-01-01T00:00Z&to=2019-01-02T00:00Z",
)


@dataclass
class Guarded:
    worker: Worker
    names: Names


@pytest.fixture(scope="module")
def guarded(
    broker: LocalBroker, postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    """A worker behind a token that has processed a region named like markup and a dead letter of HTML."""
    names = Names()
    kafka = Kafka(broker.bootstrap_servers)
    kafka.create_topics({names.solar: 1, names.weather: 1})
    tmp = tmp_path_factory.mktemp("auth")
    worker = Worker(
        worker_env(broker, postgres, names, tmp / "state", WEB_AUTH_TOKEN=TOKEN), tmp / "worker.log"
    )
    try:
        worker.start()
        regions = ("DE_50hertz", XSS_REGION)
        feed = build_feed(hours=HOURS, regions=regions, solar_topic=names.solar, weather_topic=names.weather)
        produce_in_order(kafka, [*interleave(feed), (names.solar, b"html", HTML_DEAD_LETTER)])
        deadline = time.monotonic() + 120
        while True:
            answer = json.loads(http_get(worker.url + "/api/deadletters?limit=100", TOKEN)[1])
            values = [d["value"] for d in answer["dead_letters"]]
            if (
                sink_count(postgres, names.table) == HOURS * len(regions)
                and HTML_DEAD_LETTER.decode() in values
            ):
                break
            assert time.monotonic() < deadline and worker.alive, worker.tail()
            time.sleep(0.5)
        yield Guarded(worker, names)
    finally:
        worker.terminate(timeout=15)


def test_every_page_and_api_refuses_without_the_token_and_answers_with_it(guarded: Guarded) -> None:
    base = guarded.worker.url
    for path in (*PATHS, "/table/hours/", "/router/"):  # Faust's own pages too
        status, body, headers = http_get(base + path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (path, status)
        assert "authentication required" in json.loads(body)["error"]
        assert http_get(base + path, "wrong")[0] == 401, path
    for path in PATHS:
        assert http_get(base + path, TOKEN)[0] == 200, path
    # A wrong token in the query is no login; a right one sets the cookie and drops the token from the URL.
    assert http_get(base + "/?token=wrong")[0] == 401


def test_the_dashboard_behind_the_token_in_chromium_shows_markup_as_text(guarded: Guarded) -> None:
    found = find_browser()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are needed (scripts/bootstrap --browser installs them)")
        pytest.skip("chromium and chromedriver are not installed (scripts/bootstrap --browser)")
    base = guarded.worker.url
    with Browser(*found) as browser:
        browser.get(base + "/")
        assert "authentication required" in browser.script("return document.body.innerText;")
        for path in PATHS:
            assert browser.script(FETCH, base + path) == 401, path
        assert browser.script("return document.body.dataset.loaded;") is None  # no dashboard was served

        browser.get(base + "/?token=" + urllib.parse.quote(TOKEN))
        browser.wait_for(LOADED)
        for path in PATHS:
            assert browser.script(FETCH, base + path) == 200, path

        browser.script(SHOWN, XSS_REGION)  # a click on its row
        browser.wait_for(
            "return document.getElementById('region-title').textContent === arguments[0];", XSS_REGION
        )
        page = browser.script(SHOWN, XSS_REGION)
        assert page["href"] == base + "/", "the token left the address bar"
        assert "solar_agents_session" not in page["cookie"], "the session cookie is HttpOnly"
        assert page["title"] == XSS_REGION and XSS_REGION in page["regions"]
        assert HTML_DEAD_LETTER.decode() in page["dead"]
        assert page["images"] == 0 and page["scripts"] == 1
        assert page["x"] == "undefined"
        assert browser.alert_text() is None


FETCH = "return fetch(arguments[0], {cache: 'no-store'}).then((r) => r.status);"
LOADED = """
return document.body.dataset.loaded === '1'
  && document.querySelectorAll('#regions-body tr[data-region]').length === 2;
"""
SHOWN = """
for (const tr of document.querySelectorAll('#regions-body tr[data-region]')) {
  if (tr.dataset.region === arguments[0] && !tr.classList.contains('sel')) tr.click();
}
return {
  title: document.getElementById('region-title').textContent,
  regions: [...document.querySelectorAll('#regions-body td[data-field=region]')].map((td) => td.textContent),
  dead: [...document.querySelectorAll('#dl-body code.val')].map((c) => c.textContent),
  images: document.querySelectorAll('img, image').length,
  scripts: document.scripts.length,
  x: typeof window.__x,
  cookie: document.cookie,
  href: location.href,
};
"""
