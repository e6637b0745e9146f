"""The demo command: it refuses taken ports before it starts anything, stops it all if its worker dies or
Ctrl-C stops it (however often pressed), and stops what an earlier demo on its directory left running."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker import FAUST

from solar_agents.cli.demo.services import free_port, port_taken, record_pid

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


def _demo(env: dict[str, str], workdir: Path, own_group: bool = False) -> subprocess.Popen[str]:
    # The demo's data directory must be reachable by the `postgres` user when the tests run as root.
    demo = subprocess.Popen(
        [FAUST, "-A", "solar_agents", "demo", "--rate", "50", "--dir", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=workdir,  # a relative --dir is taken from the working directory
        # A process group of its own, as in a terminal: a Ctrl-C there signals the demo and its worker.
        process_group=0 if own_group else None,
    )
    # Reading its output line by line has no timeout of its own: a demo that hangs must not hang the suite.
    watchdog = threading.Timer(DEMO_TIMEOUT_SECONDS, demo.kill)
    watchdog.daemon = True
    watchdog.start()
    return demo


def _started_in(workdir: Path, but: int | None = None) -> list[int]:
    """Processes working in ``workdir`` (the demo, its worker and broker; the database's in a directory of it)
    or naming it (the database)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone, or a zombie
        inside = cwd == str(workdir) or cwd.startswith(f"{workdir}/") or str(workdir) in cmdline
        if inside and int(entry.name) != but:
            found.append(int(entry.name))
    return found


def _gone(pids: list[int], timeout: float = 15) -> list[int]:
    """Those of ``pids`` still alive after up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}/cwd").exists()]
    return [pid for pid in pids if Path(f"/proc/{pid}/cwd").exists()]


def _until(demo: subprocess.Popen[str], prefix: str) -> list[str]:
    """The demo's output lines up to the one starting with ``prefix``."""
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    err = demo.stderr.read() if demo.stderr is not None else ""
    demo.wait()
    raise AssertionError(f"the demo ended (code {demo.returncode}) before {prefix!r}: {lines} {err}")


def _ports_free(ports: dict[str, int]) -> dict[str, bool]:
    return {service: not port_taken("127.0.0.1", port) for service, port in ports.items()}


@pytest.fixture
def workdir() -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(os.path.realpath(tempfile.mkdtemp(prefix="solar-agents-demo-")))
    path.chmod(0o755)
    yield path
    for pid in _started_in(path):  # whatever a failed test left running
        os.kill(pid, signal.SIGKILL)
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


def test_demo_stops_everything_on_ctrl_c_pressed_twice(ports: dict[str, int], workdir: Path) -> None:
    demo = _demo(_demo_env(ports, workdir), workdir, own_group=True)
    _until(demo, "web view")
    started = _started_in(workdir, but=demo.pid)
    assert len(started) >= 3, started  # worker, broker, database (and the database's own processes)
    # ^C^C in the terminal: the second one while the demo waits for its worker to stop.
    os.killpg(demo.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(demo.pid, signal.SIGINT)
    out, err = demo.communicate(timeout=90)
    assert "stopped: worker, broker and database" in out, (out, err)
    assert _gone(started) == []
    assert _ports_free(ports) == {"broker": True, "database": True, "web": True}


def test_demo_stops_what_a_killed_demo_left_running(ports: dict[str, int], workdir: Path) -> None:
    env = _demo_env(ports, workdir)
    first = _demo(env, workdir, own_group=True)
    started = _until(first, "web view")
    worker = int(next(line for line in started if line.startswith("worker ")).split()[2].rstrip(","))
    left = _started_in(workdir, but=first.pid)
    first.kill()  # SIGKILL: it cannot stop what it started
    first.wait()
    assert worker in left and _gone(left, timeout=0) == left
    assert _ports_free(ports) == {"broker": False, "database": False, "web": False}

    second = _demo(env, workdir, own_group=True)
    try:
        lines = _until(second, "web view")
        assert lines[0].startswith(
            f"stopped what an earlier demo left running in demo: worker (pid {worker}), database (pid "
        ), lines
        assert "broker (pid " in lines[0] and lines[1].startswith("broker "), lines
        assert _gone(left, timeout=0) == []
        second.send_signal(signal.SIGINT)
        out, err = second.communicate(timeout=90)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert "stopped: worker, broker and database" in out, (out, err)
    assert _started_in(workdir) == []
    assert _ports_free(ports) == {"broker": True, "database": True, "web": True}


def _holder(port: int) -> subprocess.Popen[bytes]:
    """Another process (not the demo's) that holds ``port``, until killed."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); "
            "print(flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None
    holder.stdout.readline()  # bound
    return holder


@pytest.mark.parametrize("case", ["stale pid files", "a demo running there"])
def test_demo_refuses_a_port_held_by_what_it_did_not_leave(
    ports: dict[str, int], workdir: Path, case: str
) -> None:
    holder = _holder(ports["broker"])
    demo_dir = workdir / "demo"
    (demo_dir / "broker").mkdir(parents=True)
    for pid_file in (demo_dir / "broker" / "tansu.pid", demo_dir / "worker.pid"):
        if case == "stale pid files":  # the holder's pid, but another start time: a later process of that pid
            pid_file.write_text(f"{holder.pid} 1\n")
        else:
            record_pid(pid_file, holder.pid)
    with (demo_dir / "demo.lock").open("ab") as lock:
        if case == "a demo running there":
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            demo = _demo(_demo_env(ports, workdir), workdir)
            out, err = demo.communicate(timeout=60)
            alive = holder.poll() is None
        finally:
            holder.kill()
            holder.wait()
    assert demo.returncode == 2, (out, err)
    assert err.strip().splitlines() == [
        f"error: port {ports['broker']} for the demo's broker is already in use; "
        "stop what holds it or set KAFKA_BOOTSTRAP_SERVERS"
    ], err
    assert out == "" and alive
