"""A Kafka SASL endpoint in front of the local broker, for the tests of authenticated connections.

The local broker takes ``--authentication`` but cannot check a password: its storage engines (memory and
s3, the only ones in the packaged build) keep no SCRAM credentials (``upsert_user_scram_credential`` does
nothing, a lookup always finds no user: every SCRAM login is "unknown-user"), and it offers no PLAIN. So the
tests put this in front of it: it speaks the broker side of Kafka's SASL exchange as Apache Kafka does
(SaslHandshake v0-1, SaslAuthenticate v0-1, PLAIN and SCRAM-SHA-256/512 as in RFC 5802, a refused login
answered with error 58 SASL_AUTHENTICATION_FAILED and the connection closed, any other request before the
login refused by closing the connection) and, once a client is logged in, passes its bytes to the broker and
back unchanged. The clients (aiokafka in the service, librdkafka in the tests) run their own SASL code
against it. TLS in front of it is stunnel's (``secure_services``).

It holds SCRAM verifiers (salt, iterations, stored key, server key), never a password, and logs no secret.

    python tests/sasl_gateway.py LISTEN_PORT UPSTREAM_PORT CREDENTIALS_JSON
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
AUTHENTICATION_FAILED, UNSUPPORTED_MECHANISM, ILLEGAL_STATE = 58, 33, 34
HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", *HASHES)
ITERATIONS = 4096


@dataclass(frozen=True)
class Verifier:
    """What a SCRAM server keeps of a password (RFC 5802, section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def of(cls, password: str, mechanism: str, salt: bytes | None = None) -> Verifier:
        salt = salt or os.urandom(16)
        name = HASHES[mechanism]
        salted = hashlib.pbkdf2_hmac(name, password.encode(), salt, ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", name)
        return cls(
            salt,
            ITERATIONS,
            hashlib.new(name, client_key).digest(),
            hmac.digest(salted, b"Server Key", name),
        )

    def to_json(self) -> dict[str, Any]:
        b64 = base64.b64encode
        return {
            "salt": b64(self.salt).decode(),
            "iterations": self.iterations,
            "stored_key": b64(self.stored_key).decode(),
            "server_key": b64(self.server_key).decode(),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Verifier:
        d = base64.b64decode
        return cls(d(value["salt"]), int(value["iterations"]), d(value["stored_key"]), d(value["server_key"]))


def write_credentials(path: Path, users: dict[str, str]) -> None:
    """Keep a verifier per user and mechanism (from the passwords given) in ``path``."""
    out = {user: {m: Verifier.of(pw, m).to_json() for m in HASHES} for user, pw in users.items()}
    path.write_text(json.dumps(out))


Credentials = dict[str, dict[str, Verifier]]


class Login:
    """One client's SASL exchange, on the server's side: ``step`` takes a token and answers one, until
    ``user`` is set (logged in) or ``refused`` is."""

    def __init__(self, mechanism: str, credentials: Credentials) -> None:
        self.mechanism = mechanism
        self.credentials = credentials
        self.user: str | None = None
        self.refused: str | None = None
        self._state: tuple[str, str, str, Verifier | None] | None = None

    def step(self, token: bytes) -> bytes:
        if self.mechanism == "PLAIN":
            return self._plain(token)
        return self._scram_final(token) if self._state else self._scram_first(token)

    def _plain(self, token: bytes) -> bytes:
        _, user, password = token.decode().split("\0")
        verifier = self.credentials.get(user, {}).get("SCRAM-SHA-512")
        if verifier and Verifier.of(password, "SCRAM-SHA-512", verifier.salt) == verifier:
            self.user = user
        else:
            self.refused = user
        return b""

    def _scram_first(self, token: bytes) -> bytes:
        gs2_flag, authzid, bare = token.decode().split(",", 2)
        fields = dict(kv.split("=", 1) for kv in bare.split(","))
        user = fields["n"].replace("=2C", ",").replace("=3D", "=")
        verifier = self.credentials.get(user, {}).get(self.mechanism)
        # An unknown user goes through the exchange as any other and fails at its end, as in Kafka.
        salt, iterations = (verifier.salt, verifier.iterations) if verifier else (os.urandom(16), ITERATIONS)
        nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
        first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        self._state = (f"{gs2_flag},{authzid},", f"{bare},{first}", user, verifier)
        return first.encode()

    def _scram_final(self, token: bytes) -> bytes:
        assert self._state is not None
        gs2, auth_message, user, verifier = self._state
        without_proof, _, proof = token.decode().rpartition(",p=")
        fields = dict(kv.split("=", 1) for kv in without_proof.split(","))
        auth = f"{auth_message},{without_proof}".encode()
        name = HASHES[self.mechanism]
        ok = verifier is not None and fields.get("c") == base64.b64encode(gs2.encode()).decode()
        if ok and verifier is not None:
            signature = hmac.digest(verifier.stored_key, auth, name)
            client_key = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
            ok = hmac.compare_digest(hashlib.new(name, client_key).digest(), verifier.stored_key)
        if not ok or verifier is None:
            self.refused = user
            return b""
        self.user = user
        return b"v=" + base64.b64encode(hmac.digest(verifier.server_key, auth, name))


# --- the wire ----------------------------------------------------------------------------------------------


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _frame(correlation_id: int, body: bytes) -> bytes:
    payload = struct.pack(">i", correlation_id) + body
    return struct.pack(">i", len(payload)) + payload


def _body(request: bytes) -> bytes:
    """The request's body after a v1 header (api key, version, correlation id, client id)."""
    (client_id_length,) = struct.unpack_from(">h", request, 8)
    return request[10 + max(client_id_length, 0) :]


async def _read(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def log(event: str, **facts: Any) -> None:
    print(json.dumps({"event": event, **facts}), flush=True)


class Gateway:
    def __init__(self, upstream_port: int, credentials: Credentials) -> None:
        self.upstream_port = upstream_port
        self.credentials = credentials

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if await self._login(reader, writer, upstream):
                await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError, UnicodeDecodeError):
            pass
        finally:
            for w in (writer, *(upstream[1:] if upstream else ())):
                w.close()

    async def _login(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool:
        login: Login | None = None
        while True:
            request = await _read(reader)
            api_key, version, correlation_id = struct.unpack_from(">hhi", request)
            if api_key == API_VERSIONS:  # the broker's own answer
                upstream[1].write(struct.pack(">i", len(request)) + request)
                answer = await _read(upstream[0])
                writer.write(struct.pack(">i", len(answer)) + answer)
            elif api_key == SASL_HANDSHAKE and version == 1:
                (length,) = struct.unpack_from(">h", _body(request))
                mechanism = _body(request)[2 : 2 + length].decode()
                error = 0 if mechanism in MECHANISMS else UNSUPPORTED_MECHANISM
                login = Login(mechanism, self.credentials) if not error else None
                listed = struct.pack(">i", len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
                writer.write(_frame(correlation_id, struct.pack(">h", error) + listed))
            elif api_key == SASL_AUTHENTICATE and version <= 1 and login is not None:
                (length,) = struct.unpack_from(">i", _body(request))
                answer = login.step(_body(request)[4 : 4 + length])
                error, message = 0, None
                if login.refused is not None:
                    error = AUTHENTICATION_FAILED
                    message = (
                        "Authentication failed during authentication due to invalid credentials with SASL "
                        f"mechanism {login.mechanism}"
                    )
                body = struct.pack(">h", error) + _string(message) + struct.pack(">i", len(answer)) + answer
                writer.write(_frame(correlation_id, body + (struct.pack(">q", 0) if version == 1 else b"")))
                await writer.drain()
                if login.refused is not None:
                    log("login_refused", user=login.refused, mechanism=login.mechanism)
                    return False
                if login.user is not None:
                    log("login", user=login.user, mechanism=login.mechanism)
                    return True
            else:  # as Kafka: nothing but the SASL exchange before a login
                log("refused_before_login", api_key=api_key, version=version)
                return False
            await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def main(listen_port: int, upstream_port: int, credentials: Credentials) -> None:
    server = await asyncio.start_server(Gateway(upstream_port, credentials).serve, "127.0.0.1", listen_port)
    log("listening", port=listen_port, upstream=upstream_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    raw = json.loads(Path(sys.argv[3]).read_text())
    verifiers = {u: {m: Verifier.from_json(v) for m, v in ms.items()} for u, ms in raw.items()}
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), verifiers))
