"""The benchmark's command: one run, every figure of the issue, one table and one JSON file.

Its flags (``benchmarks/run --help``), ``--render`` of a results file, and the run itself: the local
services, the phases in order (``benchmarks.phases``), the results file and the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import results as results_file
from benchmarks import services
from benchmarks.before_after import before_figures
from benchmarks.context import Run
from benchmarks.machine import machine_info
from benchmarks.options import (
    FULL_DAYS,
    FULL_REGIONS,
    QUICK_DAYS,
    QUICK_REGIONS,
    QUICK_SCALING_MESSAGES,
    SCALING_MESSAGES,
    SCALING_REGIONS,
    SCALING_ROUNDS,
    Options,
)
from benchmarks.phases.backfill import backfill, backfill_4x
from benchmarks.phases.backfill_command import backfill_command
from benchmarks.phases.ceiling import ceiling
from benchmarks.phases.data import data
from benchmarks.phases.floor import floor
from benchmarks.phases.live import live_latency
from benchmarks.phases.restore import restore
from benchmarks.phases.scaling import regions_scaling
from benchmarks.phases.sql_peer import sql_peer
from benchmarks.phases.uvloop import uvloop_pairs
from benchmarks.progress import Progress
from benchmarks.report import render
from benchmarks.source import ROOT
from solar_agents.settings import Settings


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="End-to-end benchmark of solar_agents on local services (tansu, PostgreSQL).",
    )
    parser.add_argument(
        "--regions", type=int, help=f"regions (default {FULL_REGIONS}; --quick {QUICK_REGIONS})"
    )
    parser.add_argument(
        "--days", type=int, help=f"days of history (default {FULL_DAYS}; --quick {QUICK_DAYS})"
    )
    parser.add_argument("--quick", action="store_true", help="a small size and a short live phase")
    parser.add_argument("--seed", type=int, default=2019, help="seed of the synthetic history")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the ceiling read and the SQL peer")
    parser.add_argument("--live-rate", type=float, default=200.0, help="live input, hours per second")
    parser.add_argument("--live-seconds", type=float, help="live phase duration (default 30; --quick 10)")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="do not attach py-spy to the backfills"
    )
    parser.add_argument(
        "--budget-4x",
        type=float,
        default=540.0,
        metavar="SECONDS",
        help="stop waiting for the 4x backfill after this long (default 540, keeps a full run near 15 min; "
        "0: no limit); an unfinished 4x run is reported as such",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON file (default: benchmarks/results.json at the full size, "
        "else benchmarks/out/results-RxD.json)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="logs and worker state (default benchmarks/out/run-TIME)"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting for every worker of the run (repeatable), e.g. BATCH_MAX_WAIT_SECONDS=0.5",
    )
    parser.add_argument(
        "--regions-scaling",
        action="store_true",
        help="instead of the full run: the backfill at 16, 1,000 and 5,000 regions with about the same "
        "number of raw messages each (results to benchmarks/results-scaling.json at the default size)",
    )
    parser.add_argument(
        "--scaling-regions",
        default=",".join(map(str, SCALING_REGIONS)),
        metavar="N,N,...",
        help="the sizes of --regions-scaling, in regions; the first is the base of the ratios "
        f"(default {','.join(map(str, SCALING_REGIONS))})",
    )
    parser.add_argument(
        "--scaling-messages",
        type=int,
        metavar="N",
        help=f"raw messages of each size of --regions-scaling, about (default {SCALING_MESSAGES:,}; "
        f"--quick {QUICK_SCALING_MESSAGES:,})",
    )
    parser.add_argument(
        "--scaling-rounds",
        type=int,
        default=SCALING_ROUNDS,
        metavar="N",
        help="rounds of every size in --regions-scaling, the base first in each and once more at the end; "
        f"each ratio is the median of the rounds' (default {SCALING_ROUNDS})",
    )
    parser.add_argument(
        "--uvloop-pairs",
        type=int,
        default=0,
        metavar="N",
        help="at the end of the run: N interleaved pairs of the floor and of the backfill command on "
        "asyncio's loop and on uvloop (default 0: none)",
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the table of a results file and exit"
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="JSON",
        help="an earlier results file: its key figures go into this run's JSON (`before`) and are printed "
        "beside this run's, with the ratio (with --render: beside the rendered file's)",
    )
    args = parser.parse_args(argv)
    before: dict[str, Any] | None = None
    if args.before:
        try:
            before = json.loads(args.before.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--before {args.before}: {exc}")
    if args.render:
        results = json.loads(args.render.read_text())
        if before is not None:
            results["before"] = before_figures(before, args.before, results)
        print(render(results))
        parser.exit(0)
    regions = args.regions or (QUICK_REGIONS if args.quick else FULL_REGIONS)
    days = args.days or (QUICK_DAYS if args.quick else FULL_DAYS)
    if regions < 1 or days < 2:
        parser.error("need at least 1 region and 2 days")
    live_seconds = args.live_seconds if args.live_seconds is not None else (10.0 if args.quick else 30.0)
    settings: dict[str, str] = {}
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep or name.lower() not in Settings.model_fields:
            parser.error(f"--setting {item!r}: expected NAME=VALUE with a setting name of solar_agents")
        # Workers run in the run's directory: a file setting is given as the caller meant it.
        settings[name.upper()] = str(Path(value).resolve()) if name.upper() == "FEATURES_FILE" else value
    try:
        scaling_regions = tuple(int(n) for n in args.scaling_regions.split(","))
    except ValueError:
        parser.error(f"--scaling-regions {args.scaling_regions!r}: expected regions, comma-separated")
    if len(scaling_regions) < 2 or min(scaling_regions) < 1:
        parser.error("--scaling-regions: at least two sizes of at least 1 region")
    scaling_messages = args.scaling_messages or (QUICK_SCALING_MESSAGES if args.quick else SCALING_MESSAGES)
    if args.scaling_rounds < 1:
        parser.error("--scaling-rounds: 1 or more")
    if args.uvloop_pairs < 0:
        parser.error("--uvloop-pairs: 0 or more")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    full = (regions, days) == (FULL_REGIONS, FULL_DAYS) and not args.quick
    if args.regions_scaling:
        default_scaling = (scaling_regions, scaling_messages) == (SCALING_REGIONS, SCALING_MESSAGES)
        output = args.output or (
            ROOT / "benchmarks" / "results-scaling.json"
            if default_scaling
            else ROOT / "benchmarks" / "out" / f"results-scaling-{scaling_messages}.json"
        )
    else:
        output = args.output or (
            ROOT / "benchmarks" / "results.json"
            if full
            else ROOT / "benchmarks" / "out" / f"results-{regions}x{days}.json"
        )
    workdir = args.workdir or ROOT / "benchmarks" / "out" / f"run-{stamp}"
    return Options(
        regions=regions,
        days=days,
        quick=args.quick,
        seed=args.seed,
        repeats=max(1, args.repeats),
        live_rate=args.live_rate,
        live_seconds=live_seconds,
        profile=args.profile,
        budget_4x=max(0.0, args.budget_4x),
        output=output.absolute(),
        workdir=workdir.absolute(),
        settings=settings,
        before=before,
        before_path=args.before,
        regions_scaling=args.regions_scaling,
        scaling_regions=scaling_regions,
        scaling_messages=scaling_messages,
        scaling_rounds=args.scaling_rounds,
        uvloop_pairs=args.uvloop_pairs,
    )


Phase = tuple[str, Callable[[Run], None]]

# The phases in the order they run, under their names in ``phases_seconds`` and ``errors``. The floors
# bracket the 1x backfill, the one with Faust's defaults (issue 24's floor) nearest to it.
PHASES: tuple[Phase, ...] = (
    ("data", data),
    ("ceiling", ceiling),
    ("sql_peer", sql_peer),
    ("floor", floor),
    ("floor_defaults", lambda run: floor(run, defaults=True)),
    ("backfill_1x", backfill),
    ("floor_defaults_after", lambda run: floor(run, "after", defaults=True)),
    ("floor_after", lambda run: floor(run, "after")),
    # Before the live phase adds hours to the 1x topics: it reads the history alone, as the floors do.
    ("backfill_command", backfill_command),
    ("live", live_latency),
    ("restore", restore),
    ("backfill_4x", backfill_4x),
)
UVLOOP_PHASE: Phase = ("uvloop_pairs", uvloop_pairs)  # with --uvloop-pairs N, after the others
# --regions-scaling: a run of its own.
SCALING_PHASES: tuple[Phase, ...] = (("regions_scaling", regions_scaling),)


def phases_of(options: Options) -> tuple[Phase, ...]:
    if options.regions_scaling:
        return SCALING_PHASES
    return (*PHASES, UVLOOP_PHASE) if options.uvloop_pairs else PHASES


def _stop_on_signal(signum: int, _frame: object) -> None:
    # Unwind through the finally blocks, which stop the workers and the services this run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    progress = Progress()
    options.workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    size = (
        f"regions scaling, {', '.join(map(str, options.scaling_regions))} regions, about "
        f"{options.scaling_messages:,} raw messages each"
        if options.regions_scaling
        else f"{options.regions} regions x {options.days} days"
    )
    progress(f"benchmark: {size}; logs in {options.workdir}; results to {options.output}")
    with services.started(options.workdir) as (broker, pg):
        progress(f"services: tansu on {broker.bootstrap_servers}, PostgreSQL on port {pg.port}")
        run: Run | None = None
        try:
            machine = machine_info(pg)
            run = Run(options, broker, pg, progress)
            for name, step in phases_of(options):
                with run.phase(name):
                    step(run)
            build = results_file.build_scaling if options.regions_scaling else results_file.build
            results = build(run, machine, started)
            if options.before is not None and not options.regions_scaling:
                results["before"] = before_figures(options.before, options.before_path, results)
        finally:
            if run is not None:
                for worker in run.workers:
                    worker.stop()
                with contextlib.suppress(Exception):
                    run.conn.close()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    print(render(results))
    print(f"\nresults: {options.output}")
    ok = not results["errors"] and all(c.get("match") for c in results["compare"].values())
    return 0 if ok else 1
