"""The output table's schema, which follows the feature set: its DDL, columns added when a feature is added,
and each feature column's definition stored beside the table so that two definitions never mix in a column.

Blocking psycopg2 code, run by the sink (in the writer's helper process) and by the ``replay`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extras import execute_values

from solar_agents.core.feature_set import Feature, FeatureSet
from solar_agents.core.features import SPEC_ROWS, RowType
from solar_agents.errors import Refused
from solar_agents.observe.log import get_logger

if TYPE_CHECKING:
    from solar_agents.sink import Dialect

log = get_logger(__name__)

# The output table is derived from the row type, column for column, so that the two cannot drift apart; the
# tests hold the result to the contract's DDL (docs/SPEC.md) and to a table PostgreSQL really created.

KEY: tuple[str, ...] = ("region", "timestamp")  # the primary key, and the upsert's conflict target

# SQL type of each Python type a row field may have (``X | None`` is the same column, NULL allowed).
# VARCHAR has no length: RisingWave rejects VARCHAR(n).
_SQL_TYPES = {"str": "VARCHAR", "float": "DOUBLE PRECISION", "int": "INTEGER", "bool": "BOOLEAN"}


def sql_type(field: str, python_type: str) -> str:
    """The SQL type of a row field."""
    if field == "hour":
        return "TIMESTAMPTZ"  # the hour index is stored as the hour's start
    annotation = python_type.removesuffix(" | None")
    if annotation not in _SQL_TYPES:
        raise TypeError(f"row field {field}: no SQL type for {python_type!r}; add one to _SQL_TYPES")
    return _SQL_TYPES[annotation]


def ddl_name(column: str) -> str:
    # Quoted where SQL would read a type name; written as the contract writes it.
    return f'"{column}"' if column == "timestamp" else column


def column_types(rows: RowType) -> dict[str, str]:
    """Each column of the output table and its SQL type, in column order."""
    return {
        column: sql_type(field, python_type)
        for column, field, python_type in zip(rows.columns, rows.fields, rows.types, strict=True)
    }


def create_table_sql(rows: RowType = SPEC_ROWS) -> str:
    """``CREATE TABLE`` of the output table, with a ``{table}`` placeholder for the quoted table name."""
    lines = [f"    {ddl_name(column):<20}{type_}," for column, type_ in column_types(rows).items()]
    key = ", ".join(map(ddl_name, KEY))
    return "CREATE TABLE IF NOT EXISTS {table} (\n" + "\n".join(lines) + f"\n    PRIMARY KEY ({key})\n)"


CREATE_TABLE = create_table_sql()


# --- the table follows the feature set ------------------------------------------------------------------


def definitions_table(table: str) -> str:
    """The table that stores the definition of each feature column of ``table``."""
    return f"{table}_features"


_DEFINITIONS_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    column_name   VARCHAR,
    kind          VARCHAR,
    field         VARCHAR,
    hours         INTEGER,
    defined_since TIMESTAMPTZ,
    PRIMARY KEY (column_name)
)"""
_DEFINITION_COLUMNS = ("column_name", "kind", "field", "hours", "defined_since")


def prepare_table(cur: Any, dialect: Dialect, table: str, rows: RowType) -> None:
    """Make ``table`` fit ``rows``: create it when missing, add the columns of new features, warn about
    columns no feature has, and check each feature's stored definition (``Refused`` when one changed, or
    when the user may not make a change the table needs)."""
    if not _exists(cur, table):
        # Create only when missing: a writer granted only SELECT/INSERT/UPDATE on the table has no CREATE on
        # the schema, and even CREATE TABLE IF NOT EXISTS needs it. information_schema works on both servers.
        _run_as_owner(cur, [sql.SQL(create_table_sql(rows)).format(table=sql.Identifier(table))], table)
        log.info("sink_table_created", table=table)
    _add_missing_columns(cur, table, rows)
    _check_definitions(cur, dialect, table, rows.features)


def _exists(cur: Any, table: str) -> bool:
    cur.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    )
    return cur.fetchone() is not None


def table_columns(cur: Any, table: str) -> list[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [str(row[0]) for row in cur.fetchall()]


def _add_missing_columns(cur: Any, table: str, rows: RowType) -> None:
    existing = table_columns(cur, table)
    types = column_types(rows)
    missing = [column for column in types if column not in existing]
    statements = [
        sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            sql.Identifier(table), sql.Identifier(column), sql.SQL(types[column])
        )
        for column in missing
    ]
    _run_as_owner(cur, statements, table, what=f"lacks the columns {', '.join(missing)} of the feature set")
    for column in missing:
        log.info(
            "column_added",
            table=table,
            column=column,
            type=types[column],
            note="rows written before it have NULL here until a replay: faust -A solar_agents replay",
        )
    extra = [column for column in existing if column not in types]
    if extra:
        log.warning(
            "columns_not_in_feature_set", table=table, columns=extra, note="left alone: NULL in new rows"
        )


def _run_as_owner(
    cur: Any, statements: Sequence[sql.Composable], table: str, what: str = "is missing"
) -> None:
    """Run schema changes; a user without the privilege gets ``Refused`` with the statements to run."""
    try:
        for statement in statements:
            cur.execute(statement)
    except psycopg2.errors.InsufficientPrivilege:
        text = "; ".join(s.as_string(cur.connection) for s in statements)
        raise Refused(
            f"table {table} {what}, and database user {cur.connection.info.user!r} may not change it:"
            f" run as its owner: {text}; then start again"
        ) from None


def stored_definitions(cur: Any, table: str) -> dict[str, Feature]:
    """The definitions stored for ``table``'s feature columns, by column."""
    defs = definitions_table(table)
    try:
        cur.execute(sql.SQL("SELECT column_name, kind, field, hours FROM {}").format(sql.Identifier(defs)))
    except psycopg2.errors.InsufficientPrivilege:
        raise Refused(
            f"database user {cur.connection.info.user!r} may not read {defs}: grant it SELECT on that table"
        ) from None
    return {str(name): Feature(str(name), kind, str(field), int(hours)) for name, kind, field, hours in cur}


def _check_definitions(cur: Any, dialect: Dialect, table: str, features: FeatureSet) -> None:
    defs = definitions_table(table)
    if not _exists(cur, defs):
        _run_as_owner(cur, [sql.SQL(_DEFINITIONS_DDL).format(table=sql.Identifier(defs))], defs)
    stored = stored_definitions(cur, table)
    changed = [
        (stored[f.name], f)
        for f in features.features
        if f.name in stored and stored[f.name].definition() != f.definition()
    ]
    if changed:
        what = "; ".join(
            f"column {new.name} is defined as {old.definition()} in {defs} but as {new.definition()} here"
            for old, new in changed
        )
        raise Refused(
            f"{what}: rows would mix two definitions in one column. To accept the new definition, stop every"
            " worker and run: faust -A solar_agents replay --from TIME --accept-definitions"
            " (rewrites the column from TIME on), or restore the old definition (FEATURES_FILE,"
            " FEATURE_WINDOW_HOURS)"
        )
    new = [f for f in features.features if f.name not in stored]
    if new:
        write_definitions(cur, dialect, table, new, None)
        for f in new:
            log.info("feature_defined", table=table, column=f.name, definition=f.definition())


def write_definitions(
    cur: Any, dialect: Dialect, table: str, features: Sequence[Feature], since: datetime | None
) -> None:
    """Store ``features``' definitions as holding since ``since`` (None: for every row that has a value)."""
    defs = definitions_table(table)
    statement = dialect.upsert(defs, _DEFINITION_COLUMNS, ("column_name",)).as_string(cur.connection)
    values = [(f.name, f.kind, f.field, f.hours, since) for f in features]
    try:
        execute_values(cur, statement, values)
    except psycopg2.errors.InsufficientPrivilege:
        raise Refused(
            f"database user {cur.connection.info.user!r} may not write {defs}:"
            " grant it INSERT and UPDATE on that table"
        ) from None
