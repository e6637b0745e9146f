"""A real headless Chromium, driven over the W3C WebDriver protocol (chromedriver) with urllib and json."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from solar_agents.cli.demo.services import free_port

CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


class WebDriverError(RuntimeError):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message[:500]}")
        self.status = status
        self.error = error


class Browser:
    """One chromedriver process and one browser session; a fresh profile directory each time."""

    def __init__(self, chromium: str, chromedriver: str, width: int = 1440, height: int = 900) -> None:
        self.chromium = chromium
        self.chromedriver = chromedriver
        self.width = width
        self.height = height
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.session: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: Path | None = None

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        self._proc = subprocess.Popen(
            [self.chromedriver, f"--port={self.port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromedriver did not come up on port {self.port}")
            time.sleep(0.1)
        self._profile = Path(tempfile.mkdtemp(prefix="solar-agents-chromium-"))
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    *CHROME_ARGS,
                    f"--user-data-dir={self._profile}",
                    f"--window-size={self.width},{self.height}",
                ],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        answer = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}}, timeout=60)
        self.session = answer["sessionId"]
        return self

    def stop(self) -> None:
        if self.session is not None:
            with contextlib.suppress(OSError, WebDriverError):
                self._call("DELETE", f"/session/{self.session}", timeout=10)
            self.session = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- protocol -------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json; charset=utf-8")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}").get("value", {})
            raise WebDriverError(exc.code, payload.get("error", "?"), payload.get("message", "")) from None
        value = answer.get("value")
        if "sessionId" in answer:  # the new-session answer of older drivers
            return answer
        return value

    def _session(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        assert self.session is not None, "no session"
        return self._call(method, f"/session/{self.session}{path}", body, timeout)

    # --- commands -------------------------------------------------------------------------------------------

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url}, timeout=60)

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` as a function body in the page and return its JSON-able result."""
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def wait_for(self, source: str, *args: Any, timeout: float = 30.0) -> Any:
        """Poll ``source`` until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.script(source, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page condition not met in {timeout} s: {source[:200]}")
            time.sleep(0.2)

    def alert_text(self) -> str | None:
        """The text of an open alert/confirm/prompt, or None when there is none."""
        try:
            return str(self._session("GET", "/alert/text"))
        except WebDriverError as exc:
            if exc.error == "no such alert":
                return None
            raise

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call (chromedriver's log endpoint)."""
        return list(self._session("POST", "/se/log", {"type": "browser"}))

    def screenshot(self, path: Path) -> Path:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        path.write_bytes(png)
        return path

    def full_page_screenshot(self, path: Path) -> Path:
        """The whole page, beyond the window, through the DevTools protocol."""
        size = self.script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];"
        )
        answer = self._session(
            "POST",
            "/goog/cdp/execute",
            {
                "cmd": "Page.captureScreenshot",
                "params": {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1},
                },
            },
        )
        path.write_bytes(base64.b64decode(answer["data"]))
        return path
