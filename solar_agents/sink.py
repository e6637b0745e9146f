"""The database: the output table of SPEC on RisingWave, or on PostgreSQL (the embedded default).

Blocking psycopg2 code: the writer agent calls it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, fields
from dataclasses import field as dataclass_field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from pydantic import SecretStr

from solar_agents.core.features import COLUMNS, FIELDS, FeatureRow, field_values, latest_per_key
from solar_agents.core.hours import hour_start
from solar_agents.observe.log import get_logger

if TYPE_CHECKING:
    from solar_agents.settings import Settings

log = get_logger(__name__)

# The output table is derived from the row type, column for column, so that the two cannot drift apart; the
# tests hold the result to the contract's DDL (docs/SPEC.md) and to a table PostgreSQL really created.

KEY: tuple[str, ...] = ("region", "timestamp")  # the primary key, and the upsert's conflict target

# SQL type of each Python type a row field may have (``X | None`` is the same column, NULL allowed).
# VARCHAR has no length: RisingWave rejects VARCHAR(n).
_SQL_TYPES = {"str": "VARCHAR", "float": "DOUBLE PRECISION", "int": "INTEGER", "bool": "BOOLEAN"}


def _sql_type(field: Field[Any]) -> str:
    if field.name == "hour":
        return "TIMESTAMPTZ"  # the hour index is stored as the hour's start
    annotation = str(field.type).removesuffix(" | None")
    if annotation not in _SQL_TYPES:
        raise TypeError(f"FeatureRow.{field.name}: no SQL type for {field.type!r}; add one to _SQL_TYPES")
    return _SQL_TYPES[annotation]


def _ddl_name(column: str) -> str:
    # Quoted where SQL would read a type name; written as the contract writes it.
    return f'"{column}"' if column == "timestamp" else column


def create_table_sql() -> str:
    """``CREATE TABLE`` of the output table, with a ``{table}`` placeholder for the quoted table name."""
    lines = [
        f"    {_ddl_name(column):<20}{_sql_type(field)},"
        for column, field in zip(COLUMNS, fields(FeatureRow), strict=True)
    ]
    key = ", ".join(map(_ddl_name, KEY))
    return "CREATE TABLE IF NOT EXISTS {table} (\n" + "\n".join(lines) + f"\n    PRIMARY KEY ({key})\n)"


CREATE_TABLE = create_table_sql()


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """Where the output table lives: the one place the ``RISINGWAVE_*`` settings become a connection. Its
    repr shows no password (``SecretStr``)."""

    host: str
    port: int
    database: str
    user: str
    password: SecretStr = dataclass_field(default_factory=lambda: SecretStr(""))
    sslmode: str = "prefer"  # libpq's: disable, allow, prefer, require, verify-ca, verify-full
    sslrootcert: Path | None = None  # the CA that signed the server's certificate (verify-ca, verify-full)
    connect_timeout: int = 5

    @classmethod
    def of(cls, settings: Settings) -> ConnectionInfo:
        return cls(
            host=settings.risingwave_host,
            port=settings.risingwave_port,
            database=settings.risingwave_database,
            user=settings.risingwave_user,
            password=settings.risingwave_password,
            sslmode=settings.risingwave_sslmode,
            sslrootcert=settings.risingwave_sslrootcert,
            connect_timeout=settings.db_connect_timeout_seconds,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=self.database,
            user=self.user,
            password=self.password.get_secret_value(),
            sslmode=self.sslmode,
            connect_timeout=self.connect_timeout,
            application_name="solar_agents",
            **({"sslrootcert": str(self.sslrootcert)} if self.sslrootcert else {}),
        )


class Dialect(Protocol):
    """How one server takes an upsert."""

    name: str
    autocommit: bool

    def upsert(self, table: str) -> sql.Composed: ...


class PostgresDialect:
    """PostgreSQL: ``INSERT … ON CONFLICT DO UPDATE``, one transaction a batch."""

    name = "postgresql"
    autocommit = False

    def upsert(self, table: str) -> sql.Composed:
        others = [c for c in COLUMNS if c not in KEY]
        return sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            sql.SQL(", ").join(map(sql.Identifier, KEY)),
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
        )


class RisingWaveDialect:
    """RisingWave: a plain ``INSERT`` overwrites on the primary key; ``ON CONFLICT`` is a syntax error there,
    and it has no read-write transactions, so autocommit."""

    name = "risingwave"
    autocommit = True

    def upsert(self, table: str) -> sql.Composed:
        return sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        )


def dialect_for(version: str) -> Dialect:
    """The dialect of a server from its ``SELECT version()``."""
    return RisingWaveDialect() if "RisingWave" in version else PostgresDialect()


_HOUR = FIELDS.index("hour")


def row_values(row: FeatureRow) -> tuple[Any, ...]:
    """The row's values in ``COLUMNS`` order, the hour as its start."""
    values = field_values(row)
    return (*values[:_HOUR], hour_start(row.hour), *values[_HOUR + 1 :])


class Literals:
    """SQL literals of row values, written as psycopg2 writes them, without an adapter object per value.

    psycopg2 adapts each value with an object of its own: about 25 µs a row of floats, most of the writer's
    time and, holding the GIL, time taken from the agents. Floats, ints, bools, NULLs and aware datetimes
    are written here as psycopg2 would write them (the tests compare the two); text goes through psycopg2
    once per distinct string, any other value every time.
    """

    MAX_CACHED = 10_000  # distinct strings kept quoted (regions: a handful)

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self._conn = conn
        self._strings: dict[str, str] = {}
        self._writers: dict[type, Callable[[Any], str]] = {
            float: self._float,
            int: self._int,
            bool: lambda value: "true" if value else "false",
            type(None): lambda _: "NULL",
            str: self._str,
            datetime: self._datetime,
        }

    def row(self, values: Iterable[Any]) -> str:
        """``(v1,v2,…)``: one row of a ``VALUES`` list."""
        writers = self._writers
        return "(" + ",".join([writers.get(type(v), self._adapted)(v) for v in values]) + ")"

    def _adapted(self, value: Any) -> str:
        adapted = psycopg2.extensions.adapt(value)
        if hasattr(adapted, "prepare"):
            adapted.prepare(self._conn)
        quoted: bytes = adapted.getquoted()
        return quoted.decode(psycopg2.extensions.encodings[self._conn.encoding])

    def _float(self, value: float) -> str:
        if value - value != 0.0:  # NaN and the infinities: psycopg2's quoted forms
            return self._adapted(value)
        text = float.__repr__(value)
        return " " + text if text[0] == "-" else text  # as psycopg2: "- -1.5" must not read as a comment

    @staticmethod
    def _int(value: int) -> str:
        text = int.__repr__(value)
        return text if value >= 0 else " " + text

    def _str(self, value: str) -> str:
        quoted = self._strings.get(value)
        if quoted is None:
            if len(self._strings) >= self.MAX_CACHED:
                self._strings.clear()
            quoted = self._strings[value] = self._adapted(value)
        return quoted

    def _datetime(self, value: datetime) -> str:
        if value.tzinfo is None:
            return self._adapted(value)
        return "'" + value.isoformat() + "'::timestamptz"


class FeatureSink:
    """Upserts feature rows; reconnects on the next call after a failure. Not thread-safe: one thread."""

    def __init__(self, info: ConnectionInfo, table: str) -> None:
        self.info = info
        self.table = table
        self.dialect: Dialect | None = None
        self._conn: psycopg2.extensions.connection | None = None
        self._statement: tuple[str, str] = ("", "")  # the upsert's text before and after its VALUES list
        self._literals: Literals | None = None

    def connect(self) -> psycopg2.extensions.connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = self.info.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            version = str(cur.fetchone()[0])  # type: ignore[index]
            self.dialect = dialect_for(version)
            # Create only when missing: a writer granted only SELECT/INSERT/UPDATE on the table has no CREATE
            # on the schema, and even CREATE TABLE IF NOT EXISTS needs it. information_schema works on both.
            cur.execute(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
                " AND table_name = %s",
                (self.table,),
            )
            if cur.fetchone() is None:
                cur.execute(sql.SQL(CREATE_TABLE).format(table=sql.Identifier(self.table)))
                log.info("sink_table_created", table=self.table)
        conn.autocommit = self.dialect.autocommit
        head, tail = self.dialect.upsert(self.table).as_string(conn).rsplit("VALUES %s", 1)
        self._statement = (head + "VALUES ", tail)
        self._literals = Literals(conn)
        log.info("sink_connected", dialect=self.dialect.name, table=self.table, host=self.info.host)
        self._conn = conn
        return conn

    def write(self, rows: list[FeatureRow]) -> int:
        """Upsert the rows (latest per key); returns how many were sent. Raises psycopg2.Error."""
        rows = latest_per_key(rows)
        if not rows:
            return 0
        conn = self.connect()
        assert self._literals is not None
        head, tail = self._statement
        statement = head + ",".join([self._literals.row(row_values(r)) for r in rows]) + tail
        try:
            with conn.cursor() as cur:
                cur.execute(statement)  # no parameters: psycopg2 sends the text as it is
            if not conn.autocommit:
                conn.commit()
        except psycopg2.Error:
            self.close()
            raise
        return len(rows)

    def flush(self) -> None:
        """Make written rows visible now (RisingWave checkpoints about once a second otherwise)."""
        if isinstance(self.dialect, RisingWaveDialect):
            with self.connect().cursor() as cur:
                cur.execute("FLUSH")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
            self._conn = None
