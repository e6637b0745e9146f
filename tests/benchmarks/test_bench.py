"""The benchmark still runs: ``benchmarks/run`` at a tiny size, end to end, on its own fresh services.

Not a timed test: no figure is asserted, only that every phase ran, the JSON file has every key, and the
pipeline's rows equal the SQL peer's after the backfill.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from benchmarks import before_after, report

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
    "backfill", "floor", "ceiling", "sql_peer", "changelog", "live", "memory", "restore", "backfill_4x"
}  # fmt: skip
PHASES = {
    "data", "ceiling", "sql_peer", "floor", "backfill_1x", "floor_after", "live", "restore", "backfill_4x"
}  # fmt: skip
TARGETS = {
    "end-to-end backfill rate",
    "end-to-end backfill / floor",
    "changelog records per raw message",
    "cold restore of the 1x state",
    "live latency p99",
    "peak RSS 4x / 1x",
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
    assert all(t["pass"] in (True, False) for t in results["targets"]), results["targets"]
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
