"""The declared feature set: SPEC's own set, a file that adds or redefines, and every bad file refused."""

from __future__ import annotations

import random

import pytest

from solar_agents.core.feature_set import (
    SPEC_FEATURES,
    Feature,
    FeatureFileError,
    FeatureSet,
    parse,
)
from solar_agents.core.features import row_type

ISSUE_FILE = """
[[features]]
name = "production_ma_168h"
kind = "mean"
field = "production_mw"
hours = 168

[[features]]
name = "cloud_cover_max_6h"
kind = "max"
field = "cloud_cover_pct"
hours = 6

[[features]]
name = "temperature_lag_24h"
kind = "lag"
field = "temperature_c"
hours = 24

[[features]]
name = "production_sum_3h"
kind = "sum"
field = "production_mw"
hours = 3
"""


def entry(name: str, kind: str, field: str, hours: int) -> str:
    return f'\n[[features]]\nname = "{name}"\nkind = "{kind}"\nfield = "{field}"\nhours = {hours}\n'


def test_spec_set_is_the_contracts_columns_with_the_24_hour_lag_written_once() -> None:
    spec = FeatureSet.of(24)
    assert (
        spec.names
        == SPEC_FEATURES
        == (
            "production_ma_24h",
            "temperature_ma_24h",
            "cloud_cover_ma_24h",
            "production_lag_1h",
            "production_lag_24h",
        )
    )
    assert [f.definition() for f in spec.features] == [
        "mean(production_mw, 24 h)",
        "mean(temperature_c, 24 h)",
        "mean(cloud_cover_pct, 24 h)",
        "lag(production_mw, 1 h)",
        "lag(production_mw, 24 h)",
    ]
    assert spec.reach == 24  # the 24 h lag reads furthest back
    assert FeatureSet.of(48).reach == 47 and FeatureSet.of(48).retention(48).hours == 95


def test_a_file_adds_after_the_time_columns_and_redefines_in_place() -> None:
    text = (
        ISSUE_FILE
        + '\n[[features]]\nname = "production_ma_24h"\nkind = "mean"\nfield = "production_mw"\nhours = 48\n'
    )
    features = parse(text, "features.toml", 24)
    assert features.names == (*SPEC_FEATURES, "production_ma_168h", "cloud_cover_max_6h",
                              "temperature_lag_24h", "production_sum_3h")  # fmt: skip
    assert features.by_name()["production_ma_24h"].hours == 48
    assert features.reach == 167  # retention follows the longest window
    columns = row_type(features).columns
    assert columns[columns.index("is_weekend") + 1 :] == (
        "production_ma_168h",
        "cloud_cover_max_6h",
        "temperature_lag_24h",
        "production_sum_3h",
    )


def test_the_hours_a_record_affects_follow_every_window_and_lag() -> None:
    features = parse(ISSUE_FILE, "features.toml", 24)
    solar = features.affected_hours([100], [])
    assert solar == set(range(100, 100 + 168)) | {101, 124}
    weather = features.affected_hours([], [100])
    # Temperature and cloud means (24 h), the cloud max (6 h), the temperature lag (24 h on).
    assert weather == set(range(100, 124)) | {124}
    for hour in range(90, 300):  # brute force: a row depends on a record iff its window or lag reads it
        reads_solar = 0 <= hour - 100 < 168 or hour - 100 in (1, 24)
        assert (hour in solar) == reads_solar, hour


def test_the_hours_many_records_affect_are_the_union_of_each_ones() -> None:
    """Runs of hours, gaps and repeats, as a batch brings them: the same as asking record by record."""
    features = parse(ISSUE_FILE, "features.toml", 24)
    rng = random.Random(7)
    for _ in range(300):
        solar = [rng.randrange(0, 600) for _ in range(rng.randrange(0, 40))]
        weather = [rng.randrange(0, 600) for _ in range(rng.randrange(0, 40))]
        one_by_one: set[int] = set()
        for hour in solar:
            one_by_one |= features.affected_hours([hour], [])
        for hour in weather:
            one_by_one |= features.affected_hours([], [hour])
        assert features.affected_hours(solar, weather) == one_by_one


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ('name = "x"\nkind = "median"\nfield = "production_mw"\nhours = 3', "unknown kind 'median'"),
        ('name = "x"\nkind = "mean"\nfield = "humidity"\nhours = 3', "unknown field 'humidity'"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = 0', "hours must be a whole number"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = 8785', "from 1 to 8784"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = "24"', "hours must be a whole number"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = true', "hours must be a whole number"),
        (
            'name = "Bad-Name"\nkind = "mean"\nfield = "production_mw"\nhours = 3',
            "name must be a column name",
        ),
        ('name = "latitude"\nkind = "mean"\nfield = "production_mw"\nhours = 3', "is a base column"),
        ('name = "timestamp"\nkind = "lag"\nfield = "production_mw"\nhours = 3', "is a base column"),
        ('name = "x"\nkind = "mean"\nfield = "production_mw"\nhours = 3\nwindow = 2', "unknown key 'window'"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_file_the_entry_and_the_problem(entry: str, problem: str) -> None:
    text = ISSUE_FILE + "\n[[features]]\n" + entry + "\n"
    with pytest.raises(FeatureFileError) as caught:
        parse(text, "conf/features.toml", 24)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("conf/features.toml: [[features]] entry 5")
    assert problem in message


def test_a_duplicate_name_and_a_file_that_is_not_toml_are_refused() -> None:
    duplicate = (
        ISSUE_FILE
        + '\n[[features]]\nname = "production_sum_3h"\nkind = "sum"\nfield = "production_mw"\nhours = 4\n'
    )
    with pytest.raises(FeatureFileError, match=r"entry 5: duplicate name 'production_sum_3h'"):
        parse(duplicate, "f.toml", 24)
    with pytest.raises(FeatureFileError, match=r"^f.toml: not TOML"):
        parse("[[features]\nname=", "f.toml", 24)
    with pytest.raises(FeatureFileError, match="unknown table 'feature'"):
        parse('[[feature]]\nname = "x"', "f.toml", 24)


def test_an_empty_file_is_spec_set() -> None:
    assert parse("", "f.toml", 24) == FeatureSet.of(24)
    assert Feature("x", "count", "temperature_c", 5).sql_type == "INTEGER"
