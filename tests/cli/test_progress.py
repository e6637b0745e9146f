"""Progress of backfill and the replay's scan: messages read of the real total, rate and ETA."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from kafka_util import Kafka
from pipeline_util import produce_in_order
from scenario import build_feed, interleave
from worker import FAUST, Names, worker_env

from solar_agents.cli.demo.broker import LocalBroker
from solar_agents.cli.demo.postgres import LocalPostgres
from solar_agents.cli.progress import ProgressPrinter, Reading, duration


def test_reading_line_and_bar() -> None:
    reading = Reading(read=1200, total=5000, seconds=4.0)
    assert reading.line() == "read 1,200 / 5,000 messages (24.0 %), 300 msg/s, ETA 0:13"
    assert reading.bar(width=10) == "[##........]  24.0 %  1,200/5,000  300 msg/s  ETA 0:13"
    assert Reading(0, None, 1.0).line() == "read 0 messages (total not known yet), 0 msg/s"
    assert Reading(10, 10, 0.0).eta is None and Reading(10, 10, 1.0).eta == 0
    assert Reading(5, 0, 1.0).fraction == 1.0
    assert (duration(59.6), duration(61), duration(3723)) == ("1:00", "1:01", "1:02:03")


def test_printer_draws_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    now = [0.0]
    log = io.StringIO()
    lines = ProgressPrinter(log, clock=lambda: now[0], tty=False)
    for step in range(1, 21):
        now[0] = step * 1.0
        lines.update(step * 100, 2000)
    lines.update(2000, 2000, final=True)
    # A line at the first update, then every 5 s at most, and the last one.
    assert log.getvalue().splitlines() == [
        "read 100 / 2,000 messages (5.0 %), 100 msg/s, ETA 0:19",
        "read 600 / 2,000 messages (30.0 %), 100 msg/s, ETA 0:14",
        "read 1,100 / 2,000 messages (55.0 %), 100 msg/s, ETA 0:09",
        "read 1,600 / 2,000 messages (80.0 %), 100 msg/s, ETA 0:04",
        "read 2,000 / 2,000 messages (100.0 %), 100 msg/s, ETA 0:00",
    ]
    term = io.StringIO()
    bar = ProgressPrinter(term, clock=lambda: now[0], tty=True)
    now[0] = 21.0
    bar.update(50, 100)
    now[0] = 22.0
    bar.update(100, 100, final=True)
    assert term.getvalue().startswith("\r[###")
    assert term.getvalue().endswith("100/100  50 msg/s  ETA 0:00\n") and term.getvalue().count("\n") == 1


def _listed_end(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)
        )
    finally:
        consumer.close()


def test_backfill_draws_a_bar_to_the_real_total_on_a_terminal(
    broker: LocalBroker, kafka: Kafka, postgres: LocalPostgres, names: Names, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 1})
    order = interleave(build_feed(hours=24 * 40, solar_topic=names.solar, weather_topic=names.weather))
    produce_in_order(kafka, order, chunk=2000)
    listed = _listed_end(broker.bootstrap_servers, names.solar, 2) + _listed_end(
        broker.bootstrap_servers, names.weather, 1
    )
    # Batched writes: the broker's ListOffsets answers less than there is; the progress must not.
    assert listed < len(order)
    env = worker_env(broker, postgres, names, tmp_path / "state")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [FAUST, "-A", "solar_agents", "backfill"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    text = out.decode(errors="replace")
    bars = re.findall(
        r"\r\[([#.]{30})\]\s+([\d.]+) %\s+([\d,]+)/([\d,?]+)\s+([\d,]+) msg/s\s+ETA (\S+)", text
    )
    assert bars, text[-3000:]
    last = bars[-1]
    assert last[0] == "#" * 30 and last[1] == "100.0"
    assert int(last[2].replace(",", "")) == int(last[3].replace(",", "")) == len(order)
    assert "backfill done" in text


def test_replay_prints_its_scan_progress(
    broker: LocalBroker, kafka: Kafka, postgres: LocalPostgres, names: Names, tmp_path: Path
) -> None:
    kafka.create_topics({names.solar: 2, names.weather: 1})
    order = interleave(build_feed(hours=24 * 20, solar_topic=names.solar, weather_topic=names.weather))
    produce_in_order(kafka, order, chunk=2000)
    env = worker_env(broker, postgres, names, tmp_path / "state")
    done = subprocess.run(
        [FAUST, "-A", "solar_agents", "backfill"], env=env, capture_output=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = subprocess.run(
        [FAUST, "-A", "solar_agents", "replay", "--from", "2019-01-12T00:00:00Z"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = re.findall(
        r"^read ([\d,]+) / ([\d,]+) messages scanned \(([\d.]+) %\), [\d,]+ msg/s, ETA \S+$",
        result.stdout,
        re.M,
    )
    assert lines, result.stdout
    read, total, share = lines[-1]
    # The scan stops in each partition at the first record of the replay's history: less than everything.
    assert read == total and share == "100.0" and 0 < int(read.replace(",", "")) < len(order), result.stdout
    assert "replay set" in result.stdout
