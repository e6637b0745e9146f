"""Counters of one worker, read by the progress log, the backfill's summary, the web view and /metrics.
In memory: they restart at zero."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from solar_agents.observe.health import Failing

# How many of the latest dead letters are kept in memory for the web view.
RECENT_DEAD_LETTERS = 500
# How much of a rejected value is kept: enough to see what it was, bounded per message.
DEAD_LETTER_PREVIEW_BYTES = 200


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message as the web view shows it; the full bytes are on the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    reason: str
    time: float  # epoch seconds, when it was rejected
    value_size: int  # bytes of the whole value
    value_preview: str  # the first bytes as text, undecodable bytes replaced


@dataclass
class Stats:
    ingested: Counter[str] = field(default_factory=Counter)  # valid messages per raw topic
    dead_letters: Counter[str] = field(default_factory=Counter)  # per raw topic
    late: int = 0
    regions_refused: int = 0  # raw records of new regions past MAX_REGIONS (dead letters too)
    reads_held: int = 0  # times a raw partition's fetches waited for a slower one (MAX_READ_SKEW_HOURS)
    # Records the consumer's hand-over dropped, read again (``offsets``); offsets of jumps holding no record.
    records_read_again: int = 0
    offsets_absent: int = 0
    # Retries under way, by event: what /healthz shows, and what a stop that ran out of time names as the
    # work it left undone (``runtime.batches.retrying``).
    retrying: dict[str, Failing] = field(default_factory=dict)
    rows_emitted: int = 0
    rows_written: int = 0
    # The align step's flushes of its held table writes, by what called them, and the entries they wrote.
    table_flushes: Counter[str] = field(default_factory=Counter)
    table_entries_written: int = 0
    batches_written: int = 0
    write_seconds_total: float = 0.0
    write_seconds_last: float = 0.0
    write_failures: int = 0
    # Write-batch latency histogram buckets (seconds), Prometheus style: upper bound -> count.
    write_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), 0)
    )
    # The latest rejects, newest last; older ones drop off.
    recent_dead_letters: deque[DeadLetter] = field(default_factory=lambda: deque(maxlen=RECENT_DEAD_LETTERS))

    def dead_letter(self, topic: str, partition: int, offset: int, reason: str, value: bytes | None) -> None:
        """Count a rejected message and keep it among the latest few."""
        self.dead_letters[topic] += 1
        raw = value or b""
        preview = raw[:DEAD_LETTER_PREVIEW_BYTES].decode("utf-8", errors="replace")
        self.recent_dead_letters.append(
            DeadLetter(topic, partition, offset, reason, time.time(), len(raw), preview)
        )

    def observe_write(self, rows: int, seconds: float) -> None:
        self.rows_written += rows
        self.batches_written += 1
        self.write_seconds_total += seconds
        self.write_seconds_last = seconds
        for bound in self.write_buckets:
            if seconds <= bound:
                self.write_buckets[bound] += 1

    def counts(self, raw_topics: Iterable[str]) -> dict[str, Any]:
        """The counters as the web view and the progress log show them: every raw topic named, at zero
        until it has a count, and any other topic with dead letters (the records topic's) beside them."""
        ingested = per_topic(self.ingested, raw_topics)
        dead = per_topic(self.dead_letters, raw_topics)
        return {
            "ingested": ingested,
            "ingested_total": sum(ingested.values()),
            "dead_letters": dead,
            "dead_letters_total": sum(dead.values()),
            "late": self.late,
            "regions_refused": self.regions_refused,
            "reads_held": self.reads_held,
            "records_read_again": self.records_read_again,
            "offsets_absent": self.offsets_absent,
            "rows_emitted": self.rows_emitted,
            "rows_written": self.rows_written,
            "batches_written": self.batches_written,
            "write_failures": self.write_failures,
            "write_seconds_total": self.write_seconds_total,
            "write_seconds_last": self.write_seconds_last,
        }


def per_topic(counter: Mapping[str, int], topics: Iterable[str]) -> dict[str, int]:
    """A counter by topic with each of ``topics`` present (0 until counted)."""
    return {topic: counter.get(topic, 0) for topic in topics} | dict(counter)
