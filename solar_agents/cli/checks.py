"""Checks of a command's arguments and of what it needs, before it does anything."""

from __future__ import annotations

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


def check_broker(settings: Settings) -> None:
    """A CommandError naming the setting to change unless the brokers take a connection as configured."""
    from solar_agents.connect.preflight import kafka_problem_of, run_blocking

    problem = run_blocking(kafka_problem_of(settings.kafka))
    if problem is not None:
        raise CommandError(problem.line)
