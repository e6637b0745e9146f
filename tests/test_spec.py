"""The project's copy of the contract, held against the code: the output table and the settings."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from reference import COLUMNS as REFERENCE_COLUMNS
from reference import RawMessage, reference_features

from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.core.feature_set import FeatureSet
from solar_agents.core.features import COLUMNS, FIELDS
from solar_agents.schema import CREATE_TABLE
from solar_agents.settings import Settings
from solar_agents.sink import ConnectionInfo, FeatureSink

SPEC = (Path(__file__).parent.parent / "docs" / "SPEC.md").read_text()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def contract_ddl() -> str:
    block = re.search(r"```sql\n(CREATE TABLE.*?);\n```", SPEC, re.S)
    assert block is not None
    return block.group(1)


def contract_columns() -> list[tuple[str, str]]:
    """(column, SQL type) of the contract's output table, in order."""
    found = re.findall(r"^\s+\"?(\w+)\"?\s+([A-Z][A-Z ]*?),?$", contract_ddl(), re.M)
    return [(name, sql_type) for name, sql_type in found if name != "PRIMARY"]


def test_output_table_is_the_contracts() -> None:
    contract = squash(contract_ddl()).replace("features_enriched", "{table}")
    assert squash(CREATE_TABLE) == contract
    assert tuple(name for name, _ in contract_columns()) == COLUMNS


# information_schema's name of each type the contract's table uses.
_INFORMATION_SCHEMA_TYPES = {
    "VARCHAR": "character varying",
    "TIMESTAMPTZ": "timestamp with time zone",
    "DOUBLE PRECISION": "double precision",
    "INTEGER": "integer",
    "BOOLEAN": "boolean",
}


def test_one_list_of_columns_everywhere(postgres: LocalPostgres) -> None:
    """A column added to one of the row type, the contract's table and the reference, and not to all three,
    fails here: they must name the same columns in the same order, and the table the sink creates too."""
    row_type = tuple("timestamp" if name == "hour" else name for name in FIELDS)

    table = f"columns_{uuid.uuid4().hex[:8]}"
    sink = FeatureSink(
        ConnectionInfo(postgres.host, postgres.port, postgres.database, postgres.user),
        table,
        FeatureSet.of(24),
    )
    sink.connect()  # creates the table
    sink.close()
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position",
                (table,),
            )
            created = [(str(name), str(data_type)) for name, data_type in cur.fetchall()]
            cur.execute(f'DROP TABLE "{table}"')
        conn.commit()
    finally:
        conn.close()

    hour = "2019-01-01T00:00:00Z"
    solar = {"timestamp": hour, "production_mw": 1.0, "region": "R"}
    weather = {"timestamp": hour, "latitude": 53.6, "longitude": 9.9, "region": "R"}
    messages = [
        RawMessage("solar_production_raw", 0, 0, None, json.dumps(solar).encode()),
        RawMessage("weather_raw", 0, 0, None, json.dumps(weather).encode()),
    ]
    (reference_row,) = reference_features(messages).rows.values()

    contract = contract_columns()
    assert row_type == COLUMNS
    assert tuple(name for name, _ in contract) == row_type, "docs/SPEC.md's output table"
    assert tuple(name for name, _ in created) == row_type, "the table the sink creates"
    assert row_type == REFERENCE_COLUMNS, "tests/reference.py's COLUMNS"
    assert tuple(reference_row) == row_type, "tests/reference.py's rows"
    assert created == [(name, _INFORMATION_SCHEMA_TYPES[t]) for name, t in contract], "the contract's types"


def test_settings_defaults_are_the_contracts() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)`(?: / `[^|]*)? \| (.*?) \|$", SPEC, re.M)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    checked = 0
    for name, default in rows:
        value = default.split("`")[1] if "`" in default else ""
        field = name.lower()
        if hasattr(defaults, field):
            actual = getattr(defaults, field)
            if isinstance(actual, Path):
                actual = f"./{actual}"
            assert str(actual) == value or (value == "" and not actual), name
            checked += 1
    assert checked >= 10
    d = defaults
    assert (d.kafka_topic_solar, d.kafka_topic_weather) == ("solar_production_raw", "weather_raw")
    assert (d.risingwave_host, d.risingwave_port, d.risingwave_database, d.risingwave_user) == (
        "localhost",
        4567,
        "dev",
        "root",
    )
    assert (d.batch_size, d.batch_max_wait_seconds) == (1000, 1.0)
    assert (d.default_region, d.region_locations) == ("DE", {})


def test_decisions_are_written_down() -> None:
    assert "## Decisions where the contract is silent" in SPEC
    for topic in ("### Validation", "### Regions", "### Watermark", "### Replay", "### Dead letters"):
        assert topic in SPEC
