"""Counters of one worker, read by the web view and /metrics. In memory: they restart at zero."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    ingested: Counter[str] = field(default_factory=Counter)  # valid messages per raw topic
    dead_letters: Counter[str] = field(default_factory=Counter)  # per raw topic
    late: int = 0
    rows_emitted: int = 0
    rows_written: int = 0
    batches_written: int = 0
    write_seconds_total: float = 0.0
    write_seconds_last: float = 0.0
    write_failures: int = 0
    # Write-batch latency histogram buckets (seconds), Prometheus style: upper bound -> count.
    write_buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), 0)
    )

    def observe_write(self, rows: int, seconds: float) -> None:
        self.rows_written += rows
        self.batches_written += 1
        self.write_seconds_total += seconds
        self.write_seconds_last = seconds
        for bound in self.write_buckets:
            if seconds <= bound:
                self.write_buckets[bound] += 1
