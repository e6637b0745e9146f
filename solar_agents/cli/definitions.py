"""Accepting changed feature definitions: the explicit step ``replay --accept-definitions`` takes, after
which the stored definitions (``<FEATURES_TABLE>_features``) say since when each holds."""

from __future__ import annotations

from datetime import datetime

import psycopg2

from solar_agents.cli.errors import CommandError
from solar_agents.cli.rows import connect, db_error
from solar_agents.core.feature_set import Feature
from solar_agents.core.hours import hour_label, hour_start
from solar_agents.schema import definitions_table, stored_definitions, write_definitions
from solar_agents.settings import Settings
from solar_agents.sink import dialect_for


def changed_definitions(settings: Settings) -> list[tuple[Feature | None, Feature]]:
    """(stored, declared) of each feature column whose declared definition is not the stored one (stored is
    None for a column not stored yet); empty before the table's first worker start."""
    try:
        conn = connect(settings)
    except psycopg2.Error as exc:
        raise db_error(settings, exc) from None
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
                " AND table_name = %s",
                (definitions_table(settings.features_table),),
            )
            if cur.fetchone() is None:
                return []
            stored = stored_definitions(cur, settings.features_table)
    except psycopg2.Error as exc:
        raise db_error(settings, exc) from None
    finally:
        conn.close()
    return [
        (stored.get(f.name), f)
        for f in settings.feature_set.features
        if f.name not in stored or stored[f.name].definition() != f.definition()
    ]


def accept_definitions(settings: Settings, from_hour: int | None) -> list[str]:
    """Store the declared definitions that differ from the stored ones, holding from ``from_hour`` (None:
    the whole history). Returns one line per column accepted."""
    changed = changed_definitions(settings)
    if not changed:
        return []
    since: datetime | None = None if from_hour is None else hour_start(from_hour)
    try:
        conn = connect(settings)
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            dialect = dialect_for(str(cur.fetchone()[0]))  # type: ignore[index]
            write_definitions(cur, dialect, settings.features_table, [new for _, new in changed], since)
        conn.close()
    except psycopg2.Error as exc:
        raise db_error(settings, exc) from None
    when = "the whole history" if from_hour is None else hour_label(from_hour)
    return [
        f"{new.name}: {'new' if old is None else old.definition()} -> {new.definition()}, holding from {when}"
        for old, new in changed
    ]


def check_accepted(settings: Settings, accept: bool) -> CommandError | None:
    """Without ``--accept-definitions``, a replay under changed definitions would leave the worker refusing:
    say so before anything moves."""
    if accept:
        return None
    try:
        changed = [(old, new) for old, new in changed_definitions(settings) if old is not None]
    except CommandError:  # the database is not needed for a replay: the worker checks again at its start
        return None
    if not changed:
        return None
    names = ", ".join(new.name for _, new in changed)
    return CommandError(
        f"the definitions of {names} changed; add --accept-definitions to rewrite them from --from on"
    )
