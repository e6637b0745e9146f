"""The embedded services and the Kafka test helpers, against the real broker and database."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_util import Kafka, consume_all, create_topics, produce

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.cli.demo.services import LocalServiceError, free_port, port_taken

# --------------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_port_taken_sees_a_listener_and_a_bound_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert port_taken("127.0.0.1", port)  # bound, not listening: a server could not bind it either
        sock.listen()
        assert port_taken("127.0.0.1", port)
        assert port_taken("0.0.0.0", port)
    assert not port_taken("127.0.0.1", port)


def test_broker_answers_metadata(broker: LocalBroker) -> None:
    assert broker.running
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    meta = AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10)
    assert [(str(b.host), int(b.port)) for b in meta.brokers.values()] == [("127.0.0.1", broker.port)]


def test_broker_start_stop(tmp_path: Path) -> None:
    with LocalBroker(workdir=tmp_path) as b:
        pid = b.pid
        assert pid is not None
        assert os.path.exists(f"/proc/{pid}")
        assert (tmp_path / "tansu.log").exists()
        with socket.create_connection(("127.0.0.1", b.port), timeout=2):
            pass
    assert not b.running
    assert b.pid is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", b.port), timeout=2):
        pass


def test_broker_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        b = LocalBroker(port=sock.getsockname()[1])
        with pytest.raises(LocalServiceError, match="tansu"):
            b.start(timeout=5)
        assert not b.running


def test_create_topics_with_partition_counts(kafka: Kafka) -> None:
    names = {f"parts-{n}-{os.urandom(4).hex()}": n for n in (1, 4, 8)}
    create_topics(kafka.bootstrap, names)
    create_topics(kafka.bootstrap, names)  # idempotent
    meta = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert {name: len(meta[name].partitions) for name in names} == names
    some = next(iter(names))
    with pytest.raises(RuntimeError, match="exists with"):
        create_topics(kafka.bootstrap, {some: names[some] + 1})


def test_round_trip_keys_values_headers(kafka: Kafka) -> None:
    topic = kafka.new_topic(partitions=1)
    sent = [
        (b"DE", b'{"n": 1}', {"source": b"a", "trace": b"\x00\x01"}),
        (None, b'{"n": 2}', {}),
        (b"FR", b"", {"only": b"one"}),
    ]
    positions = kafka.produce(topic, sent)
    assert positions == [(0, 0), (0, 1), (0, 2)]
    got = kafka.consume_all(topic)
    assert [(m.key, m.value, m.headers) for m in got] == sent
    assert [(m.topic, m.partition, m.offset) for m in got] == [(topic, 0, i) for i in range(3)]
    assert all(m.timestamp_ms is not None and m.timestamp_ms > 0 for m in got)


def test_produce_to_explicit_partition_and_across_partitions(kafka: Kafka) -> None:
    topic = kafka.new_topic(partitions=4)
    positions = kafka.produce(topic, [(None, b"x%d" % i) for i in range(5)], partition=2)
    assert positions == [(2, i) for i in range(5)]
    keyed = [(b"region-%d" % i, b"v%d" % i) for i in range(40)]
    positions = kafka.produce(topic, keyed)
    got = kafka.consume_all(topic)
    assert len(got) == 45
    by_value = {m.value: (m.partition, m.offset) for m in got}
    # produce() returns each message's own position, in input order.
    assert [by_value[v] for _, v in keyed] == positions
    # The same key always lands on the same partition.
    assert len({p for p, _ in positions}) > 1


def test_consume_all_of_empty_topic(kafka: Kafka) -> None:
    assert kafka.consume_all(kafka.new_topic(partitions=3), timeout=10) == []


def test_consume_all_reads_a_whole_batch_despite_wrong_end_offsets(broker: LocalBroker) -> None:
    """500 messages in one batch: tansu's ListOffsets(latest) can say 1, reading must still see 500."""
    bootstrap = broker.bootstrap_servers
    topic = f"batch-{os.urandom(4).hex()}"
    create_topics(bootstrap, {topic: 1})
    # A long linger puts all 500 into one record batch.
    positions = produce(bootstrap, topic, [(None, b"m%03d" % i) for i in range(500)], partition=0)
    assert positions == [(0, i) for i in range(500)]

    got = consume_all(bootstrap, topic)
    assert [m.offset for m in got] == list(range(500))
    assert [m.value for m in got] == [b"m%03d" % i for i in range(500)]

    # Record what the broker's end-offset answer was; the helper must not depend on it.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        _low, high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    finally:
        probe.close()
    assert high in (1, 500), high


def test_consume_all_waits_for_min_messages(kafka: Kafka) -> None:
    topic = kafka.new_topic(partitions=2)
    kafka.produce(topic, [(b"k", b"v")])
    # Fewer messages than asked: returns what there is at the timeout instead of hanging.
    assert len(kafka.consume_all(topic, timeout=2, min_messages=2)) == 1


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A private server for tests that stop or kill it, so the session one stays untouched."""
    pg = LocalPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.cleanup()


def test_postgres_app_defaults_work(postgres: LocalPostgres) -> None:
    # The app's defaults: host localhost, database dev, user root, empty password.
    conn = psycopg2.connect(host="localhost", port=postgres.port, dbname="dev", user="root", password="")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_user, version()")
            db, user, version = cur.fetchone()
    finally:
        conn.close()
    assert (db, user) == ("dev", "root")
    assert version.startswith("PostgreSQL")


def test_postgres_properties_and_connect(postgres: LocalPostgres) -> None:
    assert postgres.running
    assert (postgres.host, postgres.database, postgres.user) == ("127.0.0.1", "dev", "root")
    assert f"port={postgres.port}" in postgres.dsn
    conn = postgres.connect()
    try:
        assert conn.autocommit
        with conn.cursor() as cur:
            cur.execute("SHOW listen_addresses")
            assert cur.fetchone() == ("127.0.0.1",)
            cur.execute("SHOW fsync")
            assert cur.fetchone() == ("off",)
    finally:
        conn.close()


def test_postgres_server_runs_as_non_root(postgres: LocalPostgres) -> None:
    pid = postgres.pid
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    if os.geteuid() == 0:
        import pwd

        assert pwd.getpwuid(uid).pw_name == "postgres"
        assert postgres.datadir is not None
        assert os.stat(postgres.datadir).st_uid == uid


def test_postgres_stop_then_start_keeps_data_and_port(own_postgres: LocalPostgres) -> None:
    pg = own_postgres
    port = pg.port
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE kept (id INTEGER PRIMARY KEY, v TEXT)")
        cur.execute("INSERT INTO kept VALUES (1, 'one'), (2, 'two')")
    conn.close()
    pg.stop()
    assert not pg.running
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(pg.dsn, connect_timeout=2)
    pg.start()
    assert pg.port == port
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, v FROM kept ORDER BY id")
            assert cur.fetchall() == [(1, "one"), (2, "two")]
    finally:
        conn.close()


def test_postgres_kill_then_start_recovers(own_postgres: LocalPostgres) -> None:
    pg = own_postgres
    conn = pg.connect()
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE crash (id INTEGER)")
        cur.execute("INSERT INTO crash SELECT generate_series(1, 1000)")
    old_pid = pg.pid
    pg.kill()
    assert not pg.running
    with pytest.raises(psycopg2.Error), conn.cursor() as cur:
        cur.execute("SELECT 1")
    conn.close()
    assert pg.datadir is not None
    assert not (pg.datadir / "postmaster.pid").exists()
    pg.start()
    assert pg.pid != old_pid
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            # Acknowledged commits survive the crash.
            cur.execute("SELECT count(*) FROM crash")
            assert cur.fetchone() == (1000,)
    finally:
        conn.close()
    pg.restart()
    pg.connect().close()


def test_postgres_persistent_workdir() -> None:
    # Every parent must be reachable by the server user when running as root.
    base = Path(tempfile.mkdtemp(prefix="pg-persist-"))
    base.chmod(0o755)
    workdir = base / "var" / "postgres"
    try:
        with LocalPostgres(workdir=workdir) as pg:
            with pg.connect() as conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE t (x INTEGER)")
                cur.execute("INSERT INTO t VALUES (42)")
            conn.close()
        assert (workdir / "PG_VERSION").exists()
        # A new instance on the same directory (another run of the demo) finds the data.
        with LocalPostgres(workdir=workdir) as pg2:
            conn = pg2.connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT x FROM t")
                    assert cur.fetchall() == [(42,)]
            finally:
                conn.close()
        assert (workdir / "PG_VERSION").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_postgres_unreachable_workdir_is_a_clear_error() -> None:
    base = Path(tempfile.mkdtemp(prefix="pg-private-"))  # mode 700, owned by root
    try:
        pg = LocalPostgres(workdir=base / "data")
        with pytest.raises(LocalServiceError, match="cannot reach"):
            pg.start()
        assert not pg.running
    finally:
        shutil.rmtree(base, ignore_errors=True)
