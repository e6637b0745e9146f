"""The database: upserts of feature rows into RisingWave, or PostgreSQL (the embedded default).

Blocking psycopg2 code: the writer agent calls it in its helper process, never on the event loop. The table
itself (its DDL, the columns that follow the feature set, the stored definitions) is ``schema``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from pydantic import SecretStr

from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import SPEC_ROWS, Row, RowType, latest_per_key, row_type
from solar_agents.core.hours import hour_start
from solar_agents.observe.log import get_logger
from solar_agents.schema import KEY, prepare_table

if TYPE_CHECKING:
    from solar_agents.settings import Settings

log = get_logger(__name__)


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

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> sql.Composed: ...


class PostgresDialect:
    """PostgreSQL: ``INSERT … ON CONFLICT DO UPDATE``, one transaction a batch."""

    name = "postgresql"
    autocommit = False

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
        others = [c for c in columns if c not in key]
        return sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT ({}) DO UPDATE SET {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.SQL(", ").join(map(sql.Identifier, key)),
            sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others),
        )


class RisingWaveDialect:
    """RisingWave: a plain ``INSERT`` overwrites on the primary key; ``ON CONFLICT`` is a syntax error there,
    and it has no read-write transactions, so autocommit."""

    name = "risingwave"
    autocommit = True

    def upsert(self, table: str, columns: Sequence[str], key: Sequence[str]) -> sql.Composed:
        return sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )


def dialect_for(version: str) -> Dialect:
    """The dialect of a server from its ``SELECT version()``."""
    return RisingWaveDialect() if "RisingWave" in version else PostgresDialect()


def row_values(row: Row, rows: RowType = SPEC_ROWS) -> tuple[Any, ...]:
    """The row's values in column order, the hour as its start."""
    values = rows.values(row)
    at = _HOUR
    return (*values[:at], hour_start(row.hour), *values[at + 1 :])


_HOUR = 1  # every row type's second field (``core.features.BASE_FIELDS``)


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

    def __init__(self, info: ConnectionInfo, table: str, features: FeatureSet) -> None:
        self.info = info
        self.table = table
        self.rows = row_type(features)
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
            # The table follows the feature set: created, columns added, definitions checked (``schema``).
            prepare_table(cur, self.dialect, self.table, self.rows)
        conn.autocommit = self.dialect.autocommit
        upsert = self.dialect.upsert(self.table, self.rows.columns, KEY)
        head, tail = upsert.as_string(conn).rsplit("VALUES %s", 1)
        self._statement = (head + "VALUES ", tail)
        self._literals = Literals(conn)
        log.info("sink_connected", dialect=self.dialect.name, table=self.table, host=self.info.host)
        self._conn = conn
        return conn

    def prepare(self) -> None:
        """Connect, and so make the table fit the feature set (``schema.prepare_table``)."""
        self.connect()

    def write(self, rows: list[Row]) -> int:
        """Upsert the rows (latest per key); returns how many were sent. Raises psycopg2.Error."""
        rows = latest_per_key(rows)
        if not rows:
            return 0
        conn = self.connect()
        assert self._literals is not None
        head, tail = self._statement
        literals, of = self._literals, self.rows
        statement = head + ",".join([literals.row(row_values(r, of)) for r in rows]) + tail
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
