"""Typed settings: the environment, else ``settings.env``, else the defaults of SPEC."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from solar_agents.hours import history_hours


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
    ingest_batch_max_wait_seconds: float = Field(0.05, gt=0)
    # Short group timeouts make restarts fast on a local broker; see README for a production cluster.
    broker_session_timeout_seconds: float = Field(3.0, gt=0)
    broker_heartbeat_interval_seconds: float = Field(0.5, gt=0)
    broker_rebalance_timeout_seconds: float = Field(10.0, gt=0)
    broker_commit_interval_seconds: float = Field(1.0, gt=0)
    # How long a fetch may wait for records (Faust fixes 1.5 s). On brokers that answer a waiting fetch only
    # at its end it is the latency of each topic hop; shorter costs backfill throughput (README).
    broker_fetch_max_wait_seconds: float = Field(1.5, gt=0, le=30)
    producer_linger_seconds: float = Field(0.01, ge=0)
    db_connect_timeout_seconds: int = Field(5, ge=1)
    db_retry_max_seconds: float = Field(10.0, gt=0)

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

    @property
    def records_topic(self) -> str:
        """Internal topic: validated records of both feeds, keyed (so partitioned) by region."""
        return f"{self.kafka_consumer_group}-records"

    @property
    def rows_topic(self) -> str:
        """Internal topic: feature rows on their way to the writer, keyed by region."""
        return f"{self.kafka_consumer_group}-rows"

    @property
    def retention_hours(self) -> int:
        """How many hours behind a region's watermark state is kept (SPEC: lateness plus history)."""
        return self.allowed_lateness_hours + history_hours(self.feature_window_hours)
