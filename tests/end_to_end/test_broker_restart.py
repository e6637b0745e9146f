"""A broker that restarted empty (in-memory storage) under a worker that kept its local table state."""

from __future__ import annotations

import subprocess
from pathlib import Path

from faults_util import log_events, sink_count, wait_for
from kafka_util import Kafka
from pipeline_util import produce_in_order
from scenario import build_feed, interleave
from worker import FAUST, Names, Worker, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres


def test_worker_refuses_state_ahead_of_an_emptied_broker(
    postgres: LocalPostgres, names: Names, tmp_path: Path
) -> None:
    broker = LocalBroker(workdir=tmp_path / "broker")  # its own: the session's broker must keep its data
    started: list[Worker] = []
    broker.start()
    try:
        kafka = Kafka(broker.bootstrap_servers)
        kafka.create_topics({names.solar: 1, names.weather: 1})
        state = tmp_path / "state"
        env = worker_env(broker, postgres, names, state)
        worker = Worker(env, tmp_path / "worker-0.log")
        started.append(worker.start())
        feed = build_feed(hours=48, solar_topic=names.solar, weather_topic=names.weather)
        produce_in_order(kafka, interleave(feed))
        wait_for(lambda: sink_count(postgres, names.table) > 0, 60, "rows written", worker.tail)
        assert worker.terminate() == 0

        broker.stop()
        broker.start()  # same port, nothing in it: the changelogs are gone, the RocksDB state is not
        again = Worker(env, tmp_path / "worker-1.log")
        started.append(again.start(wait=False))
        assert again.proc is not None
        try:
            code = again.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker kept running on state the broker lost:\n{again.tail()}"
            ) from None
        text = again.log_text()
        assert code != 0, again.tail()
        [event] = log_events(text, "table_state_ahead_of_broker")
        assert event["level"] == "error" and event["data_dir"] == str(state), event
        last = text.strip().splitlines()[-1]
        assert last.startswith("refused: the table state in " + str(state)), again.tail()
        assert "faust -A solar_agents rebuild" in last, last

        # What the message says to run is enough: the next start comes up on the emptied broker.
        rebuilt = subprocess.run(
            [FAUST, "-A", "solar_agents", "rebuild"], env=env, capture_output=True, text=True, timeout=120
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        third = Worker(env, tmp_path / "worker-2.log")
        started.append(third.start())
        assert third.alive
    finally:
        for w in started:
            w.terminate(timeout=15)
        broker.stop()
