"""``--uvloop-pairs N``: N pairs of runs on asyncio's own event loop and on uvloop (Faust's ``-L uvloop``),
interleaved: in each pair the bare-Faust floor (Faust's defaults) on both loops, then the ``backfill``
command on both, over the 1x history, each in a fresh group. The order within a pair alternates (asyncio
first, then uvloop first) so that the machine's drift within a pair does not favour one loop.

Figures: each pair's rates and their ratio uvloop / asyncio; per loop the median rate; the median of the
pairs' ratios (issue 24: uvloop becomes the default at a gain of 5 % or more).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import kafka_io
from benchmarks.context import Run
from benchmarks.phases.backfill_command import run_backfill_command
from benchmarks.phases.floor import run_floor
from benchmarks.results import ratio

LOOPS = ("asyncio", "uvloop")
DEFAULT_GAIN = 1.05  # uvloop / asyncio, median of the pairs: at or above it uvloop is worth being the default


def uvloop_pairs(run: Run) -> None:
    # The live phase and the restore added hours to the 1x topics (and the restore recomputed the SQL
    # peer's rows from all of them): every run reads what the topics hold now.
    messages = kafka_io.read_topics(run.bootstrap, [run.g1.solar, run.g1.weather]).messages
    pairs: list[dict[str, Any]] = []
    run.figures["uvloop"] = {"pairs": pairs, "messages": messages}
    for i in range(run.o.uvloop_pairs):
        order = LOOPS if i % 2 == 0 else LOOPS[::-1]
        pair: dict[str, Any] = {"order": list(order), "floor": {}, "backfill": {}}
        for loop in order:
            name = f"floor-{i + 1}-{loop}"
            figure = run_floor(run, name, defaults=True, loop=_option(loop), messages=messages)
            pair["floor"][loop] = _brief(figure, "cpu_per_message_ms")
        for loop in order:
            name = f"pair-{i + 1}-{loop}"
            figure = run_backfill_command(run, name, loop=_option(loop), messages=messages)
            pair["backfill"][loop] = {
                **_brief(figure, "cpu_per_message_ms_start_to_exit"),
                "exit_code": figure["exit_code"],
                "rows_match": figure["rows_match"],
            }
        for kind in ("floor", "backfill"):
            pair[f"{kind}_ratio"] = ratio(pair[kind]["uvloop"]["rate"], pair[kind]["asyncio"]["rate"])
        pairs.append(pair)
        run.progress(
            f"uvloop pair {i + 1}/{run.o.uvloop_pairs}: uvloop / asyncio: floor {pair['floor_ratio']}, "
            f"backfill {pair['backfill_ratio']}"
        )
    run.figures["uvloop"] = {**summarize(pairs), "messages": messages}


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": pairs}
    for kind in ("floor", "backfill"):
        rates = {loop: [p[kind][loop]["rate"] for p in pairs] for loop in LOOPS}
        ratios = [p[f"{kind}_ratio"] for p in pairs]
        out[kind] = {
            **{f"{loop}_rates": rates[loop] for loop in LOOPS},
            **{f"{loop}_median": _median(rates[loop]) for loop in LOOPS},
            "ratios": ratios,
            "median_ratio": _median(ratios, 4),
        }
    gain = out["backfill"]["median_ratio"]
    out["default_gain"] = DEFAULT_GAIN
    out["uvloop_pays"] = None if gain is None else gain >= DEFAULT_GAIN
    out["what"] = (
        "pairs of runs on asyncio's loop and on uvloop (faust -L uvloop), the order alternating: the floor "
        "with Faust's defaults on both, then the backfill command on both; ratios uvloop / asyncio"
    )
    return out


def _option(loop: str) -> str | None:
    return None if loop == "asyncio" else loop


def _brief(figure: dict[str, Any], cpu_key: str) -> dict[str, Any]:
    return {
        "rate": figure.get("rate"),
        "start_to_first_message_seconds": figure.get("start_to_first_message_seconds"),
        "cpu_per_message_ms": figure.get(cpu_key),
        "loop_seen": figure.get("loop_seen"),
    }


def _median(values: list[float | None], digits: int = 0) -> float | None:
    present = [float(v) for v in values if v is not None]
    if len(present) != len(values) or not present:
        return None
    median = statistics.median(present)
    return round(median, digits) if digits else round(median)
