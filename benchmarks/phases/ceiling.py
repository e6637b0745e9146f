"""Phase 2, ceiling: the broker's raw read rate of the 1x topics with a plain confluent-kafka consumer."""

from __future__ import annotations

import statistics

from benchmarks import kafka_io
from benchmarks.context import Run
from benchmarks.machine import package_version


def ceiling(run: Run) -> None:
    rates: list[float] = []
    for attempt in range(run.o.repeats):
        result = kafka_io.read_topics(run.bootstrap, [run.g1.solar, run.g1.weather])
        if result.messages != run.messages_1x:
            raise RuntimeError(f"read {result.messages} messages, produced {run.messages_1x}")
        rates.append(result.rate)
        run.progress(
            f"ceiling read {attempt + 1}/{run.o.repeats}: {result.messages:,} in {result.seconds:.2f} s"
        )
    run.figures["ceiling"] = {
        "messages": run.messages_1x,
        "rates": [round(r) for r in rates],
        "rate": round(statistics.median(rates)),
        "client": f"confluent-kafka {package_version('confluent-kafka')} Consumer.consume(10000), no parsing",
    }
