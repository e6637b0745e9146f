"""Settings: misspelled names are warned about, bad values end in one line naming the setting, exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr
from worker import FAUST

from solar_agents.cli.demo.services import free_port
from solar_agents.settings import Settings, SettingsError, load_settings, setting_names, unknown_names


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


# --- connection settings and secrets ------------------------------------------------------------------------


def test_every_secret_can_come_from_a_file_and_shows_in_no_repr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {"KAFKA_SASL_PASSWORD": "kafka-pw", "RISINGWAVE_PASSWORD": "db-pw", "WEB_AUTH_TOKEN": "tok-en"}
    for name, secret in values.items():
        (tmp_path / name).write_text(secret + "\n")  # as an editor or `echo` leaves it
        monkeypatch.setenv(f"{name}_FILE", str(tmp_path / name))
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    settings = load_settings()
    assert settings.kafka_sasl_password is not None and settings.web_auth_token is not None
    assert settings.kafka_sasl_password.get_secret_value() == "kafka-pw"
    assert settings.risingwave_password.get_secret_value() == "db-pw"
    assert settings.web_auth_token.get_secret_value() == "tok-en"
    from solar_agents.sink import ConnectionInfo

    for shown in (repr(settings), str(settings), repr(ConnectionInfo.of(settings)), repr(settings.kafka)):
        assert not any(secret in shown for secret in values.values()), shown


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "setting KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT'"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "setting KAFKA_SASL_MECHANISM: is required with"),
        ({"KAFKA_SASL_USERNAME": "svc"}, "setting KAFKA_SECURITY_PROTOCOL: is PLAINTEXT, which uses no SASL"),
        ({"KAFKA_SSL_CAFILE": "{file}"}, "setting KAFKA_SECURITY_PROTOCOL: is PLAINTEXT, which uses no TLS"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "{missing}"},
            "setting KAFKA_SSL_CAFILE: no such",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "{file}"},
            "setting KAFKA_SSL_CERTFILE: is required with KAFKA_SSL_KEYFILE",
        ),
        ({"RISINGWAVE_SSLMODE": "strict"}, "setting RISINGWAVE_SSLMODE: Input should be 'disable'"),
        ({"RISINGWAVE_PASSWORD_FILE": "{missing}"}, "setting RISINGWAVE_PASSWORD_FILE: cannot read"),
        ({"WEB_AUTH_TOKEN_FILE": "{empty}"}, "setting WEB_AUTH_TOKEN_FILE: the file"),
        (
            {"WEB_AUTH_TOKEN_FILE": "{file}", "WEB_AUTH_TOKEN": "tok-en"},
            "setting WEB_AUTH_TOKEN_FILE: WEB_AUTH_TOKEN is set too",
        ),
    ],
)
def test_connection_settings_that_do_not_fit_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    (tmp_path / "file").write_text("pem or password")
    (tmp_path / "empty").write_text("\n")
    paths = {"file": tmp_path / "file", "missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(**paths))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(expected), str(info.value)
    assert "pem or password" not in str(info.value) and "tok-en" not in str(info.value)


def test_sslmode_is_libpq_s_and_prefer_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().risingwave_sslmode == "prefer"
    monkeypatch.setenv("RISINGWAVE_SSLMODE", "Verify-Full")
    assert load_settings().risingwave_sslmode == "verify-full"


def test_settings_env_example_lists_every_setting_with_its_default() -> None:
    example = Path(__file__).parents[1] / "settings.env.example"
    listed = dict(
        line.split("=", 1) for line in example.read_text().splitlines() if re.match(r"^[A-Z_]+=", line)
    )
    assert sorted(listed) == sorted(setting_names())
    for name, value in listed.items():
        # The value written there is the default: unset and written are the same.
        assert value == _written(
            Settings.model_fields[name.lower()].get_default(call_default_factory=True)
        ), name


def _written(default: object) -> str:
    if default is None or default == {}:
        return ""
    if isinstance(default, SecretStr):
        return default.get_secret_value()
    if isinstance(default, bool):
        return str(default).lower()
    return f"./{default}" if isinstance(default, Path) else str(default)
