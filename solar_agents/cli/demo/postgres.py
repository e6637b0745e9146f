"""The embedded PostgreSQL server on 127.0.0.1, for the demo and the tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from solar_agents.cli.demo.services import (
    LocalService,
    LocalServiceError,
    children_of,
    free_port,
    log_tail,
    process_alive,
    stop_process,
    terminate,
    wait_gone,
)

__all__ = ["LocalPostgres"]

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

    def own(self, datadir: Path) -> None:
        """Give a new data directory to the server's user, which must reach it."""
        if not (datadir / "PG_VERSION").exists():
            os.chown(datadir, self.uid, self.gid)
        if not self.can_write(datadir):
            raise LocalServiceError(
                f"the `{_SERVER_USER}` user cannot reach {datadir}: every parent directory must be "
                "searchable by it (mode o+x); choose another directory"
            )


def _kwargs(run_as: _RunAs | None) -> dict[str, Any]:
    return run_as.popen_kwargs() if run_as else {}


def _initdb(bindir: Path, datadir: Path, run_as: _RunAs | None) -> None:
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
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/", **_kwargs(run_as))
    if result.returncode != 0:
        raise LocalServiceError(
            f"initdb failed with code {result.returncode} in {datadir}:\n{result.stdout}{result.stderr}"
        )


def _server_command(
    bindir: Path, datadir: Path, host: str, port: int, sockdir: Path, tls: bool = False
) -> list[str]:
    return [
        str(bindir / "postgres"),
        "-D",
        str(datadir),
        "-p",
        str(port),
        "-k",
        str(sockdir),
        "-c",
        f"listen_addresses={host}",
        # No disk flushes: data then survives a crash of the server (the OS still holds it),
        # only not a crash of the machine. synchronous_commit stays on: with it off, kill()
        # loses commits already acknowledged to the client, which fault tests must not see.
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
        *(["-c", "ssl=on"] if tls else []),  # server.crt and server.key in the data directory
    ]


@dataclass(frozen=True)
class ServerTls:
    """TLS for the server: its certificate and key (PEM), and whether TCP takes nothing else. Required, TCP
    takes only ``hostssl`` with a password (scram-sha-256); the Unix socket stays open for set-up."""

    cert: Path
    key: Path
    required: bool = True

    HBA_REQUIRED = (
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
    )

    def install(self, datadir: Path, run_as: _RunAs | None) -> None:
        """Copy the certificate and key into ``datadir`` (readable by the server alone); the access rules."""
        for source, name in ((self.cert, "server.crt"), (self.key, "server.key")):
            target = datadir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if run_as is not None:
                os.chown(target, run_as.uid, run_as.gid)
        if self.required:
            (datadir / "pg_hba.conf").write_text(self.HBA_REQUIRED)


def _socket_dir(datadir: Path, run_as: _RunAs | None) -> tuple[Path, bool]:
    """Where the server puts its Unix socket, and whether that is a directory of its own to remove."""
    if len(str(datadir)) <= _MAX_SOCKET_DIR_LEN:
        return datadir, False
    sockdir = Path(tempfile.mkdtemp(prefix="pgsock-", dir="/tmp"))
    if run_as is not None:
        os.chown(sockdir, run_as.uid, run_as.gid)
    return sockdir, True


def _admin_connect(sockdir: Path, port: int, timeout: int = 5) -> Any:
    # Over the Unix socket, which initdb leaves open (trust) whatever TCP requires.
    conn = psycopg2.connect(
        host=str(sockdir), port=port, user=_SERVER_USER, dbname="postgres", connect_timeout=timeout
    )
    conn.autocommit = True
    return conn


def _running_postmaster(datadir: Path) -> int | None:
    """The pid of the server its pid file says runs on `datadir`, if one does; else None."""
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        pid = int((datadir / "postmaster.pid").read_text().splitlines()[0])
        if process_alive(pid) and _cmdline_is_postgres(pid):
            return pid
    return None


def _cmdline_is_postgres(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        # Without /proc we cannot tell: assume it is, and let the user remove the pid file.
        return True
    return b"postgres" in cmdline or b"postmaster" in cmdline


def _ensure_app_database(conn: Any, user: str, database: str, password: str | None = None) -> None:
    """Create the app's login role and database when missing, so the app's defaults work."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(user)))
        if password is not None:  # stored as a scram-sha-256 verifier (PostgreSQL's default)
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(user)), (password,))
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if cur.fetchone() is None:
            cur.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user))
            )


class LocalPostgres(LocalService):
    """A PostgreSQL server on 127.0.0.1 with a database and a login role for the app.

    With `workdir=None` the data lives in a temporary directory that `cleanup()` (or leaving the
    context manager) removes. With a `workdir`, that directory is the data directory and persists
    between runs (initdb runs only when it holds no PG_VERSION). Stopping and starting again
    reuses the same data directory and port.
    """

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        database: str = "dev",
        user: str = "root",
        password: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.port = port if port is not None else free_port()
        self.database = database
        self.user = user
        self._password = password
        self.tls = tls
        self._persistent = workdir is not None
        self._datadir: Path | None = workdir.absolute() if workdir is not None else None
        self._sockdir: Path | None = None
        self._own_sockdir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as = _RunAs.for_current_user()

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} dbname={self.database} user={self.user}"

    @property
    def datadir(self) -> Path | None:
        return self._datadir

    @property
    def log_path(self) -> Path | None:
        return self._datadir / "server.log" if self._datadir is not None else None

    def connect(self) -> Any:
        """A new psycopg2 connection as the app user to the app database, in autocommit mode: over TCP, or
        over the Unix socket where TCP takes only TLS with a password."""
        local = self.tls is not None and self.tls.required and self._sockdir is not None
        dsn = f"host={self._sockdir} port={self.port} dbname={self.database} user={self.user}"
        conn = psycopg2.connect(dsn if local else self.dsn, connect_timeout=5)
        conn.autocommit = True
        return conn

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        bindir = _postgres_bindir()
        datadir = self._prepare_datadir()
        if not (datadir / "PG_VERSION").exists():
            _initdb(bindir, datadir, self._run_as)
        pid = _running_postmaster(datadir)
        if pid is not None:
            raise LocalServiceError(f"another PostgreSQL server (pid {pid}) is already running on {datadir}")
        (datadir / "postmaster.pid").unlink(missing_ok=True)
        if self.tls is not None:
            self.tls.install(datadir, self._run_as)
        self._sockdir, self._own_sockdir = _socket_dir(datadir, self._run_as)
        cmd = _server_command(bindir, datadir, self.host, self.port, self._sockdir, self.tls is not None)
        with (datadir / "server.log").open("ab") as log:
            # Not `pg_ctl start`, which daemonizes: we keep the postmaster's pid to signal it.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
                **_kwargs(self._run_as),
            )
        try:
            self._wait_ready(timeout)
            with contextlib.closing(_admin_connect(self._sockdir, self.port)) as conn:
                _ensure_app_database(conn, self.user, self.database, self._password)
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
                    terminate(proc, signal.SIGQUIT, 10.0)
            self._proc = None
        self._release_sockdir()

    def kill(self) -> None:
        """SIGKILL the postmaster and its processes, like a crash; a later `start()` recovers."""
        if self._proc is None:
            return
        proc = self._proc
        children = children_of(proc.pid)
        for pid in [proc.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        wait_gone(children, 10.0)
        self._proc = None
        if self._datadir is not None:
            # The pid in it is dead, but it could be reused by an unrelated process by the next start.
            (self._datadir / "postmaster.pid").unlink(missing_ok=True)
        self._release_sockdir()

    def stop_leftover(self, timeout: float = 30.0) -> int | None:
        """Stop (fast) the server an earlier run started on this data directory and left running;
        its pid, or None."""
        if not self._persistent or self._datadir is None or self.running:
            return None
        pid = _running_postmaster(self._datadir)
        if pid is not None:
            stop_process(pid, signal.SIGINT, timeout, children=children_of(pid))
        return pid

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

    def __exit__(self, *exc_info: object) -> None:
        if self._persistent:
            self.stop()
        else:
            self.cleanup()

    def _prepare_datadir(self) -> Path:
        if self._datadir is None:
            self._datadir = Path(tempfile.mkdtemp(prefix="solar-agents-pg-"))
        datadir = self._datadir
        if not datadir.exists():
            datadir.mkdir(parents=True, mode=0o700)
        if self._run_as is not None:
            self._run_as.own(datadir)
        return datadir

    def _release_sockdir(self) -> None:
        if self._own_sockdir and self._sockdir is not None:
            shutil.rmtree(self._sockdir, ignore_errors=True)
        self._sockdir, self._own_sockdir = None, False

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None and self._sockdir is not None
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LocalServiceError(
                    f"postgres exited with code {self._proc.returncode} while starting on port "
                    f"{self.port}; log tail:\n{log_tail(self.log_path)}"
                )
            try:
                # Also covers crash recovery after kill(): "the database system is starting up".
                _admin_connect(self._sockdir, self.port, timeout=2).close()
                return
            except psycopg2.OperationalError as exc:
                last_error = str(exc).strip()
            time.sleep(0.1)
        raise LocalServiceError(
            f"postgres did not accept connections on port {self.port} within {timeout:.0f} s "
            f"({last_error}); log tail:\n{log_tail(self.log_path)}"
        )
