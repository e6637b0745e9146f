"""The one place the ``KAFKA_*`` connection settings become client options.

Faust's consumer and producer, every aiokafka client the service and its commands open (the records read
again, the end-offset probes, replay's scan and commit, the demo's producer) and librdkafka's (tests and
benchmarks) all take their options from a ``KafkaConnection``, so that none of them can connect differently.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from solar_agents.settings import Settings

DEFAULT_PORT = 9092


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to meet them. Its repr shows no secret (``SecretStr``)."""

    servers: tuple[str, ...]
    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: SecretStr | None = None
    _context: ssl.SSLContext | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, settings: Settings) -> KafkaConnection:
        return cls(
            servers=tuple(h.strip() for h in settings.kafka_bootstrap_servers.split(",") if h.strip()),
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            key_password=settings.kafka_ssl_key_password,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def bootstrap(self) -> str:
        """``host1:port1,host2:port2``"""
        return ",".join(self.servers)

    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each bootstrap server."""
        out = []
        for server in self.servers:
            host, sep, port = server.rpartition(":")
            out.append((host, int(port)) if sep and port.isdigit() else (server, DEFAULT_PORT))
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (one per connection settings, made at the first use); None without TLS.
        Verifies the broker's certificate and host name against ``cafile``, else the system's authorities."""
        if not self.tls:
            return None
        if self._context is None:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile) if self.cafile else None
            )
            if self.certfile is not None:
                context.load_cert_chain(
                    str(self.certfile),
                    str(self.keyfile) if self.keyfile else None,
                    password=_secret(self.key_password),
                )
            object.__setattr__(self, "_context", context)
        return self._context

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka's consumer, producer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.servers),
            "security_protocol": self.protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.sasl:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": _secret(self.password),
            }
        return options

    def faust(self) -> dict[str, Any]:
        """Faust's ``broker`` and ``broker_credentials`` settings (its consumer, producer and topic admin)."""
        import faust

        credentials: Any = None
        if self.sasl:
            credentials = faust.SASLCredentials(
                username=self.username,
                password=_secret(self.password),
                ssl_context=self.ssl_context(),
                mechanism=self.mechanism,
            )
        elif self.tls:
            credentials = faust.SSLCredentials(self.ssl_context())
        return {
            "broker": ";".join(f"kafka://{server}" for server in self.servers),
            "broker_credentials": credentials,
        }

    def librdkafka(self) -> dict[str, str]:
        """The same as a librdkafka (confluent-kafka) configuration."""
        config = {"bootstrap.servers": self.bootstrap, "security.protocol": self.protocol.lower()}
        if self.sasl:
            config |= {
                "sasl.mechanisms": self.mechanism or "",
                "sasl.username": self.username or "",
                "sasl.password": _secret(self.password) or "",
            }
        if self.tls:
            paths = {
                "ssl.ca.location": self.cafile,
                "ssl.certificate.location": self.certfile,
                "ssl.key.location": self.keyfile or self.certfile if self.certfile else None,
            }
            config |= {name: str(path) for name, path in paths.items() if path is not None}
            if self.key_password is not None:
                config["ssl.key.password"] = self.key_password.get_secret_value()
        return config
