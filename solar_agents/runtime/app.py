"""The Faust app, built once from settings: ``faust -A solar_agents worker``."""

from __future__ import annotations

import ssl

from solar_agents.cli.commands import register_commands
from solar_agents.connect.preflight import tls_files_problem
from solar_agents.observe import log
from solar_agents.observe.health import Health
from solar_agents.observe.stats import Stats
from solar_agents.runtime import faust_compat as compat
from solar_agents.runtime.faust_drain import App, install_drain
from solar_agents.runtime.topology import Pipeline, topology
from solar_agents.runtime.worker import worker_class
from solar_agents.settings import Settings, refuse, settings_or_exit, unknown_in_environment
from solar_agents.web.auth import AccessPolicy, auth_middleware
from solar_agents.web.views import register_views

# Changelog records that may wait to be sent before Faust holds the streams (``install_producer``).
# A table write cannot wait, so Faust holds every topic's delivery while more than this many changelog records
# wait to be sent (100 by default). One align batch writes a few hundred at once, bounded by its blocks, and
# the hold cost each of them a pause of the whole worker.
PRODUCER_BUFFER_MESSAGES = 5000
# Of a stop's time (SHUTDOWN_TIMEOUT_SECONDS), the part the batches in flight get to finish and be committed;
# what is not done by then is read again at the next start.
STREAMS_SHARE_OF_STOP = 0.4
# Messages of the records and rows topics a stream holds before Faust fetches no more of the partition (its
# default: 4096). The raw topics skip the streams (``faust_drain``), the align step is the slower stage, and
# a records message holds up to 250 records: the worker's peak memory grew with the backlog behind it, 1.27
# times from 1x to 4x history with 4096, 1.19 with 128 (docs/DESIGN.md, "Raw topics a fetched run at a time").
INTERNAL_STREAM_BUFFER = 32


def create_app(settings: Settings) -> tuple[App, Pipeline]:
    """The app and its pipeline; every Faust setting comes from ``settings`` here and nowhere later."""
    log.configure(settings.log_level)
    compat.install(
        settings.kafka,
        settings.broker_fetch_max_wait_seconds,
        settings.consumer_max_fetch_response_bytes,
        PRODUCER_BUFFER_MESSAGES,
        settings.shutdown_timeout_seconds * STREAMS_SHARE_OF_STOP,
    )
    install_drain()
    try:
        consumer_options = settings.faust_consumer_options()
    except (ssl.SSLError, OSError) as exc:  # the client's TLS files cannot be loaded
        refuse(tls_files_problem(exc).line)
    health = Health(str(settings.data_dir))
    stats = Stats()  # shared by the pipeline and the worker (its retries under way, on a stop out of time)
    app = App(
        settings.kafka_consumer_group,
        **consumer_options,
        store="rocksdb://",
        datadir=str(settings.data_dir),
        web_port=settings.web_port,
        web_bind=settings.web_host,
        # Every page and API behind WEB_AUTH_TOKEN when it is set (``web.auth``).
        web_application_options={"middlewares": [auth_middleware(AccessPolicy.of(settings))]},
        producer_linger=settings.producer_linger_seconds,
        stream_buffer_maxsize=INTERNAL_STREAM_BUFFER,
        # Never below Faust's default: record batches are sent whole, whatever the dead-letter limit.
        producer_max_request_size=max(1_000_000, settings.deadletter_max_bytes),
        logging_config=log.logging_config(settings.log_level),
        key_serializer="raw",
        value_serializer="raw",
        autodiscover=False,
        Worker=worker_class(settings, health, stats),
    )
    pipeline = Pipeline(app, settings, health, stats)
    topology(app, pipeline)
    register_views(app, pipeline)
    register_commands(app, settings, pipeline.backfill.enable)
    return app, pipeline


settings = settings_or_exit()
app, pipeline = create_app(settings)
for _name, _close in unknown_in_environment():
    # A misspelled setting would otherwise be ignored without a word, and its default used.
    log.get_logger(__name__).warning(
        "unknown_setting", name=_name, did_you_mean=_close.upper() if _close else None
    )
