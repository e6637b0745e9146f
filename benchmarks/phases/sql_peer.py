"""Phase 3, SQL peer: the same messages in raw tables, the same features from one ``INSERT ... SELECT``."""

from __future__ import annotations

import statistics
import time

from benchmarks import kafka_io, sqlpeer
from benchmarks.context import Run


def load_raw(run: Run) -> dict[str, float]:
    """Every message of the 1x topics, read and loaded into the raw tables (the restore loads them again)."""
    collector = sqlpeer.RawCollector(run.g1.solar, run.g1.weather)
    started = time.perf_counter()
    read = kafka_io.read_topics(run.bootstrap, [run.g1.solar, run.g1.weather], on_message=collector)
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    collector.load(run.conn)
    return {
        "messages": read.messages,
        "read_parse_seconds": read_seconds,
        "load_seconds": time.perf_counter() - started,
    }


def sql_peer(run: Run) -> None:
    sqlpeer.create_raw_tables(run.conn)
    sqlpeer.create_features_table(run.conn, run.peer_table)
    loaded = load_raw(run)
    runs: list[float] = []
    rows = 0
    for attempt in range(run.o.repeats):
        seconds, rows = sqlpeer.compute_features(run.conn, run.peer_table, run.window_hours)
        runs.append(seconds)
        run.progress(f"sql peer query {attempt + 1}/{run.o.repeats}: {rows:,} rows in {seconds:.2f} s")
    run.history_rows = rows
    median = statistics.median(runs)
    run.figures["sql_peer"] = {
        "messages": loaded["messages"],
        "rows": rows,
        "query_seconds": [round(s, 3) for s in runs],
        "query_seconds_median": round(median, 3),
        "rate": round(loaded["messages"] / median),
        "load_seconds": round(loaded["load_seconds"], 3),
        "read_parse_seconds": round(loaded["read_parse_seconds"], 3),
        "rate_with_load": round(loaded["messages"] / (median + loaded["load_seconds"])),
        "what": "INSERT INTO a table with SPEC's DDL SELECT ... window functions (RANGE over "
        "timestamptz), lags by self-joins on ts - interval, over raw tables from COPY (timed apart)",
    }
