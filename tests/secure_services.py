"""Real services that require encrypted, authenticated connections, for the tests of production settings.

- Certificates made by ``openssl``: a CA, a server certificate for 127.0.0.1 signed by it, a client
  certificate for mutual TLS, and a second CA nobody trusts.
- A broker behind TLS and SASL: ``stunnel`` (a real TLS endpoint, client certificates required) in front of
  the SASL endpoint (``sasl_gateway``) in front of the local broker, which advertises the TLS address.
- PostgreSQL with ``ssl=on`` whose TCP port takes only ``hostssl … scram-sha-256``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sasl_gateway import write_credentials

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres, ServerTls
from solar_agents.cli.demo.services import free_port, port_accepts
from solar_agents.connect.kafka import KafkaConnection

GATEWAY = Path(__file__).with_name("sasl_gateway.py")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Certificates:
    ca: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting only it refuses the servers
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
            "-subj", f"/CN=solar_agents test {ca}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip
    leaves = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        "client": "extendedKeyUsage=clientAuth\n",
    }
    for name, extensions in leaves.items():
        (directory / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions
        )
        _openssl(
            "req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory,
        )  # fmt: skip
    files = ("ca.crt", "other-ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return Certificates(*(directory / name for name in files))


class Process:
    """A child process with its output in a log file; stopped by its own pid."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_accepts("127.0.0.1", port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.proc.args} did not listen on {port}:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def stunnel(accept: int, connect: int, certs: Certificates, workdir: Path) -> Process:
    """TLS on ``accept`` for the plain TCP service on ``connect``; clients must show a certificate of the
    CA."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        raise RuntimeError("stunnel is missing: install the Debian package stunnel4 (scripts/bootstrap does)")
    config = workdir / "stunnel.conf"
    config.write_text(
        "foreground = yes\npid =\ndebug = warning\n"
        f"[kafka]\naccept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n"
        f"cert = {certs.server_cert}\nkey = {certs.server_key}\n"
        f"CAfile = {certs.ca}\nverifyChain = yes\nrequireCert = yes\n"
    )
    process = Process([binary, str(config)], workdir / "stunnel.log")
    process.wait_port(accept)
    return process


class SecureBroker:
    """TLS (stunnel, client certificates required) → SASL (``sasl_gateway``) → the local broker."""

    def __init__(self, workdir: Path, certs: Certificates, users: dict[str, str]) -> None:
        self.workdir = workdir
        self.certs = certs
        self.users = users
        self.tls_port, self.sasl_port = free_port(), free_port()
        self.broker = LocalBroker(workdir=workdir / "broker", advertised_port=self.tls_port)
        self._processes: list[Process] = []

    @property
    def plain_port(self) -> int:
        """The broker itself, no TLS and no SASL (it names the TLS address in its metadata)."""
        return self.broker.port

    def connection(self, user: str, password: str | None = None, **changes: object) -> KafkaConnection:
        """SASL_SSL with mutual TLS as ``user``; ``changes`` replace fields of the KafkaConnection."""
        from pydantic import SecretStr

        base = KafkaConnection(
            servers=(f"127.0.0.1:{self.tls_port}",),
            protocol="SASL_SSL",
            mechanism="SCRAM-SHA-512",
            username=user,
            password=SecretStr(self.users[user] if password is None else password),
            cafile=self.certs.ca,
            certfile=self.certs.client_cert,
            keyfile=self.certs.client_key,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def start(self) -> SecureBroker:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Its own readiness check asks for metadata on its port and finds the TLS address named there.
        self.broker.start()
        credentials = self.workdir / "scram.json"
        write_credentials(credentials, self.users)
        gateway = Process(
            [sys.executable, str(GATEWAY), str(self.sasl_port), str(self.broker.port), str(credentials)],
            self.workdir / "sasl_gateway.log",
        )
        self._processes.append(gateway)
        gateway.wait_port(self.sasl_port)
        self._processes.append(stunnel(self.tls_port, self.sasl_port, self.certs, self.workdir))
        return self

    def logs(self) -> list[Path]:
        return [p.log_path for p in self._processes] + [p for p in [self.broker.log_path] if p]

    def stop(self) -> None:
        for process in reversed(self._processes):
            with contextlib.suppress(OSError):
                process.stop()
        self.broker.stop()


def secure_postgres(certs: Certificates, password: str) -> LocalPostgres:
    """PostgreSQL with ``ssl=on``, TCP only over TLS with the password (scram-sha-256)."""
    return LocalPostgres(password=password, tls=ServerTls(certs.server_cert, certs.server_key))
