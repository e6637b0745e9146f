"""Helpers for the liveness tests: a small real filesystem for DATA_DIR, filling it, the health endpoints,
a timed stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import Worker


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "3m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (the tests run as root, as CI does), unmounted at the end."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, name: str = "filler") -> int:
    """Write zeros into ``directory`` until the filesystem is full; returns the bytes written."""
    written = 0
    block = b"\0" * 4096
    with contextlib.suppress(OSError), (directory / name).open("wb", buffering=0) as out:
        while True:
            written += out.write(block)
    # Whatever small space is left (partial blocks): take it too.
    with contextlib.suppress(OSError), (directory / f"{name}-tail").open("wb", buffering=0) as out:
        while True:
            written += out.write(b"\0")
    return written


def free(directory: Path, name: str = "filler") -> None:
    for path in (directory / name, directory / f"{name}-tail"):
        path.unlink(missing_ok=True)


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float


def probe(worker: Worker, path: str, timeout: float = 5.0) -> Answer | None:
    """GET a health endpoint: status, JSON body and how long it took; None when nothing answers."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(worker.url + path, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return None
    seconds = time.monotonic() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"unparsed": raw[:300].decode(errors="replace")}
    return Answer(status, body, seconds)


def stop_timed(worker: Worker, patience: float = 60.0) -> tuple[int | None, float]:
    """SIGTERM, then wait up to ``patience`` seconds: (exit code, seconds). SIGKILL after that (code None)."""
    assert worker.proc is not None
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    try:
        code = worker.proc.wait(patience)
    except subprocess.TimeoutExpired:
        worker.proc.kill()
        worker.proc.wait()
        return None, time.monotonic() - started
    return code, time.monotonic() - started


def wait_exit(worker: Worker, timeout: float) -> int | None:
    """The worker's exit code once it ends by itself within ``timeout`` seconds, else None."""
    assert worker.proc is not None
    try:
        return worker.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """A process stopped (SIGSTOP) inside, resumed (SIGCONT) at the end: a broker that hangs."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def watch_until_exit(
    worker: Worker, timeout: float, path: str = "/healthz"
) -> tuple[int | None, Answer | None]:
    """Probe ``path`` until the worker exits by itself (or ``timeout`` passes): (exit code or None, the
    first answer that was not 200)."""
    deadline = time.monotonic() + timeout
    unhealthy: Answer | None = None
    while time.monotonic() < deadline:
        answer = probe(worker, path, timeout=2.0)
        if answer is not None and answer.status != 200 and unhealthy is None:
            unhealthy = answer
        code = wait_exit(worker, 0.1)
        if code is not None:
            return code, unhealthy
    return None, unhealthy


FAULT_INJECTION = str(Path(__file__).parent / "faultinject")


def fault_in(topic: str) -> dict[str, str]:
    """Worker settings that make the agent of ``topic`` fail every batch (``faultinject/``)."""
    path = os.pathsep.join(p for p in (FAULT_INJECTION, os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "SOLAR_AGENTS_TEST_FAULT_TOPIC": topic}
