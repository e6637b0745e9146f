"""The benchmark still runs: ``benchmarks/run`` at a tiny size, end to end, on its own fresh services, and
``--regions-scaling`` at two tiny sizes.

Not a timed test: no figure is asserted, only that every phase ran, the JSON file has every key, and the
pipeline's rows equal the SQL peer's after the backfill (at every size of the scaling run).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import before_after, report
from benchmarks.phases import scaling, uvloop
from benchmarks.worker import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]

# Kept in step with benchmarks/results.py (RESULT_KEYS, FIGURE_KEYS); the test reads the file as users do.
RESULT_KEYS = {
    "benchmark",
    "size",
    "machine",
    "settings",
    "figures",
    "ratios",
    "targets",
    "compare",
    "profile",
    "phases_seconds",
    "errors",
    "notes",
}
FIGURE_KEYS = {
    "backfill", "floor", "floor_defaults", "ceiling", "sql_peer", "changelog", "live", "memory", "restore",
    "backfill_command", "backfill_4x", "uvloop",
}  # fmt: skip
PHASES = {
    "data", "ceiling", "sql_peer", "floor", "floor_defaults", "backfill_1x", "floor_defaults_after",
    "floor_after", "live", "restore", "backfill_command", "backfill_4x",
}  # fmt: skip
TARGETS = {
    "end-to-end backfill rate",
    "end-to-end backfill / floor",
    "changelog records per raw message",
    "cold restore of the 1x state",
    "live latency p99",
    "peak RSS 4x / 1x",
    "end-to-end backfill / floor with Faust's defaults",
    "CPU per raw message, worker and helpers / floor with Faust's defaults",
    "first raw message, backfill command after floor with Faust's defaults",
    "backfill command: last write to exit",
}
# The last full run, committed: --before must read it whatever version of the format it has.
COMMITTED = ROOT / "benchmarks" / "results.json"


def test_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "benchmarks",
        "--regions", "2", "--days", "3", "--live-seconds", "2", "--repeats", "1", "--no-profile",
        "--workdir", str(tmp_path / "run"), "--output", str(output), "--before", str(COMMITTED),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    log = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert output.exists(), log
    results = json.loads(output.read_text())

    assert set(results) >= RESULT_KEYS, log
    assert results["errors"] == {}, log
    assert set(results["phases_seconds"]) == PHASES, log
    figures = results["figures"]
    assert set(figures) >= FIGURE_KEYS, log
    assert results["size"]["regions"] == 2 and results["size"]["days"] == 3
    assert results["size"]["raw_messages_1x"] > 0 and results["size"]["feature_rows_1x"] > 0

    # Every figure was measured (whatever its value).
    assert figures["backfill"]["rate"] > 0
    assert figures["floor"]["rate"] > 0 and figures["floor"]["messages"] == results["size"]["raw_messages_1x"]
    assert results["ratios"]["backfill_to_floor"] > 0
    # The floor runs on both sides of the backfill; its rate is their mean.
    first, then = figures["floor"]["rates"]
    assert abs(figures["floor"]["rate"] - (first + then) / 2) <= 1
    assert figures["floor"]["runs"]["after_backfill"]["messages"] == results["size"]["raw_messages_1x"]
    assert figures["backfill"]["profiled"] is False  # the timed run is never profiled
    # Issue 24: the floor with Faust's defaults, bracketing the backfill too; CPU and start figures.
    defaults = figures["floor_defaults"]
    assert defaults["rate"] > 0 and len(defaults["rates"]) == 2
    assert defaults["runs"]["before_backfill"]["consumer_settings"] == "Faust defaults"
    # (At this size the floor's CPU can round to 0 ticks: its CPU ratio is then n/a.)
    assert defaults["start_to_first_message_seconds"] > 0 and defaults["cpu_per_message_ms"] >= 0
    assert figures["backfill"]["cpu_per_message_ms"] > 0
    assert figures["backfill"]["start_to_first_message_seconds"] > 0
    assert results["ratios"]["backfill_to_floor_defaults"] > 0
    assert "cpu_per_message_to_floor_defaults" in results["ratios"]
    assert results["ratios"]["first_message_after_floor_defaults_seconds"] is not None
    # The backfill command exits by itself, everything written and committed.
    command = figures["backfill_command"]
    assert command["exit_code"] == 0 and command["rows_match"] is True, command
    assert command["committed_all"] is True, command
    assert command["last_write_to_exit_seconds"] > 0 and command["rate"] > 0
    assert command["start_to_first_message_seconds"] > 0 and command["loop_seen"] == "asyncio"
    assert figures["changelog"]["records"] > 0 and figures["changelog"]["records_per_raw_message"] > 0
    assert set(figures["changelog"]["max_value_bytes_by_topic"]) == set(
        figures["changelog"]["records_by_topic"]
    )
    assert figures["ceiling"]["rate"] > 0
    assert figures["sql_peer"]["rate"] > 0
    assert figures["live"]["visible"] > 0 and figures["live"]["p99_seconds"] is not None
    assert figures["memory"]["hwm_1x_kib"] > 0 and figures["memory"]["hwm_4x_kib"] > 0
    assert figures["restore"]["changelog_records"] > 0 and "rate" in figures["restore"]
    assert figures["backfill_4x"]["rate"] > 0
    assert {t["name"] for t in results["targets"]} == TARGETS
    # Every target has a verdict; only the CPU ratio may not, when the floor's CPU rounded to 0 ticks.
    undecided = {t["name"] for t in results["targets"] if t["pass"] not in (True, False)}
    assert undecided <= {"CPU per raw message, worker and helpers / floor with Faust's defaults"}, undecided
    assert results["machine"]["cores"] and results["machine"]["python"]

    # The comparison is honest: the SQL peer computed the same rows as the pipeline.
    compare = results["compare"]["backfill_1x"]
    assert compare["match"] is True, compare
    assert compare["pipeline_rows"] == compare["peer_rows"] == results["size"]["feature_rows_1x"]
    assert compare["missing"] == compare["extra"] == compare["differing"] == 0

    # The earlier run is embedded, with its commit, and printed beside this one.
    before = results["before"]
    assert (
        before["figures"]["backfill_rate"] == json.loads(COMMITTED.read_text())["figures"]["backfill"]["rate"]
    )
    assert before["git_commit"] and "after_to_before" in before
    assert "before:" in result.stdout and "after/before" in result.stdout

    # The table printed is the one in the file.
    assert "end-to-end backfill 1x" in result.stdout and str(output) in result.stdout
    assert "bare-Faust floor" in result.stdout
    assert "Faust's default consumer settings" in result.stdout and "last write to exit" in result.stdout


def test_regions_scaling_runs_at_tiny_sizes(tmp_path: Path) -> None:
    output = tmp_path / "results-scaling.json"
    command = [
        sys.executable, "-m", "benchmarks", "--regions-scaling",
        "--scaling-regions", "2,12", "--scaling-messages", "480", "--scaling-rounds", "2",
        "--workdir", str(tmp_path / "run"), "--output", str(output),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    log = f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert output.exists(), log
    results = json.loads(output.read_text())
    assert results["errors"] == {}, log
    assert results["benchmark"]["kind"] == "regions_scaling"
    assert set(results["phases_seconds"]) == {"regions_scaling"}
    scaling = results["figures"]["scaling"]
    # 2 regions x 120 hours and 12 regions x 20 hours, in two rounds; the base ran first in each and last.
    assert [(s["regions"], s["hours"], s["rounds"]) for s in scaling["sizes"]] == [(2, 120, 2), (12, 20, 2)]
    assert [r["label"] for r in scaling["runs"]] == ["sc2", "sc12", "sc2-2", "sc12-2", "sc2-again"]
    assert (
        len(scaling["base"]["rates"]) == 3 and len(scaling["sizes"][1]["cpu_per_message_to_base_rounds"]) == 2
    )
    for size in scaling["sizes"]:
        assert size["rows_match"] is True and size["rows_differing"] == 0, size
        assert size["rate"] > 0 and size["cpu_per_message_ms"] > 0 and size["hwm_kib"] > 0
        assert size["changelog_records_per_raw_message"] > 0
    assert scaling["sizes"][1]["rate_to_base"] > 0 and scaling["sizes"][1]["cpu_per_message_to_base"] > 0
    assert all(c["match"] for c in results["compare"].values()), results["compare"]
    names = {t["name"] for t in results["targets"]}
    assert "backfill at 12 regions / at 2" in names and "rows = SQL peer at 2 regions" in names
    # The table printed is the one in the file, and --render prints it again.
    assert "regions scaling" in result.stdout and str(output) in result.stdout
    assert "regions scaling" in report.render(results)


def test_regions_scaling_ratios_are_medians_of_rounds_against_the_base_around_each() -> None:
    """--regions-scaling's arithmetic without running it: a round's ratio is to the mean of the base runs
    before and after it, the ratio reported is the median of the rounds', the changelog the worst round's."""

    def run(
        regions: int, number: int, rate: float, cpu: float, changelog: float, repeat: bool = False
    ) -> dict:
        return {
            "label": f"sc{regions}-{number}", "regions": regions, "hours": 1, "messages": 1000,
            "round": number, "repeat": repeat, "rate": rate, "cpu_per_message_ms": cpu, "hwm_kib": 100,
            "helpers_hwm_kib": 200, "changelog_records_per_raw_message": changelog, "rows_match": True,
            "rows_differing": 0, "complete": True, "start_to_first_message_seconds": 1.0,
        }  # fmt: skip

    runs = [
        run(16, 1, 100, 1.0, 0.01), run(500, 1, 90, 1.1, 0.03),
        run(16, 2, 120, 1.0, 0.02), run(500, 2, 55, 1.5, 0.04),
        run(16, 3, 100, 2.0, 0.01), run(500, 3, 99, 1.2, 0.02),
        run(16, 4, 100, 2.0, 0.01, repeat=True),
    ]  # fmt: skip
    summary = scaling.summarize(runs)
    size = summary["sizes"][1]
    # Round 1 against (100 + 120) / 2, round 2 against (120 + 100) / 2, round 3 against 100.
    assert size["rate_to_base_rounds"] == [round(90 / 110, 4), 0.5, 0.99]
    assert size["rate_to_base"] == round(90 / 110, 4) and size["rate"] == 90
    assert size["cpu_per_message_to_base_rounds"] == [1.1, 1.0, 0.6]
    assert size["cpu_per_message_to_base"] == 1.0
    assert size["changelog_records_per_raw_message"] == 0.04 and size["rows_differing"] == 0
    assert summary["sizes"][0]["rounds"] == 3 and summary["base"]["rates"] == [100, 120, 100, 100]
    machine = json.loads((ROOT / "benchmarks" / "results-scaling.json").read_text())["machine"]
    text = report.render_scaling({"figures": {"scaling": summary}, "machine": machine, "size": {}})
    assert "per round: rate / base 0.818, 0.500, 0.990; CPU / base 1.100, 1.000, 0.600" in text


def test_uvloop_pairs_summary_and_worker_command_line() -> None:
    """--uvloop-pairs' arithmetic and table without running them (CI runs no pairs), and the command lines
    that select the loop and the backfill command."""
    pairs = [
        {
            "order": list(order),
            "floor": {"asyncio": {"rate": fa}, "uvloop": {"rate": fu}},
            "backfill": {"asyncio": {"rate": ba}, "uvloop": {"rate": bu}},
            "floor_ratio": round(fu / fa, 4),
            "backfill_ratio": round(bu / ba, 4),
        }
        for order, fa, fu, ba, bu in (
            (uvloop.LOOPS, 100, 110, 100, 104),
            (uvloop.LOOPS[::-1], 100, 90, 100, 110),
            (uvloop.LOOPS, 100, 120, 100, 106),
        )
    ]
    summary = uvloop.summarize(pairs)
    assert summary["backfill"]["median_ratio"] == 1.06 and summary["uvloop_pays"] is True
    assert summary["floor"]["asyncio_median"] == 100 and summary["floor"]["uvloop_median"] == 110
    assert "uvloop pays" in "\n".join(report.render_uvloop(summary))
    worker = WorkerProcess({}, Path("unused.log"), command="backfill", loop="uvloop")
    argv = worker.argv()
    assert argv[1:] == ["-L", "uvloop", "-A", "solar_agents", "backfill"]  # -L before the command
    assert WorkerProcess({}, Path("unused.log")).argv()[1:] == ["-A", "solar_agents", "worker", "-l", "info"]


def test_render_reads_the_committed_results_and_compares_them() -> None:
    """--render and --before on a file of any format: missing figures are n/a, shares are derived."""
    committed = json.loads(COMMITTED.read_text())
    text = report.render(committed)
    assert "end-to-end backfill 1x" in text and "bare-Faust floor" in text
    # Each of the file's own targets is shown once, with its verdict, whatever its name.
    verdicts = re.findall(r"(?:PASS|MISS|n/a)[^\n]*  \((?:>=|<=) ", text)
    assert len(verdicts) == len(committed["targets"]), text
    figures = before_after.key_figures(committed)
    assert figures["backfill_rate"] == committed["figures"]["backfill"]["rate"]
    for label in ("1x", "4x"):
        share = figures[f"share_{label}"]
        if committed["profile"].get(f"backfill_{label}"):
            assert set(share) == {"ours", "faust", "aiokafka", "asyncio", "other"}
            assert abs(sum(share.values()) - 100.0) < 0.5
    # A run compared with itself: every ratio is 1.
    before = before_after.before_figures(committed, COMMITTED, committed)
    assert before["after_to_before"]["backfill_rate"] == 1.0
    assert "after/before" in report.render({**committed, "before": before})
