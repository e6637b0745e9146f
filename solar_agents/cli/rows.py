"""The ``rows`` command: the latest rows of the output table, as a plain text table."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from solar_agents.cli.checks import check_region
from solar_agents.cli.errors import CommandError
from solar_agents.connect.explain import database_problem
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo

ROWS_LIMIT_MAX = 100_000  # a bound that a terminal can still show; beyond, use psql


def connect(settings: Settings) -> Any:
    conn = ConnectionInfo.of(settings).connect()
    conn.autocommit = True
    return conn


def db_error(settings: Settings, exc: psycopg2.Error) -> CommandError:
    """What a database error means for the user, naming the setting to change."""
    info = ConnectionInfo.of(settings)
    where = info.where
    if isinstance(exc, psycopg2.errors.UndefinedTable):
        return CommandError(
            f"no table {settings.features_table!r} in the database {where}; "
            "start a worker to create it, or set FEATURES_TABLE"
        )
    if isinstance(exc, psycopg2.OperationalError):
        return CommandError(database_problem(str(exc), where, info.user, info.sslmode).line)
    return CommandError(f"the database at {where} refused the query: {str(exc).strip().splitlines()[0]}")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= ROWS_LIMIT_MAX:
        raise CommandError(f"--limit must be between 1 and {ROWS_LIMIT_MAX:,}, got {limit}")
    return limit


def print_rows(settings: Settings, limit: int, region: str | None = None) -> None:
    """The latest rows of the output table, as a plain text table."""
    check_limit(limit)
    if region is not None:
        check_region(region, "--region")
    try:
        names, rows, total = _latest_rows(settings, limit, region)
    except psycopg2.Error as exc:
        raise db_error(settings, exc) from None

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return "" if v is None else str(v)

    table = [names, *[[cell(v) for v in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(names))]
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} of {total} rows in {settings.features_table})")


def _latest_rows(settings: Settings, limit: int, region: str | None) -> tuple[list[str], list[Any], int]:
    query = sql.SQL('SELECT * FROM {} {} ORDER BY "timestamp" DESC, region LIMIT %s').format(
        sql.Identifier(settings.features_table), sql.SQL("WHERE region = %s" if region else "")
    )
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(query, ([region] if region else []) + [limit])
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(settings.features_table)))
            total = cur.fetchone()[0]
    finally:
        conn.close()
    return names, rows, int(total)
