"""Run the real worker (``faust -A solar_agents worker``) as a child process, as users run it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.cli.demo.services import free_port

FAUST = str(Path(sys.executable).with_name("faust"))


@dataclass
class Names:
    """Topic, group and table names unique to one test, so tests share one broker and one database."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")

    @property
    def solar(self) -> str:
        return f"{self.prefix}-solar"

    @property
    def weather(self) -> str:
        return f"{self.prefix}-weather"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}-deadletter"

    @property
    def group(self) -> str:
        return f"{self.prefix}-features"

    @property
    def table(self) -> str:
        return f"features_{self.prefix}"


def worker_env(
    broker: LocalBroker,
    postgres: LocalPostgres,
    names: Names,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The environment of a worker pointed at the test services; ``extra`` overrides settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RISINGWAVE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        KAFKA_TOPIC_SOLAR=names.solar,
        KAFKA_TOPIC_WEATHER=names.weather,
        KAFKA_CONSUMER_GROUP=names.group,
        DEADLETTER_TOPIC=names.deadletter,
        FEATURES_TABLE=names.table,
        RISINGWAVE_HOST=postgres.host,
        RISINGWAVE_PORT=str(postgres.port),
        RISINGWAVE_DATABASE=postgres.database,
        RISINGWAVE_USER=postgres.user,
        RISINGWAVE_PASSWORD="",
        TOPIC_PARTITIONS="4",
        DATA_DIR=str(data_dir),
        WEB_PORT=str(free_port()),
        WEB_HOST="127.0.0.1",
        BATCH_MAX_WAIT_SECONDS="0.3",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Worker:
    """One worker process; its output goes to a log file that tests print on failure."""

    def __init__(self, env: Mapping[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def web_port(self) -> int:
        return int(self.env["WEB_PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, wait: bool = True, timeout: float = 60.0) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [FAUST, "-A", "solar_agents", "worker", "-l", "info", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.env.get("WORKER_CWD"),
        )
        log.close()
        if wait:
            self.wait_web(timeout)
        return self

    def wait_web(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers (a 401 behind WEB_AUTH_TOKEN)
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"worker web port {self.web_port} not up in {timeout}s:\n{self.tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it overstays. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def http_get(url: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of a GET, with the web token as a bearer when given."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers.items())


def remove_state(data_dir: Path) -> None:
    shutil.rmtree(data_dir, ignore_errors=True)
