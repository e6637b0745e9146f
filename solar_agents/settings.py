"""Typed settings: the environment, else ``settings.env``, else the defaults of SPEC."""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from solar_agents.core.hours import Retention


class Settings(BaseSettings):
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
    risingwave_password: str = ""

    features_table: str = Field("features_enriched", min_length=1, max_length=63)
    deadletter_topic: str = "solar_agents-deadletter"
    # The largest dead letter sent with its original bytes (at most what the broker accepts; Kafka's
    # default is about 1 MB). A larger one goes out with the facts only (docs/SPEC.md).
    deadletter_max_bytes: int = Field(1_000_000, ge=4096)
    batch_size: int = Field(1000, ge=1)
    batch_max_wait_seconds: float = Field(1.0, gt=0)
    feature_window_hours: int = Field(24, ge=1, le=24 * 366)
    allowed_lateness_hours: int = Field(48, ge=0)
    default_region: str = Field("DE", min_length=1, max_length=64)
    region_locations: dict[str, tuple[float, float]] = Field(default_factory=dict)
    topic_partitions: int = Field(8, ge=1)
    web_port: int = Field(6066, ge=1, le=65535)
    web_host: str = "0.0.0.0"
    data_dir: Path = Path("./data")

    # Beyond SPEC: tuning knobs with safe defaults.
    exit_when_caught_up: bool = False  # set by the backfill command
    log_level: str = "info"
    ingest_batch_size: int = Field(2000, ge=1)
    ingest_batch_max_wait_seconds: float = Field(0.25, gt=0)
    # How far in event time one raw partition with a backlog may be read ahead of the slowest (docs/SPEC.md,
    # "Batches and hops"): what the align step keeps in memory grows with it.
    max_read_skew_hours: int = Field(48, ge=0)
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
    def faust_broker_url(self) -> str:
        """Faust's broker URL: ``kafka://h1:p1;h2:p2``."""
        hosts = [h.strip() for h in self.kafka_bootstrap_servers.split(",") if h.strip()]
        return ";".join(f"kafka://{h}" for h in hosts)

    def faust_consumer_options(self) -> dict[str, Any]:
        """The Faust settings of how the app meets the broker as a consumer: the pipeline's app and the
        benchmark's bare-Faust floor both take them from here, so the floor reads as the pipeline does."""
        return {
            "broker": self.faust_broker_url,
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
        """Internal topic: validated records of both feeds, keyed (so partitioned) by region."""
        return f"{self.kafka_consumer_group}-records"

    @property
    def rows_topic(self) -> str:
        """Internal topic: feature rows on their way to the writer, keyed by region."""
        return f"{self.kafka_consumer_group}-rows"

    @property
    def retention(self) -> Retention:
        """What a region keeps of its history (SPEC: decisions, watermark, lateness and state)."""
        return Retention(self.feature_window_hours, self.allowed_lateness_hours)

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
    name = ".".join(str(p) for p in first["loc"]).upper() or "settings"
    msg = str(first["msg"]).removeprefix("Value error, ")
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
        return Settings()
    except ValidationError as exc:
        raise SettingsError(explain(exc)) from None


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
