"""Settings: misspelled names are warned about, bad values end in one line naming the setting, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from worker import FAUST

from solar_agents.cli.demo.services import free_port
from solar_agents.settings import SettingsError, load_settings, unknown_names


def test_unknown_names_that_look_like_ours_are_found_with_the_closest_real_one() -> None:
    found = dict(
        unknown_names(["BATCHSIZE", "KAFKA_TOPIC_SOLR", "KAFKA_SOMETHING", "PATH", "HOME", "BATCH_SIZE"])
    )
    assert found == {
        "BATCHSIZE": "BATCH_SIZE",
        "KAFKA_TOPIC_SOLR": "KAFKA_TOPIC_SOLAR",
        "KAFKA_SOMETHING": None,
    }


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DB_RETRY_MAX_SECONDS", "inf", "must be a finite number"),
        ("BATCH_MAX_WAIT_SECONDS", "-inf", "greater than 0"),
        ("KAFKA_BOOTSTRAP_SERVERS", "", "is set but empty"),
        ("KAFKA_BOOTSTRAP_SERVERS", " , ", "names no broker"),
        ("BATCH_SIZE", "abc", "valid integer"),
        ("WEB_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(f"setting {name}: ") and expected in str(info.value)


def test_a_data_dir_that_cannot_be_made_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "missing" / "state"))
    with pytest.raises(SettingsError, match=r"setting DATA_DIR: the parent directory of .* does not exist"):
        load_settings()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("DATA_DIR", str(a_file))
    with pytest.raises(SettingsError, match=r"setting DATA_DIR: .* is a file, not a directory"):
        load_settings()
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    assert load_settings().data_dir == tmp_path / "state"


def _faust(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "RISINGWAVE_", "DB_"))}
    # Nothing listens on these ports: a command that got as far as connecting fails fast.
    clean.update(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", RISINGWAVE_PORT=str(free_port()))
    clean.update(env)
    return subprocess.run(
        [FAUST, "-A", "solar_agents", *args], env=clean, capture_output=True, text=True, timeout=60
    )


def test_a_bad_setting_ends_the_cli_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = _faust("rows", DB_RETRY_MAX_SECONDS="inf")
    assert result.returncode == 2, result
    assert result.stderr.strip() == "error: setting DB_RETRY_MAX_SECONDS: must be a finite number (got 'inf')"
    assert "Traceback" not in result.stdout + result.stderr
    result = _faust("worker", DATA_DIR=str(tmp_path / "no" / "such"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result
    assert "setting DATA_DIR" in result.stderr


def test_a_misspelled_setting_is_warned_about_at_start() -> None:
    result = _faust("rows", BATCHSIZE="5")
    warnings = [json.loads(line) for line in result.stdout.splitlines() if '"unknown_setting"' in line]
    assert warnings == [
        {**warnings[0], "event": "unknown_setting", "name": "BATCHSIZE", "did_you_mean": "BATCH_SIZE"}
    ], result.stdout
    assert warnings[0]["level"] == "warning"
