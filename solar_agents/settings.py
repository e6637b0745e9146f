"""Typed settings: the environment, else ``settings.env``, else the defaults of SPEC."""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NoReturn, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from solar_agents.connect.kafka import KafkaConnection
from solar_agents.core.feature_set import FeatureFileError, FeatureSet
from solar_agents.core.feature_set import parse as parse_features
from solar_agents.core.hours import Retention

KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# Every secret; each can also be read from a file named by ``<NAME>_FILE`` (the container convention).
SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password", "risingwave_password", "web_auth_token")


def read_secret_file(name: str, path: str) -> str:
    """The secret in the file ``path`` (one trailing line break dropped); ValueError naming the setting."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{name.upper()}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ValueError(f"{name.upper()}: the file {path} is empty")
    return secret


class ConnectionSettings(BaseSettings):
    """How the service meets the broker, the database and the web: TLS, SASL, secrets (docs/DESIGN.md,
    "Production connections"). Secrets are ``SecretStr``: their repr and str never show the value."""

    kafka_security_protocol: KafkaProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    # None: the system's certificate authorities.
    kafka_ssl_cafile: Path | None = None
    # Mutual TLS: the client certificate, its key (if not in the same file) and the key's password.
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_key_password_file: Path | None = None

    risingwave_password: SecretStr = SecretStr("")
    risingwave_password_file: Path | None = None
    risingwave_sslmode: SslMode = "prefer"
    risingwave_sslrootcert: Path | None = None

    web_auth_token: SecretStr | None = None
    web_auth_token_file: Path | None = None
    web_metrics_public: bool = False

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in SECRETS:
            path = data.get(f"{name}_file")
            if not path:
                continue
            if data.get(name):
                raise ValueError(f"{name.upper()}_FILE: {name.upper()} is set too; set one of them")
            data = {**data, name: read_secret_file(f"{name}_file", str(path))}
        return data

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("risingwave_sslmode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "risingwave_sslrootcert")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _coherent_kafka(self) -> Self:
        protocol = self.kafka_security_protocol
        sasl = {
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
        }
        tls = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if protocol.startswith("SASL_"):
            for name, value in sasl.items():
                if not value:
                    raise ValueError(f"{name}: is required with KAFKA_SECURITY_PROTOCOL={protocol}")
        elif given := [name for name, value in sasl.items() if value]:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL: is {protocol}, which uses no SASL, but {given[0]} is set; "
                "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
        if not protocol.endswith("SSL") and (given := [name for name, value in tls.items() if value]):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL: is {protocol}, which uses no TLS, but {given[0]} is set; "
                "set KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError(
                "KAFKA_SSL_CERTFILE: is required with KAFKA_SSL_KEYFILE (the client certificate)"
            )
        return self


class Settings(ConnectionSettings):
    """Every setting of the service; names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(
        env_file="settings.env", extra="ignore", frozen=True, env_ignore_empty=True
    )

    kafka_bootstrap_servers: str = "localhost:30092"
    kafka_topic_solar: str = "solar_production_raw"
    kafka_topic_weather: str = "weather_raw"
    kafka_consumer_group: str = "features-service"

    risingwave_host: str = "localhost"
    risingwave_port: int = 4567
    risingwave_database: str = "dev"
    risingwave_user: str = "root"

    features_table: str = Field("features_enriched", min_length=1, max_length=63)
    deadletter_topic: str = "solar_agents-deadletter"
    # The largest dead letter sent with its original bytes (at most what the broker accepts; Kafka's
    # default is about 1 MB). A larger one goes out with the facts only (docs/SPEC.md).
    deadletter_max_bytes: int = Field(1_000_000, ge=4096)
    batch_size: int = Field(1000, ge=1)
    batch_max_wait_seconds: float = Field(1.0, gt=0)
    feature_window_hours: int = Field(24, ge=1, le=24 * 366)
    # A TOML file of features added to SPEC's, or redefining SPEC's by name (docs/SPEC.md, "Feature set").
    features_file: Path | None = None
    allowed_lateness_hours: int = Field(48, ge=0)
    default_region: str = Field("DE", min_length=1, max_length=64)
    region_locations: dict[str, tuple[float, float]] = Field(default_factory=dict)
    topic_partitions: int = Field(8, ge=1)
    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "0.0.0.0"
    data_dir: Path = Path("./data")

    # Beyond SPEC: tuning knobs with safe defaults.
    exit_when_caught_up: bool = False  # a worker that exits once caught up: what `backfill` runs
    log_level: str = "info"
    ingest_batch_size: int = Field(2000, ge=1)
    ingest_batch_max_wait_seconds: float = Field(0.25, gt=0)
    # How far in event time one raw partition with a backlog may be read ahead of the slowest (docs/SPEC.md,
    # "Batches and hops"): what the align step keeps in memory grows with it.
    max_read_skew_hours: int = Field(48, ge=0)
    # The align step's table writes are held and flushed together: once the records applied since the last
    # flush number this many per table entry to write (so at most one changelog record per that many, besides
    # the final state; below 48, or long histories, whose blocks are written once filled and once pruned,
    # would never flush) and a block's worth per region, when the input pauses, at a rebalance, and at least
    # this often. A batch commits only after its flush: a crash reads again what came since (docs/DESIGN.md,
    # "Table writes held until a flush").
    table_flush_records_per_write: int = Field(30, ge=1)
    table_flush_max_seconds: float = Field(60.0, gt=0)
    # Run the steps (parse, align, write) in helper processes beside the worker's event loop (a second
    # core); off, they run in the worker's own process (docs/DESIGN.md, "Helper processes").
    step_processes: bool = True
    # Short group timeouts make restarts fast on a local broker; see docs/DESIGN.md for a production cluster.
    broker_session_timeout_seconds: float = Field(3.0, gt=0)
    broker_heartbeat_interval_seconds: float = Field(0.5, gt=0)
    broker_rebalance_timeout_seconds: float = Field(10.0, gt=0)
    broker_commit_interval_seconds: float = Field(1.0, gt=0)
    # How long a fetch may wait for records (Faust fixes 1.5 s). On brokers that answer a waiting fetch only
    # at its end it is the latency of each topic hop; shorter costs backfill throughput (docs/DESIGN.md).
    broker_fetch_max_wait_seconds: float = Field(0.1, gt=0, le=30)
    producer_linger_seconds: float = Field(0.01, ge=0)
    # How much one fetch may bring per partition, and how many records one poll hands on (Faust: 1 MiB and
    # all). Everything fetched is handed to the agents before the next fetch's records, so a deep prefetch
    # of the raw topics keeps the records and rows topics waiting behind it (docs/DESIGN.md).
    consumer_max_fetch_bytes: int = Field(128 * 1024, ge=64 * 1024)
    # How much one fetch response may bring over all its partitions (aiokafka: 50 MiB). A broker may answer
    # past the per-partition limit with whole record batches (the local one sends several MiB a partition),
    # and a partition's fetched records stay in memory until its agent takes them, held reads longest: this
    # bounds the worker's memory by the fetch rather than by the backlog behind it (docs/DESIGN.md).
    consumer_max_fetch_response_bytes: int = Field(1024 * 1024, ge=64 * 1024)
    broker_max_poll_records: int = Field(1000, ge=0)  # 0: all that was fetched
    db_connect_timeout_seconds: int = Field(5, ge=1)
    db_retry_max_seconds: float = Field(10.0, gt=0)
    # How long a stop (SIGTERM, or a fatal fault) may take before the worker exits anyway, whatever is down:
    # below an orchestrator's grace period (Kubernetes: 30 s). Input not yet written is not committed and is
    # read again at the next start (docs/DESIGN.md, "Liveness").
    shutdown_timeout_seconds: float = Field(8.0, gt=0, le=300)
    # Regions one worker holds at most: a message for a new region past it is a dead letter (a producer
    # sending any region names would otherwise grow memory, /api/regions and /metrics without end).
    max_regions: int = Field(10_000, ge=1)
    # Regions with per-region series on /metrics (two series each), the first by name; the rest are counted.
    metrics_region_series_max: int = Field(500, ge=0)
    # Web requests served at once; more get a 503 at once (the health endpoints are never refused).
    web_max_concurrent_requests: int = Field(8, ge=1)
    # Dead letters are logged in full once per reason, then counted: one summary line per interval.
    deadletter_log_interval_seconds: float = Field(60.0, gt=0)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        # An infinite wait or timeout is never meant: it turns a fault into a hang.
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        if not [h for h in value.split(",") if h.strip()]:
            raise ValueError("names no broker (host:port, comma-separated)")
        return value

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, value: Path) -> Path:
        # Checked here so that the worker's mkdir does not end in a bare OS error later.
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a directory")
        if not value.exists() and not value.absolute().parent.is_dir():
            raise ValueError(f"the parent directory of {value} does not exist; create it or choose another")
        return value

    @field_validator("region_locations")
    @classmethod
    def _check_locations(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for region, (lat, lon) in value.items():
            if not (1 <= len(region) <= 64 and -90 <= lat <= 90 and -180 <= lon <= 180):
                raise ValueError(f"bad REGION_LOCATIONS entry {region!r}: [{lat}, {lon}]")
        return value

    @cached_property
    def kafka(self) -> KafkaConnection:
        """How every client of the service meets the brokers (``connect.kafka``)."""
        return KafkaConnection.of(self)

    def faust_consumer_options(self) -> dict[str, Any]:
        """The Faust settings of how the app meets the broker as a consumer: the pipeline's app and the
        benchmark's bare-Faust floor both take them from here, so the floor reads as the pipeline does."""
        return {
            **self.kafka.faust(),
            "topic_partitions": self.topic_partitions,
            "consumer_auto_offset_reset": "earliest",
            "broker_session_timeout": self.broker_session_timeout_seconds,
            "broker_heartbeat_interval": self.broker_heartbeat_interval_seconds,
            "broker_rebalance_timeout": self.broker_rebalance_timeout_seconds,
            "broker_commit_interval": self.broker_commit_interval_seconds,
            "consumer_max_fetch_size": self.consumer_max_fetch_bytes,
            "broker_max_poll_records": self.broker_max_poll_records or None,
        }

    @property
    def records_topic(self) -> str:
        """Internal topic: validated records of both feeds, a region always in the same partition."""
        return f"{self.kafka_consumer_group}-records"

    @property
    def rows_topic(self) -> str:
        """Internal topic: feature rows on their way to the writer, keyed by region."""
        return f"{self.kafka_consumer_group}-rows"

    @cached_property
    def feature_set(self) -> FeatureSet:
        """SPEC's features (their window ``FEATURE_WINDOW_HOURS``) with ``FEATURES_FILE``'s; a
        ``FeatureFileError`` naming the file, the entry and the problem for a file that cannot be used."""
        if self.features_file is None:
            return FeatureSet.of(self.feature_window_hours)
        try:
            text = self.features_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise FeatureFileError(f"{self.features_file}: cannot be read: {reason}") from None
        return parse_features(text, str(self.features_file), self.feature_window_hours)

    @property
    def retention(self) -> Retention:
        """What a region keeps of its history (SPEC: decisions, watermark, lateness and state)."""
        return self.feature_set.retention(self.allowed_lateness_hours)

    @property
    def retention_hours(self) -> int:
        """How many hours behind a region's watermark state is kept: lateness plus what a row reads."""
        return self.retention.hours


# Settings that mean nothing when empty: an empty value in the environment would otherwise fall back to the
# default without a word (env_ignore_empty), pointing the service somewhere the user did not ask for.
NON_EMPTY = (
    "kafka_bootstrap_servers",
    "kafka_topic_solar",
    "kafka_topic_weather",
    "kafka_consumer_group",
    "risingwave_host",
    "risingwave_database",
    "risingwave_user",
    "features_table",
    "deadletter_topic",
)
# Environment names of other tools that share a first word with ours are not warned about unless they are
# also close to one of ours: only these prefixes are ours alone.
OWN_PREFIXES = ("KAFKA_", "RISINGWAVE_", "DB_", "BROKER_", "INGEST_", "FEATURE_", "FEATURES_", "BATCH_")


class SettingsError(ValueError):
    """A setting with a value the service cannot use; ``str()`` is the one line for the user."""


def setting_names() -> list[str]:
    return [name.upper() for name in Settings.model_fields]


def unknown_names(names: Iterable[str]) -> list[tuple[str, str | None]]:
    """Names that look like settings of this service but are none: (name, the closest real one or None)."""
    known = setting_names()
    out: list[tuple[str, str | None]] = []
    for name in sorted(set(names)):
        upper = name.upper()
        if upper in known:
            continue
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.85)
        if close or upper.startswith(OWN_PREFIXES):
            out.append((name, close[0] if close else None))
    return out


def _env_file_names(path: Path) -> list[str]:
    if not path.is_file():
        return []
    names = []
    for line in path.read_text(errors="replace").splitlines():
        text = line.strip().removeprefix("export ").strip()
        if text and not text.startswith("#") and "=" in text:
            names.append(text.split("=", 1)[0].strip())
    return names


def explain(error: ValidationError) -> str:
    """The first error of ``error`` as one line naming the setting, what is wrong and what came."""
    first = error.errors(include_url=False)[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    if not first["loc"]:  # a check across settings: its message starts with the setting to change
        return f"setting {msg}"
    name = ".".join(str(p) for p in first["loc"]).upper()
    if str(first["loc"][0]) in SECRETS:
        return f"setting {name}: {msg}"  # never the value
    got = repr(first.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"setting {name}: {msg} (got {got})"


def load_settings() -> Settings:
    """The settings, or a SettingsError whose message names the setting to change."""
    for field in NON_EMPTY:
        value = os.environ.get(field.upper())
        if value is not None and not value.strip():
            raise SettingsError(f"setting {field.upper()}: is set but empty; give it a value or unset it")
    try:
        settings = Settings()
    except ValidationError as exc:
        raise SettingsError(explain(exc)) from None
    try:
        _ = settings.feature_set  # read and checked at start: a bad file stops every command at once
    except FeatureFileError as exc:
        raise SettingsError(f"FEATURES_FILE {exc}") from None
    return settings


def settings_or_exit() -> Settings:
    """The settings, else one line on stderr and exit code 2: a bad value is the user's to fix."""
    try:
        return load_settings()
    except SettingsError as exc:
        refuse(str(exc))


def refuse(message: str) -> NoReturn:
    """End a command with one line on stderr and exit code 2 (a usage or configuration error)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def unknown_in_environment(env_file: Path = Path("settings.env")) -> list[tuple[str, str | None]]:
    return unknown_names([*os.environ, *_env_file_names(env_file)])
