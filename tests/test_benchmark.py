"""The benchmark still runs: ``benchmarks/run`` at a tiny size, end to end, on its own fresh services.

Not a timed test: no figure is asserted, only that every phase ran, the JSON file has every key, and the
pipeline's rows equal the SQL peer's after the backfill.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Kept in step with benchmarks/bench.py (RESULT_KEYS, FIGURE_KEYS); the test reads the file as a user would.
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
FIGURE_KEYS = {"backfill", "ceiling", "sql_peer", "live", "memory", "restore", "backfill_4x"}
PHASES = {"data", "ceiling", "sql_peer", "backfill_1x", "live", "restore", "backfill_4x"}


def test_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "benchmarks",
        "--regions", "2", "--days", "3", "--live-seconds", "2", "--repeats", "1", "--no-profile",
        "--workdir", str(tmp_path / "run"), "--output", str(output),
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
    assert figures["ceiling"]["rate"] > 0
    assert figures["sql_peer"]["rate"] > 0
    assert figures["live"]["visible"] > 0 and figures["live"]["p99_seconds"] is not None
    assert figures["memory"]["hwm_1x_kib"] > 0 and figures["memory"]["hwm_4x_kib"] > 0
    assert figures["restore"]["changelog_records"] > 0 and "rate" in figures["restore"]
    assert figures["backfill_4x"]["rate"] > 0
    assert {t["name"] for t in results["targets"]} == {
        "end-to-end backfill rate",
        "live latency p99",
        "peak RSS 4x / 1x",
        "changelog restore rate",
    }
    assert all(t["pass"] in (True, False) for t in results["targets"]), results["targets"]
    assert results["machine"]["cores"] and results["machine"]["python"]

    # The comparison is honest: the SQL peer computed the same rows as the pipeline.
    compare = results["compare"]["backfill_1x"]
    assert compare["match"] is True, compare
    assert compare["pipeline_rows"] == compare["peer_rows"] == results["size"]["feature_rows_1x"]
    assert compare["missing"] == compare["extra"] == compare["differing"] == 0

    # The table printed is the one in the file.
    assert "end-to-end backfill 1x" in result.stdout and str(output) in result.stdout
