"""Helpers for the fault tests: paced production in the background, worker log events, the web API, hours."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from kafka_util import Kafka
from pipeline_util import Produced, Rows, sink_rows
from reference import assert_rows_equal
from worker import Names, Worker

from solar_agents.cli.demo.postgres import LocalPostgres

HOUR_US = 3_600_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- production ---------------------------------------------------------------------------------------------


class Feeder(threading.Thread):
    """Produces ``order`` a chunk every ``interval`` seconds in a thread, while the test does harm."""

    def __init__(self, kafka: Kafka, order: Sequence[Produced], chunk: int = 100, interval: float = 0.3):
        super().__init__(name="feeder", daemon=True)
        self.kafka = kafka
        self.order = list(order)
        self.chunk = chunk
        self.interval = interval
        self.produced = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at: float | None = None

    @property
    def duration(self) -> float:
        """How long producing everything takes at this pace (about)."""
        return (len(self.order) + self.chunk - 1) // self.chunk * self.interval

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            for start in range(0, len(self.order), self.chunk):
                due = self.started_at + (start // self.chunk) * self.interval
                time.sleep(max(0.0, due - time.monotonic()))
                by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
                for topic, key, value in self.order[start : start + self.chunk]:
                    by_topic.setdefault(topic, []).append((key, value))
                for topic, messages in by_topic.items():
                    self.kafka.produce(topic, messages)
                self.produced = min(len(self.order), start + self.chunk)
        except BaseException as exc:  # re-raised by finish()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the feeder did not finish"
        if self.error is not None:
            raise self.error


# --- the sink -----------------------------------------------------------------------------------------------


def sink_count(postgres: LocalPostgres, table: str) -> int:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            return int(cur.fetchone()[0])
    except Exception as exc:  # table not created yet
        if "does not exist" in str(exc):
            return 0
        raise
    finally:
        conn.close()


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None
) -> float:
    """Poll ``condition`` every 50 ms; return the seconds it took, or fail with ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s\n{detail() if detail else ''}")


def assert_rows_equal_except(
    expected: Rows, actual: Rows, excluded: Iterable[tuple[str, datetime]]
) -> tuple[Rows, Rows]:
    """Compare every row but the ``excluded`` keys (which must exist in both); return the excluded rows."""
    skip = set(excluded)
    missing = [k for k in skip if k not in actual]
    assert not missing, f"excluded rows missing from the sink: {sorted(missing)[:10]}"
    assert_rows_equal(
        {k: v for k, v in expected.items() if k not in skip},
        {k: v for k, v in actual.items() if k not in skip},
    )
    return {k: expected[k] for k in skip if k in expected}, {k: actual[k] for k in skip}


def sink_mismatch(
    postgres: LocalPostgres,
    table: str,
    expected: Rows,
    alive: Callable[[], bool] | None = None,
    timeout: float = 120.0,
    stuck: float = 20.0,
    settle: float = 3.0,
) -> str | None:
    """None once the sink equals ``expected`` and still does ``settle`` seconds later. Otherwise the last
    difference: at ``timeout``, when the worker died, or as soon as the sink has not changed for ``stuck``
    seconds while still different (a wrong end state: no need to wait for the timeout)."""
    started = time.monotonic()
    last_rows: Rows | None = None
    last_change = started
    error = "never read"
    while time.monotonic() - started < timeout:
        actual = sink_rows(postgres, table)
        try:
            assert_rows_equal(expected, actual)
        except AssertionError as exc:
            error = str(exc)
            now = time.monotonic()
            if actual != last_rows:
                last_rows, last_change = actual, now
            elif now - last_change > stuck:
                return f"{error}\n(the sink has not changed for {stuck:.0f} s)"
            if alive is not None and not alive():
                return f"{error}\n(the worker is dead)"
            time.sleep(1.0)
            continue
        time.sleep(settle)
        try:
            assert_rows_equal(expected, sink_rows(postgres, table))
        except AssertionError as exc:
            return f"{exc}\n(equal once, then not {settle:.0f} s later)"
        return None
    return f"{error}\n(timeout after {timeout:.0f} s)"


def sink_equals_except(
    postgres: LocalPostgres, table: str, expected: Rows, excluded: Iterable[tuple[str, datetime]]
) -> bool:
    try:
        assert_rows_equal_except(expected, sink_rows(postgres, table), excluded)
    except AssertionError:
        return False
    return True


# --- worker logs --------------------------------------------------------------------------------------------


def log_events(text: str, event: str | None = None) -> list[dict[str, Any]]:
    """The worker's structured log lines (one JSON object a line), those of ``event`` only if given."""
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and (event is None or entry.get("event") == event):
            out.append(entry)
    return out


def all_logs(workers: Iterable[Worker]) -> str:
    """The logs of all workers of a test (each restart writes its own file)."""
    seen: set[str] = set()
    texts = []
    for worker in workers:
        if str(worker.log_path) not in seen:
            seen.add(str(worker.log_path))
            texts.append(worker.log_text())
    return "\n".join(texts)


# --- the web API --------------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def counter(worker: Worker, name: str, timeout: float = 10.0) -> float:
    """The value of an unlabelled counter on the worker's ``/metrics`` (``name`` without ``_total``)."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=timeout) as response:
        metrics = response.read().decode()
    prefix = f"solar_agents_{name}_total "
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert lines, f"no {prefix.strip()} in /metrics:\n{metrics}"
    return float(lines[0].split()[1])


def try_json(url: str, timeout: float = 5.0) -> Any | None:
    try:
        return get_json(url, timeout)
    except (OSError, ValueError):
        return None


def web_answers(worker: Worker) -> bool:
    try:
        with urllib.request.urlopen(worker.url + "/", timeout=1):
            return True
    except OSError:
        return False


def iso_hour(hour: int) -> str:
    return hour_start(hour).isoformat().replace("+00:00", "Z")


def api_features(worker: Worker, region: str, first: int, last: int) -> tuple[Rows, int]:
    """The rows the worker's kept state gives for hours first..last whose history is kept, as sink rows;
    and how many kept hours in the range have both halves (a row)."""
    query = urllib.parse.urlencode({"from": iso_hour(first), "to": iso_hour(last)})
    answer = get_json(f"{worker.url}/api/regions/{urllib.parse.quote(region, safe='')}/hours?{query}")
    rows: Rows = {}
    complete = 0
    for entry in answer["hours"]:
        feature = entry["feature"]
        if feature is None:
            continue
        complete += 1
        if not entry["history_kept"]:
            continue
        stamp = datetime.fromisoformat(feature["timestamp"].replace("Z", "+00:00"))
        rows[(region, stamp)] = {**feature, "timestamp": stamp}
    return rows, complete


# --- hours of raw messages ----------------------------------------------------------------------------------


def hour_start(hour: int) -> datetime:
    return EPOCH + timedelta(hours=hour)


def hour_index(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(hours=1)


def message_hour(value: bytes) -> tuple[str | None, int] | None:
    """(payload region, hour) of a valid-looking raw message; None if it cannot be read (a malformed one)."""
    try:
        obj = json.loads(value)
        stamp = obj["timestamp"]
        if isinstance(stamp, bool):
            return None
        if isinstance(stamp, int | float):
            micros = round(stamp * 1_000_000)
        else:
            moment = datetime.fromisoformat(stamp)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            micros = (moment - EPOCH) // timedelta(microseconds=1)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    region = obj.get("region")
    return (region if isinstance(region, str) else None), (micros + HOUR_US // 2) // HOUR_US


def region_of(key: bytes | None, value: bytes) -> str | None:
    parsed = message_hour(value)
    if parsed is None:
        return None
    return parsed[0] or (key.decode() if key else None)


def split_out(
    order: Sequence[Produced], picked: Callable[[str, str | None, int], bool]
) -> tuple[list[Produced], list[Produced]]:
    """(kept, held back): the messages for which ``picked(topic, region, hour)`` is true are held back."""
    kept: list[Produced] = []
    held: list[Produced] = []
    for topic, key, value in order:
        parsed = message_hour(value)
        region = region_of(key, value) if parsed else None
        if parsed is not None and picked(topic, region, parsed[1]):
            held.append((topic, key, value))
        else:
            kept.append((topic, key, value))
    return kept, held


def solar_message(region: str, hour: int, production: float, minutes_off: int = 0) -> tuple[bytes, bytes]:
    moment = hour_start(hour) + timedelta(minutes=minutes_off)
    payload = {"timestamp": moment.isoformat(), "region": region, "production_mw": production}
    return region.encode(), json.dumps(payload).encode()


def weather_message(region: str, hour: int, values: Mapping[str, float | None]) -> tuple[bytes, bytes]:
    payload = {"timestamp": hour_start(hour).isoformat(), "region": region, **values}
    return region.encode(), json.dumps(payload).encode()


# --- evidence -----------------------------------------------------------------------------------------------


def committed_offsets(bootstrap: str, group: str, topics: Mapping[str, int]) -> dict[str, int]:
    """The group's committed offset of every partition of ``topics`` (name -> partition count)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        return {f"{tp.topic}:{tp.partition}": tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def dump_topics(kafka: Kafka, names: Names, directory: Path, partitions: int = 4) -> Path:
    """Write the group's committed offsets and its internal topics (records, rows, changelogs) as JSON lines
    under ``directory``, for the analysis of a failure; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    internal = [f"{names.group}-{t}" for t in ("records", "rows")]
    internal += [f"{names.group}-{t}-changelog" for t in ("hours", "regions", "progress")]
    raw = {t: len(kafka.partitions(t)) for t in (names.solar, names.weather)}
    offsets = committed_offsets(
        kafka.bootstrap, names.group, {**raw, **dict.fromkeys(internal[:2], partitions)}
    )
    (directory / "committed.json").write_text(json.dumps(offsets, indent=1))
    for topic in internal:
        with (directory / f"{topic.removeprefix(names.group + '-')}.jsonl").open("w") as out:
            for m in kafka.consume_all(topic, timeout=60, idle=1.0):
                value = None if m.value is None else m.value.decode(errors="replace")
                key = None if m.key is None else m.key.decode(errors="replace")
                out.write(json.dumps({"p": m.partition, "o": m.offset, "k": key, "v": value}) + "\n")
    return directory
