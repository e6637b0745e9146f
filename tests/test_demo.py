"""The demo command: it refuses taken ports before it starts anything, and stops it all if its worker dies."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker import FAUST

from solar_agents.local import free_port, port_taken

DEMO_TIMEOUT_SECONDS = 240


def _listen(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((host, port))
    sock.listen()
    return sock


def _demo_env(ports: dict[str, int], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RISINGWAVE_", "WEB_"))}
    names = f"d{os.getpid()}"
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{ports['broker']}",
        RISINGWAVE_PORT=str(ports["database"]),
        WEB_PORT=str(ports["web"]),
        WEB_HOST="127.0.0.1",
        KAFKA_CONSUMER_GROUP=f"{names}-features",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def ports() -> Iterator[dict[str, int]]:
    yield {"broker": free_port(), "database": free_port(), "web": free_port()}


def _demo(env: dict[str, str], workdir: Path) -> subprocess.Popen[str]:
    # The demo's data directory must be reachable by the `postgres` user when the tests run as root.
    demo = subprocess.Popen(
        [FAUST, "-A", "solar_agents", "demo", "--rate", "50", "--dir", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,  # a relative --dir is taken from the working directory
    )
    # Reading its output line by line has no timeout of its own: a demo that hangs must not hang the suite.
    watchdog = threading.Timer(DEMO_TIMEOUT_SECONDS, demo.kill)
    watchdog.daemon = True
    watchdog.start()
    return demo


@pytest.fixture
def workdir() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="solar-agents-demo-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("service", "setting"),
    [("broker", "KAFKA_BOOTSTRAP_SERVERS"), ("database", "RISINGWAVE_PORT"), ("web", "WEB_PORT")],
)
def test_demo_refuses_a_taken_port_naming_it_and_its_setting(
    ports: dict[str, int], workdir: Path, service: str, setting: str
) -> None:
    with _listen(ports[service]):
        demo = _demo(_demo_env(ports, workdir), workdir)
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 2, (out, err)
    assert err.strip().splitlines() == [
        f"error: port {ports[service]} for the demo's {'web view' if service == 'web' else service} "
        f"is already in use; stop what holds it or set {setting}"
    ], err
    assert "broker " not in out  # nothing was started
    assert not (workdir / "demo" / "postgres").exists()


def test_demo_stops_everything_when_its_worker_dies(ports: dict[str, int], workdir: Path) -> None:
    demo = _demo(_demo_env(ports, workdir), workdir)
    assert demo.stdout is not None and demo.stderr is not None
    lines: list[str] = []
    try:
        # The ports were free at the check: take the web port once the broker runs, before the worker binds.
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("broker "):
                break
        holder = _listen(ports["web"])
        try:
            rest, err = demo.communicate(timeout=120)
        finally:
            holder.close()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    lines += rest.splitlines(keepends=True)
    assert demo.returncode == 2, (lines, err)
    assert err.strip().splitlines() == [
        f"error: the worker exited: port {ports['web']} is already in use; stop what holds it or set WEB_PORT"
    ], err
    out = "".join(lines)
    assert "keeps running" not in out and "web view" not in out, out
    # The broker and the database it started are stopped: their ports are free again.
    deadline = time.monotonic() + 10
    while (port_taken("127.0.0.1", ports["broker"]) or port_taken("127.0.0.1", ports["database"])) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert not port_taken("127.0.0.1", ports["broker"])
    assert not port_taken("127.0.0.1", ports["database"])


def test_demo_stops_everything_when_its_worker_is_killed(ports: dict[str, int], workdir: Path) -> None:
    demo = _demo(_demo_env(ports, workdir), workdir)
    assert demo.stdout is not None
    pid = None
    try:
        for line in demo.stdout:
            if line.startswith("worker "):
                pid = int(line.split()[2].rstrip(","))
            if line.startswith("web view"):
                break
        assert pid is not None
        os.kill(pid, 9)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 2
    assert err.strip().splitlines() == [
        "error: the worker exited with code -9; see its log demo/worker.log"
    ], err
    assert not port_taken("127.0.0.1", ports["broker"])
