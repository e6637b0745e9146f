"""The project's copy of the contract, held against the code: the output table and the settings."""

from __future__ import annotations

import re
from pathlib import Path

from solar_agents.features import COLUMNS
from solar_agents.settings import Settings
from solar_agents.sink import CREATE_TABLE

SPEC = (Path(__file__).parent.parent / "docs" / "SPEC.md").read_text()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def test_output_table_is_the_contracts() -> None:
    block = re.search(r"```sql\n(CREATE TABLE.*?);\n```", SPEC, re.S)
    assert block is not None
    contract = squash(block.group(1)).replace("features_enriched", "{table}")
    assert squash(CREATE_TABLE) == contract
    columns = re.findall(r"^\s+\"?(\w+)\"?\s+[A-Z]", block.group(1), re.M)
    assert tuple(c for c in columns if c != "PRIMARY") == COLUMNS


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
