"""On services that require encryption and a login: the broker behind TLS with client certificates and SASL
SCRAM-SHA-512, PostgreSQL with TLS checked as verify-full and a password, the web view behind a token.

The pipeline's scenario exact against the reference, the commands over the same connections, one line
naming the setting for every refused setting, and no password or token in any log of these runs (the last
test reads the logs the others left: run the module whole).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Secrets
from kafka_util import Kafka
from pipeline_util import assert_dead_letters, messy_feed, produce_in_order, reference_for, wait_until_equal
from scenario import interleave
from secure_services import Certificates, SecureBroker
from worker import FAUST, Names, Worker, http_get, worker_env

from solar_agents.cli.demo.postgres import LocalPostgres


def secure_env(
    broker: SecureBroker,
    postgres: LocalPostgres,
    certs: Certificates,
    secrets: Secrets,
    names: Names,
    directory: Path,
    **extra: str,
) -> dict[str, str]:
    """A worker's settings for the secure services, its passwords in files (``…_FILE``)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"kafka-password": secrets.kafka_password, "database-password": secrets.database_password}
    for name, secret in files.items():
        (directory / name).write_text(secret + "\n")
        (directory / name).chmod(0o600)
    env = worker_env(broker.broker, postgres, names, directory / "state")
    env.pop("RISINGWAVE_PASSWORD")
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{broker.tls_port}",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME=secrets.kafka_user,
        KAFKA_SASL_PASSWORD_FILE=str(directory / "kafka-password"),
        KAFKA_SSL_CAFILE=str(certs.ca),
        KAFKA_SSL_CERTFILE=str(certs.client_cert),
        KAFKA_SSL_KEYFILE=str(certs.client_key),
        RISINGWAVE_PASSWORD_FILE=str(directory / "database-password"),
        RISINGWAVE_SSLMODE="verify-full",
        RISINGWAVE_SSLROOTCERT=str(certs.ca),
        WEB_AUTH_TOKEN=secrets.web_token,
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v}


def run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FAUST, "-A", "solar_agents", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Everything the runs of this module printed or logged, for the last test."""
    return []


def test_the_pipeline_over_sasl_ssl_and_verify_full_is_exact(
    tls_broker: SecureBroker,
    tls_postgres: LocalPostgres,
    certificates: Certificates,
    session_secrets: Secrets,
    tmp_path: Path,
    outputs: list[str],
) -> None:
    names = Names()
    env = secure_env(tls_broker, tls_postgres, certificates, session_secrets, names, tmp_path)
    kafka = Kafka(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        security=tls_broker.connection(session_secrets.kafka_user).librdkafka(),
    )
    kafka.create_topics({names.solar: 3, names.weather: 2})
    feed = messy_feed(names, ("DE_50hertz", "DE_north"))
    order = interleave(feed)
    half = len(order) // 2
    produce_in_order(kafka, order[:half])
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        produce_in_order(kafka, order[half:])
        reference = reference_for(kafka, names, len(order))
        assert len(reference.rows) == 2 * 5088
        wait_until_equal(
            tls_postgres, names.table, reference.rows, alive=lambda: worker.alive, on_timeout=worker.tail
        )
        assert_dead_letters(kafka, names, reference)

        # The web view answers only with the token.
        for path in ("/", "/api/regions", "/api/deadletters", "/metrics"):
            assert http_get(worker.url + path)[0] == 401, path
            assert http_get(worker.url + path, "not-the-token")[0] == 401, path
            assert http_get(worker.url + path, session_secrets.web_token)[0] == 200, path

        rows = run(env, "rows", "--limit", "3", "--region", "DE_north")
        assert rows.returncode == 0 and "(3 of 10176 rows" in rows.stdout, rows
        outputs.extend([rows.stdout, rows.stderr])
    finally:
        assert worker.terminate() == 0
        outputs.append(worker.log_text())

    # The commands' own connections: replay's scan and commit, then a backfill that rewrites the rows.
    replay = run(env, "replay", "--from", "2019-07-01T00:00Z")
    outputs.extend([replay.stdout, replay.stderr])
    assert replay.returncode == 0 and "replay set" in replay.stdout, replay
    backfill = run(env, "backfill", timeout=300)
    outputs.extend([backfill.stdout, backfill.stderr])
    assert backfill.returncode == 0, backfill.stderr[-3000:]
    wait_until_equal(tls_postgres, names.table, reference.rows, timeout=30)


# Each refused setting, and the setting its line names. The connection that is wrong: "kafka" or "database".
REFUSALS = {
    "kafka-wrong-password": ("kafka", "KAFKA_SASL_PASSWORD", "refused the login of user"),
    "kafka-unknown-ca": ("kafka", "KAFKA_SSL_CAFILE", "not signed by a CA this client trusts"),
    "kafka-tls-to-a-plaintext-port": ("kafka", "KAFKA_SECURITY_PROTOCOL", "does not speak TLS there"),
    "kafka-plaintext-to-a-tls-port": ("kafka", "KAFKA_SECURITY_PROTOCOL", "expects TLS"),
    "database-wrong-password": ("database", "RISINGWAVE_PASSWORD", "refused the password of user"),
    "database-unknown-ca": ("database", "RISINGWAVE_SSLROOTCERT", "is not signed by the CA"),
    "database-tls-to-a-plaintext-port": ("database", "RISINGWAVE_SSLMODE", "does not speak TLS"),
    "database-plaintext-to-a-tls-port": (
        "database",
        "RISINGWAVE_SSLMODE",
        "takes only encrypted connections",
    ),
}
WRONG = "wrong-secret-3141"


def refused_env(
    case: str, env: dict[str, str], broker: SecureBroker, plain: LocalPostgres, certs: Certificates
) -> dict[str, str]:
    changes = {
        "kafka-wrong-password": {"KAFKA_SASL_PASSWORD_FILE": "", "KAFKA_SASL_PASSWORD": WRONG},
        "kafka-unknown-ca": {"KAFKA_SSL_CAFILE": str(certs.other_ca)},
        "kafka-tls-to-a-plaintext-port": {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker.sasl_port}"},
        "kafka-plaintext-to-a-tls-port": {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            **dict.fromkeys(("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"), ""),
        },
        "database-wrong-password": {"RISINGWAVE_PASSWORD_FILE": "", "RISINGWAVE_PASSWORD": WRONG},
        "database-unknown-ca": {"RISINGWAVE_SSLROOTCERT": str(certs.other_ca)},
        "database-tls-to-a-plaintext-port": {"RISINGWAVE_PORT": str(plain.port)},
        "database-plaintext-to-a-tls-port": {"RISINGWAVE_SSLMODE": "disable"},
    }[case]
    return {k: v for k, v in {**env, **changes}.items() if v}


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("refused")


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_refused_setting_ends_a_command_and_a_worker_in_one_line_naming_it(
    case: str,
    tls_broker: SecureBroker,
    tls_postgres: LocalPostgres,
    postgres: LocalPostgres,
    certificates: Certificates,
    session_secrets: Secrets,
    module_dir: Path,
    outputs: list[str],
) -> None:
    service, setting, words = REFUSALS[case]
    names = Names()
    env = secure_env(tls_broker, tls_postgres, certificates, session_secrets, names, module_dir / case)
    env = refused_env(case, env, tls_broker, postgres, certificates)
    command = ("replay",) if service == "kafka" else ("rows",)
    for args in (command, ("worker", "-l", "info")):
        result = run(env, *args, timeout=120)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == 2, (args, result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
        assert setting in lines[0] and words in lines[0], (args, lines[0])
        assert "Traceback" not in result.stdout + result.stderr, args
        assert WRONG not in result.stdout + result.stderr
    logged = [json.loads(line) for line in result.stdout.splitlines() if '"connection_refused"' in line]
    assert [e["service"] for e in logged] == [service.replace("kafka", "broker")], result.stdout


def test_no_password_or_token_in_any_log_of_these_runs(
    tls_broker: SecureBroker, tls_postgres: LocalPostgres, session_secrets: Secrets, outputs: list[str]
) -> None:
    assert len(outputs) > 2 * len(REFUSALS), "run with the tests above: this one reads what they left"
    services = [
        path.read_text(errors="replace") for path in [*tls_broker.logs(), tls_postgres.log_path] if path
    ]
    assert len(services) == 4 and '"login"' in services[0], "the SASL endpoint's log"
    for secret in session_secrets.all():
        for text in [*outputs, *services]:
            assert secret not in text
