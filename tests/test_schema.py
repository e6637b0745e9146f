"""The output table follows the feature set, on a real PostgreSQL: columns added, definitions stored and
checked, a changed definition and a missing privilege each refused with one line."""

from __future__ import annotations

import uuid

import pytest
import structlog
from test_sink import row, sink_rows, writer_role

from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.core.feature_set import Feature, FeatureSet
from solar_agents.core.features import SPEC_ROWS, row_type
from solar_agents.errors import Refused
from solar_agents.schema import KEY, definitions_table, table_columns
from solar_agents.sink import ConnectionInfo, FeatureSink, RisingWaveDialect

SUM_3H = Feature("production_sum_3h", "sum", "production_mw", 3)


def sink(postgres: LocalPostgres, table: str, features: FeatureSet, user: str | None = None) -> FeatureSink:
    info = ConnectionInfo(postgres.host, postgres.port, postgres.database, user or postgres.user)
    return FeatureSink(info, table, features)


def definitions(postgres: LocalPostgres, table: str) -> dict[str, tuple[str, str, int, object]]:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                f'SELECT column_name, kind, field, hours, defined_since FROM "{definitions_table(table)}"'
            )
            return {name: (kind, field, hours, since) for name, kind, field, hours, since in cur.fetchall()}
    finally:
        conn.close()


def columns(postgres: LocalPostgres, table: str) -> list[str]:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            return table_columns(cur, table)
    finally:
        conn.close()


def test_a_new_table_stores_every_definition(postgres: LocalPostgres) -> None:
    table = f"schema_{uuid.uuid4().hex[:8]}"
    first = sink(postgres, table, FeatureSet.of(24))
    first.write([row(1, 1.0)])
    first.close()
    assert columns(postgres, table) == list(SPEC_ROWS.columns)
    stored = definitions(postgres, table)
    assert stored["production_ma_24h"] == ("mean", "production_mw", 24, None)
    assert stored["production_lag_24h"] == ("lag", "production_mw", 24, None)
    assert len(stored) == 5


def test_a_new_feature_adds_its_column_and_rows_before_it_keep_null(postgres: LocalPostgres) -> None:
    table = f"schema_{uuid.uuid4().hex[:8]}"
    old = sink(postgres, table, FeatureSet.of(24))
    old.write([row(1, 1.0)])
    old.close()
    wider = FeatureSet.of(24, [SUM_3H])
    rows = row_type(wider)
    new = sink(postgres, table, wider)
    with structlog.testing.capture_logs() as logs:
        new.write([rows.make(*row(2, 2.0).as_tuple(), 6.5)])
    new.close()
    assert columns(postgres, table) == [*SPEC_ROWS.columns, "production_sum_3h"]
    added = [e for e in logs if e["event"] == "column_added"]
    assert [(e["column"], e["type"]) for e in added] == [("production_sum_3h", "DOUBLE PRECISION")]
    assert "replay" in added[0]["note"]
    written = {key[1].hour: r for key, r in sink_rows(postgres, table).items()}
    assert written[1]["production_sum_3h"] is None and written[2]["production_sum_3h"] == 6.5
    assert definitions(postgres, table)["production_sum_3h"] == ("sum", "production_mw", 3, None)


def test_a_column_no_feature_has_is_left_alone_and_warned_about(postgres: LocalPostgres) -> None:
    table = f"schema_{uuid.uuid4().hex[:8]}"
    wider = sink(postgres, table, FeatureSet.of(24, [SUM_3H]))
    wider.prepare()
    wider.close()
    narrower = sink(postgres, table, FeatureSet.of(24))
    with structlog.testing.capture_logs() as logs:
        narrower.write([row(1, 1.0)])
    narrower.close()
    (warning,) = [e for e in logs if e["event"] == "columns_not_in_feature_set"]
    assert warning["columns"] == ["production_sum_3h"] and warning["log_level"] == "warning"
    (written,) = sink_rows(postgres, table).values()
    assert written["production_sum_3h"] is None and written["production_mw"] == 1.0


def test_a_changed_definition_is_refused_with_one_line(postgres: LocalPostgres) -> None:
    table = f"schema_{uuid.uuid4().hex[:8]}"
    first = sink(postgres, table, FeatureSet.of(24))
    first.prepare()
    first.close()
    for changed, old, new in [
        (FeatureSet.of(48), "mean(production_mw, 24 h)", "mean(production_mw, 48 h)"),
        (
            FeatureSet.of(24, [Feature("production_lag_24h", "lag", "production_mw", 168)]),
            "lag(production_mw, 24 h)",
            "lag(production_mw, 168 h)",
        ),
    ]:
        with pytest.raises(Refused) as refused:
            sink(postgres, table, changed).prepare()
        line = str(refused.value)
        assert "\n" not in line
        assert f"is defined as {old} in {definitions_table(table)} but as {new} here" in line
        assert "faust -A solar_agents replay --from TIME --accept-definitions" in line
    assert len(sink_rows(postgres, table)) == 0  # nothing written under the refused definition


def test_a_user_without_alter_is_refused_with_the_statement_to_run(postgres: LocalPostgres) -> None:
    table = f"schema_{uuid.uuid4().hex[:8]}"
    owner = sink(postgres, table, FeatureSet.of(24))
    owner.prepare()
    owner.close()
    user = writer_role(postgres, table)
    with pytest.raises(Refused) as refused:
        sink(postgres, table, FeatureSet.of(24, [SUM_3H]), user=user).prepare()
    line = str(refused.value)
    assert "\n" not in line
    assert f"table {table} lacks the columns production_sum_3h of the feature set" in line
    assert f"database user '{user}' may not change it" in line
    assert f'ALTER TABLE "{table}" ADD COLUMN "production_sum_3h" DOUBLE PRECISION' in line
    assert columns(postgres, table) == list(SPEC_ROWS.columns)  # nothing changed


def test_risingwave_takes_the_definitions_as_a_plain_insert(postgres: LocalPostgres) -> None:
    conn = postgres.connect()
    try:
        defs = definitions_table("features_enriched")
        text = RisingWaveDialect().upsert(defs, ("column_name", "kind"), ("column_name",)).as_string(conn)
    finally:
        conn.close()
    assert text == 'INSERT INTO "features_enriched_features" ("column_name", "kind") VALUES %s'
    assert KEY == ("region", "timestamp")
