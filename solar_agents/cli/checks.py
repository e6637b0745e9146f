"""Checks of a command's arguments and of what it needs, before it does anything."""

from __future__ import annotations

import socket

from solar_agents.cli.errors import CommandError
from solar_agents.settings import Settings


def check_region(region: str, flag: str) -> str:
    """A region name as ingest accepts one (see records.Region), else a CommandError naming ``flag``."""
    from pydantic import TypeAdapter, ValidationError

    from solar_agents.core.records import Region

    try:
        TypeAdapter(Region).validate_python(region)
    except ValidationError as exc:
        msg = str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")
        raise CommandError(f"{flag} {region!r} is not a region name: {msg}") from None
    return region


def brokers_answering(servers: str, timeout: float = 3.0) -> bool:
    """Whether any of the bootstrap servers accepts a connection."""
    for hostport in (h.strip() for h in servers.split(",") if h.strip()):
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or hostport, int(port) if port else 9092), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def check_broker(settings: Settings) -> None:
    if not brokers_answering(settings.kafka_bootstrap_servers):
        raise CommandError(
            f"no broker answers at {settings.kafka_bootstrap_servers}; "
            "start it or set KAFKA_BOOTSTRAP_SERVERS"
        )
