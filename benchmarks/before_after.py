"""``--before``: an earlier run's key figures, from a results file of any version, beside this run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import profile
from benchmarks.results import ratio
from benchmarks.source import shown


def profile_share(prof: dict[str, Any] | None) -> dict[str, float] | None:
    """A profile summary's share by owner: as written, else derived (files from before it was written)."""
    if not isinstance(prof, dict) or not prof.get("self_by_group"):
        return None
    written = prof.get("share")
    return written if isinstance(written, dict) else profile.share(prof)


def key_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The figures a before/after comparison shows, from a results file of any version (missing: None)."""
    f = results.get("figures") or {}
    bf, fl, cl = f.get("backfill") or {}, f.get("floor") or {}, f.get("changelog") or {}
    rs, lv, mem = f.get("restore") or {}, f.get("live") or {}, f.get("memory") or {}
    fd, bc = f.get("floor_defaults") or {}, f.get("backfill_command") or {}
    prof = results.get("profile") or {}
    return {
        "backfill_rate": bf.get("rate"),
        "floor_rate": fl.get("rate"),
        "backfill_to_floor": (results.get("ratios") or {}).get("backfill_to_floor"),
        "floor_defaults_rate": fd.get("rate"),
        "backfill_to_floor_defaults": (results.get("ratios") or {}).get("backfill_to_floor_defaults"),
        "backfill_cpu_per_message_ms": bf.get("cpu_per_message_ms"),
        "command_start_to_first_message_seconds": bc.get("start_to_first_message_seconds"),
        "command_last_write_to_exit_seconds": bc.get("last_write_to_exit_seconds"),
        "changelog_records_per_raw_message": cl.get("records_per_raw_message"),
        "changelog_records_after_backfill": cl.get("records"),
        # Counted at the restore in every version (after the live phase too): the one count old files have.
        "changelog_records_at_restore": rs.get("changelog_records"),
        "changelog_records_by_topic": cl.get("records_by_topic") or rs.get("changelog_records_by_topic"),
        "restore_seconds": rs.get("seconds"),
        "restore_complete": rs.get("state_complete"),
        "live_p99_seconds": lv.get("p99_seconds"),
        "hwm_1x_kib": mem.get("hwm_1x_kib"),
        "hwm_4x_kib": mem.get("hwm_4x_kib"),
        "hwm_ratio_4x_to_1x": mem.get("hwm_ratio_4x_to_1x"),
        "share_1x": profile_share(prof.get("backfill_1x")),
        "share_4x": profile_share(prof.get("backfill_4x")),
    }


def numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def before_figures(earlier: dict[str, Any], path: Path | None, after: dict[str, Any]) -> dict[str, Any]:
    """``before`` of a results file: an earlier run's key figures, what it ran, and after / before."""
    bench, machine, size = (
        earlier.get("benchmark") or {},
        earlier.get("machine") or {},
        earlier.get("size") or {},
    )
    then, now = key_figures(earlier), key_figures(after)
    ratios: dict[str, Any] = {}
    for key, value in then.items():
        if isinstance(value, dict) and isinstance(now.get(key), dict):
            ratios[key] = {k: ratio(now[key].get(k), v) for k, v in value.items() if numeric(v)}
        elif numeric(value) and numeric(now.get(key)):
            ratios[key] = ratio(now[key], value)
    return {
        "file": None if path is None else str(shown(path)),
        "started": bench.get("started"),
        "git_commit": machine.get("git_commit"),
        "git_dirty": machine.get("git_dirty"),
        "solar_agents_source": bench.get("solar_agents_source"),
        "size": {k: size.get(k) for k in ("regions", "days", "raw_messages_1x")},
        "figures": then,
        "after_to_before": ratios,
    }
