"""The sink on a real PostgreSQL, and the exact SQL of the RisingWave dialect."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import psycopg2
import pytest
from conftest import WorkerFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_util import Kafka
from pipeline_util import produce_in_order, reference_for, sink_rows, wait_until_equal
from scenario import build_feed, interleave
from worker import Names

from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import COLUMNS, FIELDS, FeatureRow, latest_per_key
from solar_agents.core.hours import hour_start
from solar_agents.schema import KEY, definitions_table
from solar_agents.sink import (
    ConnectionInfo,
    FeatureSink,
    Literals,
    PostgresDialect,
    RisingWaveDialect,
    dialect_for,
    row_values,
)

SPEC_SET = FeatureSet.of(24)


def row(hour: int, mw: float, region: str = "R") -> FeatureRow:
    return FeatureRow(region, hour, mw, None, 50.0, 1.0, 53.6, 9.9, mw, None, 50.0, None, None, 5, 1, False)


def sink_for(postgres: LocalPostgres, table: str) -> FeatureSink:
    return FeatureSink(
        ConnectionInfo(postgres.host, postgres.port, postgres.database, postgres.user), table, SPEC_SET
    )


def test_dialect_detection() -> None:
    assert isinstance(dialect_for("PostgreSQL 13.14.0-RisingWave-2.1.0 (abc)"), RisingWaveDialect)
    assert isinstance(dialect_for("PostgreSQL 15.8 (Debian 15.8-0+deb12u1)"), PostgresDialect)


def test_risingwave_sql_is_a_plain_insert(postgres: LocalPostgres) -> None:
    conn = postgres.connect()
    try:
        text = RisingWaveDialect().upsert('odd "name"; DROP', COLUMNS, KEY).as_string(conn)
    finally:
        conn.close()
    assert text.startswith('INSERT INTO "odd ""name""; DROP" ("region", "timestamp", "production_mw"')
    assert text.endswith(") VALUES %s")
    assert "ON CONFLICT" not in text
    assert RisingWaveDialect.autocommit is True


def test_postgres_upsert_creates_table_overwrites_and_keeps_regions_apart(postgres: LocalPostgres) -> None:
    table = f"sink_{uuid.uuid4().hex[:8]}"
    sink = sink_for(postgres, table)
    hour = 430_000
    assert sink.write([row(hour, 1.0), row(hour, 2.0), row(hour, 5.0, region="Other")]) == 2
    sink.write([row(hour, 3.0), row(hour + 1, 4.0)])
    sink.close()
    rows = sink_rows(postgres, table)
    at = datetime.fromtimestamp(hour * 3600, UTC)
    assert rows[("R", at)]["production_mw"] == 3.0
    assert rows[("Other", at)]["production_mw"] == 5.0
    assert len(rows) == 3
    assert rows[("R", at)]["temperature_c"] is None and rows[("R", at)]["is_weekend"] is False
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        )
        types = dict(cur.fetchall())
    conn.close()
    assert types["region"] == "character varying" and types["timestamp"] == "timestamp with time zone"
    assert types["hour_of_day"] == "integer" and types["is_weekend"] == "boolean"


def test_row_values_are_the_columns_in_order() -> None:
    r = row(430_000, 2.5)
    expected = [("timestamp", hour_start(430_000)) if n == "hour" else (n, getattr(r, n)) for n in FIELDS]
    assert list(zip(COLUMNS, row_values(r), strict=True)) == expected


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(),  # naive: psycopg2's own literal
)


@pytest.fixture(scope="module")
def pg_conn(postgres: LocalPostgres) -> Iterator[psycopg2.extensions.connection]:
    conn = postgres.connect()
    yield conn
    conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_VALUES, min_size=1, max_size=20))
def test_literals_are_what_psycopg2_writes(
    pg_conn: psycopg2.extensions.connection, values: list[object]
) -> None:
    # The writer builds its VALUES text itself (speed); psycopg2's own adaptation is the reference.
    expected = pg_conn.cursor().mogrify("(" + ",".join(["%s"] * len(values)) + ")", values).decode()
    assert Literals(pg_conn).row(values) == expected


def test_rows_written_read_back_exactly(postgres: LocalPostgres) -> None:
    table = f"sink_{uuid.uuid4().hex[:8]}"
    sink = sink_for(postgres, table)
    rows = [
        row(430_000, -1.5, region="it's"),
        row(430_001, 1e-300, region="Zürich -- x"),
        row(430_002, 1.7976931348623157e308),
        row(430_003, -0.0),
        replace(row(430_004, 0.1 + 0.2), hour_of_day=-1, is_weekend=True, temperature_c=-273.15),
    ]
    sink.write(rows)
    sink.close()
    back = sink_rows(postgres, table)
    assert sorted(tuple(r.values()) for r in back.values()) == sorted(row_values(r) for r in rows)


def test_latest_per_key_keeps_the_last() -> None:
    rows = latest_per_key([row(1, 1.0), row(2, 2.0), row(1, 3.0)])
    assert [(r.hour, r.production_mw) for r in rows] == [(1, 3.0), (2, 2.0)]


def test_write_to_stopped_database_raises_then_reconnects(postgres: LocalPostgres) -> None:
    table = f"sink_{uuid.uuid4().hex[:8]}"
    sink = sink_for(postgres, table)
    sink.write([row(1, 1.0)])
    postgres.stop()
    try:
        with pytest.raises(psycopg2.Error):
            sink.write([row(2, 2.0)])
    finally:
        postgres.start()
    sink.write([row(2, 2.0)])
    sink.close()
    assert len(sink_rows(postgres, table)) == 2


def writer_role(postgres: LocalPostgres, table: str) -> str:
    """A login role with SELECT/INSERT/UPDATE on ``table`` (which must exist), SELECT on its definitions
    table, and no CREATE on the schema."""
    user = f"writer_{uuid.uuid4().hex[:8]}"
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{user}" LOGIN')
        cur.execute(f'GRANT SELECT, INSERT, UPDATE ON "{table}" TO "{user}"')
        cur.execute(f'GRANT SELECT ON "{definitions_table(table)}" TO "{user}"')
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL before 15 grants it
    conn.close()
    return user


def test_least_privilege_user_writes_to_an_existing_table(postgres: LocalPostgres) -> None:
    """SELECT/INSERT/UPDATE on the table and no CREATE on the schema: the sink must not need DDL."""
    table = f"sink_{uuid.uuid4().hex[:8]}"
    owner = sink_for(postgres, table)
    owner.write([row(1, 1.0)])  # the owner creates the table
    owner.close()
    user = writer_role(postgres, table)
    info = ConnectionInfo(postgres.host, postgres.port, postgres.database, user)
    sink = FeatureSink(info, table, SPEC_SET)
    assert sink.write([row(1, 2.0), row(2, 3.0)]) == 2
    sink.close()
    rows = sink_rows(postgres, table)
    assert [r["production_mw"] for _, r in sorted(rows.items())] == [2.0, 3.0]


def test_worker_writes_as_a_least_privilege_user(
    kafka: Kafka, postgres: LocalPostgres, names: Names, workers: WorkerFactory
) -> None:
    owner = sink_for(postgres, names.table)
    owner.connect()  # the owner creates the table, empty
    owner.close()
    user = writer_role(postgres, names.table)
    kafka.create_topics({names.solar: 1, names.weather: 1})
    order = interleave(build_feed(hours=72, solar_topic=names.solar, weather_topic=names.weather))
    produce_in_order(kafka, order)
    worker = workers(RISINGWAVE_USER=user)
    reference = reference_for(kafka, names, len(order))
    wait_until_equal(
        postgres, names.table, reference.rows, timeout=90, alive=lambda: worker.alive, on_timeout=worker.tail
    )
