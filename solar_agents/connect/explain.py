"""What a refused connection means for the user: one line naming the setting to change. Pure: it reads an
exception (and what a probe of the port found), never the network.

A ``Problem`` is ``refused`` when the settings and the server disagree (a wrong password, an unknown CA, TLS
against a plaintext port or the reverse, a login required): retrying cannot help, so a command exits 2 and
a worker at start does too. ``unreachable`` is a server not answering at all, which may pass (a worker
waits for it, as before). No line ever holds a secret: they are built from settings' names, user names,
addresses and the servers' own messages, which carry none.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from solar_agents.connect.kafka import KafkaConnection

Kind = Literal["refused", "unreachable"]
# What a probe found a port to speak, when a connection failed where the settings and the port may
# disagree: "tls" (it completed or alerted a TLS handshake), "kafka" (it answered a plaintext request).
Speaks = Literal["tls", "kafka"] | None


@dataclass(frozen=True)
class Problem:
    kind: Kind
    line: str

    def __str__(self) -> str:
        return self.line


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _names(exc: BaseException) -> set[str]:
    return {type(e).__name__ for e in _chain(exc)}


_CLIENT_CERT_REFUSED = re.compile(
    r"CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN", re.I
)
_PASSWORD = "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)"


def kafka_problem(
    exc: BaseException, connection: KafkaConnection, server: str, after_login: bool, speaks: Speaks = None
) -> Problem:
    """Why ``connection`` failed at ``server``: ``after_login`` when the handshake (and SASL) passed and the
    first request failed; ``speaks``: what a probe found the port to speak."""
    protocol = connection.protocol
    names = _names(exc)
    if "SaslAuthenticationFailed" in names:
        return Problem(
            "refused",
            f"the broker at {server} refused the login of user {connection.username!r} "
            f"({connection.mechanism}): check KAFKA_SASL_USERNAME and {_PASSWORD}",
        )
    if "UnsupportedSaslMechanismError" in names:
        offered = re.search(r"Enabled mechanisms are: (.*)$", str(_first(exc, Exception) or ""))
        return Problem(
            "refused",
            f"the broker at {server} does not offer SASL {connection.mechanism}: set KAFKA_SASL_MECHANISM"
            + (f" to one it offers {offered.group(1)}" if offered else ""),
        )
    verify = _first(exc, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        reason = verify.verify_message or str(verify)
        if verify.verify_code == 62 or "hostname" in reason.lower():
            return Problem(
                "refused",
                f"the broker's TLS certificate at {server} does not name that host ({reason}): "
                "name the broker in KAFKA_BOOTSTRAP_SERVERS as its certificate does",
            )
        if verify.verify_code in (9, 10):  # not yet valid, expired: nothing here to change
            return Problem(
                "refused", f"the broker's TLS certificate at {server} is not valid now ({reason}): renew it"
            )
        return Problem(
            "refused",
            f"the broker's TLS certificate at {server} is not signed by a CA this client trusts ({reason}): "
            "set KAFKA_SSL_CAFILE to the CA that signed it",
        )
    tls_error = _first(exc, ssl.SSLError)
    if tls_error is not None and _CLIENT_CERT_REFUSED.search(str(tls_error)):
        return Problem(
            "refused",
            f"the broker at {server} refused this client's TLS certificate (or its absence): set "
            "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE to a certificate signed by a CA the broker trusts",
        )
    if connection.tls and speaks == "kafka":
        return Problem(
            "refused",
            f"the broker at {server} does not speak TLS there (it answered in plaintext): set "
            "KAFKA_SECURITY_PROTOCOL=PLAINTEXT (or SASL_PLAINTEXT), or name its TLS port in "
            "KAFKA_BOOTSTRAP_SERVERS",
        )
    if not connection.tls and speaks == "tls":
        return Problem(
            "refused",
            f"the broker at {server} expects TLS: set KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL), "
            "or name its plaintext port in KAFKA_BOOTSTRAP_SERVERS",
        )
    if after_login and not connection.sasl:
        return Problem(
            "refused",
            f"the broker at {server} closed the connection at the first request: it requires a login; set "
            f"KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT), KAFKA_SASL_MECHANISM, "
            f"KAFKA_SASL_USERNAME and {_PASSWORD}",
        )
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError | TimeoutError):  # no TCP connection
        reason = exc.strerror or type(exc).__name__
        return Problem(
            "unreachable",
            f"no broker answers at {server} ({reason}); start it or set KAFKA_BOOTSTRAP_SERVERS",
        )
    if isinstance(exc, TimeoutError):
        return Problem(
            "unreachable",
            f"the broker at {server} did not answer in time; check KAFKA_BOOTSTRAP_SERVERS and "
            "KAFKA_SECURITY_PROTOCOL",
        )
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return Problem(
        "refused",
        f"cannot connect to the broker at {server} as {protocol} ({detail}); check KAFKA_BOOTSTRAP_SERVERS "
        "and KAFKA_SECURITY_PROTOCOL",
    )


# --- the database ------------------------------------------------------------------------------------------

_DB_PASSWORD = "RISINGWAVE_PASSWORD (or RISINGWAVE_PASSWORD_FILE)"


def database_problem(message: str, where: str, user: str, sslmode: str) -> Problem:
    """Why a database connection failed, from libpq's message (psycopg2's ``OperationalError``)."""
    text = " ".join(message.split())
    first = (message.strip().splitlines() or ["no answer"])[0].strip()
    lower = text.lower()
    rules: list[tuple[bool, Kind, str]] = [
        (
            "password authentication failed" in lower,
            "refused",
            f"the database at {where} refused the password of user {user!r}: check RISINGWAVE_USER and "
            + _DB_PASSWORD,
        ),
        (
            "no password supplied" in lower or "password is required" in lower,
            "refused",
            f"the database at {where} requires a password for user {user!r}: set {_DB_PASSWORD}",
        ),
        (
            "root certificate file" in lower and "does not exist" in lower,
            "refused",
            f"RISINGWAVE_SSLMODE={sslmode} checks the database's certificate against a CA: set "
            "RISINGWAVE_SSLROOTCERT to the CA that signed it",
        ),
        (
            "does not match host name" in lower,
            "refused",
            f"the database's TLS certificate does not name the host of {where} ({first}): set "
            "RISINGWAVE_HOST to a name it holds (or RISINGWAVE_SSLMODE=verify-ca)",
        ),
        (
            "certificate verify failed" in lower,
            "refused",
            f"the database's TLS certificate at {where} is not signed by the CA this client trusts: set "
            "RISINGWAVE_SSLROOTCERT to the CA that signed it",
        ),
        (
            "server does not support ssl" in lower,
            "refused",
            f"the database at {where} does not speak TLS: set RISINGWAVE_SSLMODE=prefer (or disable), or "
            "turn TLS on at the server",
        ),
        (
            "no pg_hba.conf entry" in lower and "no encryption" in lower,
            "refused",
            f"the database at {where} takes only encrypted connections: set RISINGWAVE_SSLMODE=verify-full "
            "with RISINGWAVE_SSLROOTCERT (or require)",
        ),
        (
            "no pg_hba.conf entry" in lower or "pg_hba.conf rejects" in lower,
            "refused",
            f"the database at {where} does not let user {user!r} in from here ({first}): check "
            "RISINGWAVE_USER and RISINGWAVE_DATABASE",
        ),
        (
            "database" in lower and "does not exist" in lower,
            "refused",
            f"the database at {where} does not exist: set RISINGWAVE_DATABASE",
        ),
        (
            "role" in lower and "does not exist" in lower,
            "refused",
            f"the database at {where} has no user {user!r}: set RISINGWAVE_USER",
        ),
    ]
    for matched, kind, line in rules:
        if matched:
            return Problem(kind, line)
    return Problem(
        "unreachable",
        f"cannot reach the database at {where} ({first}); set RISINGWAVE_HOST, RISINGWAVE_PORT, "
        "RISINGWAVE_DATABASE or RISINGWAVE_USER",
    )
