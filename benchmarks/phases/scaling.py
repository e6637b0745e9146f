"""``--regions-scaling``: about the same number of raw messages spread over more regions (16, 1,000 and
5,000 by default: 16 x 365 days, 1,000 x ~6 days, 5,000 x ~1 day), each size in fresh topics, a fresh group
and a fresh table, backfilled by a fresh worker (``faust -A solar_agents worker``, as the 1x backfill).

For each size: the backfill rate (Ready to the last row committed, the rows equal to the SQL peer's of the
same messages), the CPU of the worker and of its helper processes per raw message, start to first raw
message, the changelog records per raw message, and the peak RSS of the worker and of its helpers.

Every size runs in each of ``--scaling-rounds`` rounds (3), the first size (the base) first in each and once
more at the end, each run in a fresh group and table over the size's own topics. This machine's speed drifts
within minutes: a size's ratios in a round are to the mean of the base runs before and after it, and what is
reported is each ratio's median over the rounds. The changelog and the rows are held to their targets in
every round (the worst is reported).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks import kafka_io, sqlpeer, synth
from benchmarks.changelog import ChangelogTally
from benchmarks.context import Group, Run
from benchmarks.first_message import start_to_first_message
from benchmarks.phases.backfill import prepare_table, wait_backfill
from benchmarks.phases.data import produce_history
from benchmarks.results import ratio
from benchmarks.worker import remove_state

# Raw messages per region and hour: one of each feed, less outages, plus duplicates, corrections and strays
# (16 x 365 days: 280,819 messages for 140,160 region-hours).
MESSAGES_PER_REGION_HOUR = 2.0


def plan(regions: tuple[int, ...], messages: int) -> list[tuple[int, int]]:
    """(regions, hours of history) of each size: about ``messages`` raw messages each, whole hours."""
    return [(r, max(1, round(messages / (MESSAGES_PER_REGION_HOUR * r)))) for r in regions]


class Size:
    """One size's data: its regions, topics, message count and the SQL peer's rows of them."""

    def __init__(self, regions: int, hours: int) -> None:
        self.regions = regions
        self.hours = hours
        self.name = f"sc{regions}"
        self.solar, self.weather = f"{self.name}-solar", f"{self.name}-weather"
        self.peer_table = f"features_peer_{self.name}"
        self.messages = 0
        self.rows = 0
        self.peer_seconds = 0.0

    def prepare(self, run: Run) -> None:
        """Generate and produce its history; the SQL peer's rows of it."""
        started = time.perf_counter()
        region_list = synth.make_regions(self.regions)
        history, _live = synth.generate(region_list, self.hours, 0, run.o.seed)
        run.progress(
            f"scaling {self.regions} regions x {self.hours} hours: {len(history):,} messages generated in "
            f"{time.perf_counter() - started:.1f} s"
        )
        topics = Group(self.name, self.solar, self.weather, "", run.o.workdir)
        self.messages = produce_history(run, topics, 1, history=history, regions=region_list)
        collector = sqlpeer.RawCollector(self.solar, self.weather)
        kafka_io.read_topics(run.bootstrap, [self.solar, self.weather], on_message=collector)
        collector.load(run.conn)
        sqlpeer.create_features_table(run.conn, self.peer_table)
        self.peer_seconds, self.rows = sqlpeer.compute_features(run.conn, self.peer_table, run.window_hours)
        run.progress(
            f"scaling {self.regions} regions: SQL peer {self.rows:,} rows in {self.peer_seconds:.2f} s"
        )


def regions_scaling(run: Run) -> None:
    sizes = [Size(r, h) for r, h in plan(run.o.scaling_regions, run.o.scaling_messages)]
    sqlpeer.create_raw_tables(run.conn)
    rounds = run.o.scaling_rounds
    order = [(number, size) for number in range(1, rounds + 1) for size in sizes] + [(rounds + 1, sizes[0])]
    figures: list[dict[str, Any]] = []
    try:
        for number, size in order:
            if number == 1:
                size.prepare(run)
            suffix = "again" if number > rounds else "" if number == 1 else str(number)
            figures.append({**_backfill(run, size, suffix), "round": number})
    finally:  # what was measured is kept, also when a size failed
        run.figures["scaling"] = summarize(figures) if figures else {}


def _backfill(run: Run, size: Size, suffix: str) -> dict[str, Any]:
    """A fresh worker group over one size's topics, from Ready to the last row (equal to the peer's)."""
    label = size.name + (f"-{suffix}" if suffix else "")
    table = f"features_{label.replace('-', '_')}"
    group = Group(f"{label}-features", size.solar, size.weather, table, run.o.workdir / f"state-{label}")
    prepare_table(run, table)
    remove_state(group.data_dir)
    worker = run.worker(group, f"scaling-{label}").start()
    try:
        ready = worker.wait_ready()
        cpu = run.cpu_snapshot(worker)
        result = wait_backfill(
            run,
            worker,
            ready,
            expected_rows=size.rows,
            messages=size.messages,
            table=table,
            peer_table=size.peer_table,
        )
        cpu_used, cpu_per_message = run.cpu_per_message(worker, cpu, size.messages)
        cpu_from_start = worker.cpu_seconds() + worker.helpers_cpu_seconds()
        memory = worker.memory_kib()
    finally:
        worker.stop()
    tally = ChangelogTally()
    read = kafka_io.read_topics(
        run.bootstrap, kafka_io.changelog_topics(run.bootstrap, group.name), on_message=tally
    )
    comparison = result["compare"]
    run.compare[f"scaling_{label.replace('-', '_')}"] = comparison
    figure: dict[str, Any] = {
        "label": label,
        "regions": size.regions,
        "hours": size.hours,
        "repeat": suffix == "again",
        **result["figure"],
        **start_to_first_message(run.bootstrap, worker, group.name),
        "cpu_seconds": cpu_used,
        "cpu_per_message_ms": cpu_per_message,
        "cpu_seconds_from_start": round(cpu_from_start, 2),
        "changelog_records": read.messages,
        "changelog_records_per_raw_message": round(read.messages / size.messages, 5)
        if size.messages
        else None,
        "changelog_records_by_topic": tally.records_by_topic(),
        "changelog_max_value_bytes_by_topic": tally.max_value_bytes_by_topic(),
        "hwm_kib": memory.get("VmHWM"),
        "helpers_hwm_kib": memory.get("helpers_VmHWM"),
        "rows_match": comparison.get("match"),
        # Missing, extra and differing rows against the SQL peer's (0: equal).
        "rows_differing": (
            None
            if "match" not in comparison
            else sum(int(comparison.get(k) or 0) for k in ("missing", "extra", "differing"))
        ),
        "sql_peer_rows": size.rows,
        "sql_peer_query_seconds": round(size.peer_seconds, 3),
    }
    run.progress(
        f"scaling {label}: {size.regions} regions x {size.hours} hours, {size.messages:,} messages, "
        f"{figure['rate']} msg/s, {figure['cpu_per_message_ms']} ms CPU per message, "
        f"{figure['changelog_records_per_raw_message']} changelog records per message, rows "
        f"{'MATCH' if comparison.get('match') else 'MISMATCH'}"
    )
    if not comparison.get("match"):
        run.notes.append(f"scaling {label}: the pipeline's rows differ from the SQL peer's: {comparison}")
    return figure


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs, and each size's figures over its rounds: its ratios to the base in each round (to the mean
    of the base runs before and after it), and their medians; rate, CPU per message and peak RSS as medians;
    the changelog and the rows differing as the worst round's."""
    base_regions = runs[0]["regions"]
    base_runs = {r["round"]: r for r in runs if r["regions"] == base_regions}

    def base_of(number: int, key: str) -> float | None:
        """The base's figure around a round: the mean of its runs before and after it."""
        values = [base_runs[n].get(key) for n in (number, number + 1) if n in base_runs]
        return statistics.mean(values) if values and None not in values else None  # type: ignore[type-var]

    def median(values: list[Any], digits: int | None = None) -> Any:
        present = [v for v in values if v is not None]
        if len(present) != len(values) or not present:
            return None
        return round(statistics.median(present), digits) if digits is not None else statistics.median(present)

    rounds = sorted(number for number, r in base_runs.items() if not r["repeat"])  # the last base run closes
    base = {
        "regions": base_regions,
        "rates": [r.get("rate") for r in base_runs.values()],
        "rate": median([base_of(n, "rate") for n in rounds], 0),
        "cpu_per_message_ms": median([base_of(n, "cpu_per_message_ms") for n in rounds], 4),
        "hwm_kib": median([base_of(n, "hwm_kib") for n in rounds], 0),
        "helpers_hwm_kib": median([base_of(n, "helpers_hwm_kib") for n in rounds], 0),
    }
    sizes: list[dict[str, Any]] = []
    for regions in dict.fromkeys(r["regions"] for r in runs):
        own = [r for r in runs if r["regions"] == regions and (regions != base_regions or not r["repeat"])]
        every = [r for r in runs if r["regions"] == regions]

        def ratios(key: str, own: list[dict[str, Any]] = own) -> list[float | None]:
            return [ratio(r.get(key), base_of(r["round"], key)) for r in own]

        differing = [r.get("rows_differing") for r in every]
        changelog = [r.get("changelog_records_per_raw_message") for r in every]
        first = own[0]
        sizes.append(
            {
                "regions": regions,
                "hours": first["hours"],
                "messages": first["messages"],
                "rounds": len(own),
                "rate": median([r.get("rate") for r in own], 0),
                "rate_to_base": median(ratios("rate"), 4),
                "rate_to_base_rounds": ratios("rate"),
                "cpu_per_message_ms": median([r.get("cpu_per_message_ms") for r in own], 4),
                "cpu_per_message_to_base": median(ratios("cpu_per_message_ms"), 4),
                "cpu_per_message_to_base_rounds": ratios("cpu_per_message_ms"),
                "changelog_records_per_raw_message": max(changelog) if None not in changelog else None,  # type: ignore[type-var]
                "hwm_kib": median([r.get("hwm_kib") for r in own], 0),
                "hwm_to_base": median(ratios("hwm_kib"), 4),
                "helpers_hwm_kib": median([r.get("helpers_hwm_kib") for r in own], 0),
                "helpers_hwm_to_base": median(ratios("helpers_hwm_kib"), 4),
                "start_to_first_message_seconds": median(
                    [r.get("start_to_first_message_seconds") for r in own], 2
                ),
                "rows_match": all(r.get("rows_match") for r in every),
                "rows_differing": None if None in differing else sum(differing),
                "complete": all(r.get("complete") for r in every),
            }
        )
    return {
        "base": base,
        "sizes": sizes,
        "runs": runs,
        "what": "each size in each round: fresh topics, group and table; faust -A solar_agents worker from "
        "Ready to the last row committed (rows equal to the SQL peer's); the base size runs first in each "
        "round and once more at the end; a size's ratios in a round are to the mean of the base runs before "
        "and after it, and each ratio reported is the median of the rounds'; the changelog and the rows "
        "differing are the worst round's",
    }
