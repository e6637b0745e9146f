"""One connection to the brokers and one to the database with the settings as they are, before a command or
a worker does anything: a refusal becomes one line naming the setting to change (``explain``).

For the brokers: the handshake of every client (TLS, ApiVersions, SASL) and one Metadata request, which a
broker that requires a login refuses. Where the settings and the port may disagree about TLS, the port is
probed for what it does speak: a plaintext Kafka answer, or a TLS handshake.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from solar_agents.connect.explain import Problem, Speaks, database_problem, kafka_problem
from solar_agents.connect.kafka import KafkaConnection

T = TypeVar("T")
PROBE_SECONDS = 3.0


def tls_files_problem(exc: Exception) -> Problem:
    """The client's TLS files cannot be loaded (not PEM, a wrong key password, a key of another cert)."""
    reason = " ".join(str(exc).split())[:160]
    return Problem(
        "refused",
        f"cannot load the Kafka client's TLS files ({reason}): check KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, "
        "KAFKA_SSL_KEYFILE and KAFKA_SSL_KEY_PASSWORD (or KAFKA_SSL_KEY_PASSWORD_FILE)",
    )


async def kafka_problem_of(connection: KafkaConnection, seconds: float = 10.0) -> Problem | None:
    """None if a bootstrap server takes ``connection``; else why not (a refusal before a mere silence)."""
    try:
        options = connection.aiokafka()
    except (ssl.SSLError, OSError) as exc:
        return tls_files_problem(exc)
    options.pop("bootstrap_servers")
    problems = []
    for host, port in connection.addresses():
        problem = await _attempt(connection, options, host, port, seconds)
        if problem is None:
            return None
        problems.append(problem)
    return next((p for p in problems if p.kind == "refused"), problems[0])


async def _attempt(
    connection: KafkaConnection, options: dict[str, Any], host: str, port: int, seconds: float
) -> Problem | None:
    conn = None
    after_login = False
    try:
        conn = await create_conn(
            host, port, client_id="solar_agents-check", request_timeout_ms=int(seconds * 1000), **options
        )
        after_login = True
        await conn.send(MetadataRequest([]))
        return None
    except Exception as exc:
        # Where the handshake failed without saying why: the port may not speak what the settings do.
        unclear = isinstance(exc, TimeoutError) or type(exc).__name__ == "KafkaConnectionError"
        unclear |= isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError)
        speaks = await probe(host, port, connection.tls) if unclear and not after_login else None
        return kafka_problem(exc, connection, f"{host}:{port}", after_login, speaks)
    finally:
        if conn is not None:
            conn.close()


async def probe(host: str, port: int, tls: bool) -> Speaks:
    """What the port speaks that the settings do not: plaintext Kafka (for a TLS client), or TLS."""
    try:
        return await asyncio.wait_for(
            _plaintext_kafka(host, port) if tls else _tls(host, port), PROBE_SECONDS
        )
    except (OSError, TimeoutError, struct.error, asyncio.IncompleteReadError):
        return None


async def _plaintext_kafka(host: str, port: int) -> Speaks:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        client = b"solar_agents-check"
        request = struct.pack(">hhih", 18, 0, 4242, len(client)) + client  # ApiVersions v0
        writer.write(struct.pack(">i", len(request)) + request)
        size, correlation = struct.unpack(">ii", await reader.readexactly(8))
        return "kafka" if correlation == 4242 and size >= 4 else None
    finally:
        writer.close()


async def _tls(host: str, port: int) -> Speaks:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only whether it speaks TLS at all
    try:
        _, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLError as exc:
        return "tls" if "ALERT" in str(exc).upper() else None  # it answered in TLS, refusing
    writer.close()
    return "tls"


def database_problem_of(info: Any) -> Problem | None:
    """None if the database takes a connection made from ``info`` (``sink.ConnectionInfo``); else why not."""
    import psycopg2

    try:
        info.connect().close()
    except psycopg2.OperationalError as exc:
        return database_problem(str(exc), info.where, info.user, info.sslmode)
    return None


def run_blocking(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to its end from synchronous code, even where an event loop is running (a command)."""

    async def run() -> T:
        return await awaitable

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()
