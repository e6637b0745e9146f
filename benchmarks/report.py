"""The table a run prints (and ``--render`` prints again): figures, ratios and targets, the machine above
them, the checks below them, and the before | after | after/before table of ``--before``."""

from __future__ import annotations

from typing import Any

from benchmarks import profile
from benchmarks.before_after import key_figures, numeric, profile_share
from benchmarks.results import ratio


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _u(value: float | None, unit: str, digits: int = 0) -> str:
    """A figure with its unit, or just n/a."""
    return "n/a" if value is None else f"{_n(value, digits)} {unit}"


def _mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.0f} MiB"


def _share_text(share: dict[str, float] | None) -> str:
    if not share:
        return "n/a"
    return ", ".join(f"{k} {share.get(k, 0.0)}" for k in profile.SHARE_KEYS)


def render_before(results: dict[str, Any]) -> list[str]:
    """The before | after | after/before table of a results file that has ``before``."""
    before = results["before"]
    then, now = before.get("figures") or {}, key_figures(results)
    now_bench, now_machine = results.get("benchmark") or {}, results.get("machine") or {}

    def commit(sha: str | None, dirty: bool | None) -> str:
        return "n/a" if not sha else sha[:12] + (" (dirty)" if dirty else "")

    def ratio_text(a: Any, b: Any) -> str:
        return _n(ratio(a, b), 3) if numeric(a) and numeric(b) else ""

    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, key: str, show: Any) -> None:
        rows.append((label, show(then.get(key)), show(now.get(key)), ratio_text(now.get(key), then.get(key))))

    add("end-to-end backfill 1x, msg/s", "backfill_rate", _n)
    add("bare-Faust floor, msg/s", "floor_rate", _n)
    add("floor with Faust's defaults, msg/s", "floor_defaults_rate", _n)
    add("backfill / floor with Faust's defaults", "backfill_to_floor_defaults", lambda v: _n(v, 3))
    add("CPU per raw message, worker and helpers, ms", "backfill_cpu_per_message_ms", lambda v: _n(v, 4))
    add("backfill command: start to first message, s", "command_start_to_first_message_seconds",
        lambda v: _n(v, 2))  # fmt: skip
    add("backfill command: last write to exit, s", "command_last_write_to_exit_seconds", lambda v: _n(v, 2))
    add("changelog records per raw message", "changelog_records_per_raw_message", lambda v: _n(v, 4))
    add("changelog records at the restore", "changelog_records_at_restore", _n)
    add("cold restore of the 1x state, s", "restore_seconds", lambda v: _n(v, 2))
    add("live latency p99, s", "live_p99_seconds", lambda v: _n(v, 3))
    add("peak RSS 1x", "hwm_1x_kib", _mib)
    add("peak RSS 4x", "hwm_4x_kib", _mib)
    add("peak RSS 4x / 1x", "hwm_ratio_4x_to_1x", lambda v: _n(v, 3))
    for label in ("1x", "4x"):
        a, b = then.get(f"share_{label}") or {}, now.get(f"share_{label}") or {}
        if not a and not b:
            continue
        for k in profile.SHARE_KEYS:
            rows.append(
                (
                    f"profile {label} share %: {k}",
                    _n(a.get(k), 1),
                    _n(b.get(k), 1),
                    ratio_text(b.get(k), a.get(k)),
                )
            )
    head = ("figure", "before", "after", "after/before")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(4)]
    lines = [
        "",
        f"before: {before.get('file') or 'n/a'}, run {before.get('started') or 'n/a'}, commit "
        f"{commit(before.get('git_commit'), before.get('git_dirty'))}, solar_agents "
        f"{before.get('solar_agents_source') or 'n/a'}; after: run {now_bench.get('started', 'n/a')}, commit "
        f"{commit(now_machine.get('git_commit'), now_machine.get('git_dirty'))}, solar_agents "
        f"{now_bench.get('solar_agents_source') or 'n/a'}",
    ]
    then_size = before.get("size") or {}
    now_size = results.get("size") or {}
    if any(then_size.get(k) != now_size.get(k) for k in ("regions", "days")):
        lines.append(
            f"  (different sizes: before {then_size.get('regions')} x {then_size.get('days')} days, "
            f"after {now_size.get('regions')} x {now_size.get('days')} days)"
        )
    lines.append(
        f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:>{widths[2]}}  {head[3]:>{widths[3]}}"
    )
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d:>{widths[3]}}".rstrip()
        for a, b, c, d in rows
    ]
    return lines


def _machine_lines(m: dict[str, Any]) -> list[str]:
    return [
        f"machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}; "
        f"PostgreSQL {m['postgresql']}; {m['broker']}",
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)
        + f", librdkafka {m['librdkafka']}",
    ]


def _verdict_text(t: dict[str, Any]) -> str:
    mark = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
    if t.get("why"):
        mark += f", {t['why']}"
    limit = _n(t["target"], 2 if 0 < t["target"] < 100 else 0)
    return f"{mark}  ({t['op']} {limit} {t['unit']})".replace(" )", ")")


def render_scaling(results: dict[str, Any]) -> str:
    """The table of a ``--regions-scaling`` run: one row per size, its ratios to the base, the targets."""
    scaling = (results.get("figures") or {}).get("scaling") or {}
    base, sizes = scaling.get("base") or {}, scaling.get("sizes") or []
    head = (
        "regions", "hours", "raw msgs", "msg/s", "/ base", "CPU ms/msg", "/ base", "changelog/msg",
        "peak RSS", "/ base", "helpers RSS", "first msg", "rows = peer",
    )  # fmt: skip
    rows = [
        (
            _n(z.get("regions")), _n(z.get("hours")), _n(z.get("messages")), _n(z.get("rate")),
            _n(z.get("rate_to_base"), 3), _n(z.get("cpu_per_message_ms"), 4),
            _n(z.get("cpu_per_message_to_base"), 3), _n(z.get("changelog_records_per_raw_message"), 4),
            _mib(z.get("hwm_kib")), _n(z.get("hwm_to_base"), 3), _mib(z.get("helpers_hwm_kib")),
            _u(z.get("start_to_first_message_seconds"), "s", 2),
            {True: "MATCH", False: "MISMATCH", None: "n/a"}[z.get("rows_match")],
        )
        for z in sizes
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    size = results.get("size") or {}
    lines = [
        f"solar_agents benchmark, regions scaling: {', '.join(_n(r) for r in size.get('regions') or [])} "
        f"regions, about {_n(size.get('raw_messages_each_about'))} raw messages each "
        f"({(results.get('benchmark') or {}).get('started', 'n/a')})",
        *_machine_lines(results["machine"]),
        "",
        "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
        *("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows),
        "",
        f"base: {_n(base.get('regions'))} regions, first in each round and once more at the end: "
        + " / ".join(_u(v, "msg/s") for v in base.get("rates") or [])
        + "; a round's ratios are to the mean of the base runs before and after it, each ratio above is the "
        f"median of the rounds' (base {_u(base.get('rate'), 'msg/s')}, "
        f"{_u(base.get('cpu_per_message_ms'), 'ms CPU per message', 4)}); changelog: the worst round's",
        *(
            f"  {_n(z.get('regions'))} regions, per round: rate / base "
            + ", ".join(_n(v, 3) for v in z.get("rate_to_base_rounds") or [])
            + "; CPU / base "
            + ", ".join(_n(v, 3) for v in z.get("cpu_per_message_to_base_rounds") or [])
            for z in sizes
            if z.get("regions") != base.get("regions")
        ),
    ]
    targets = results.get("targets") or []
    if targets:
        width = max(len(t["name"]) for t in targets)
        lines.append("")
        lines += [
            f"{t['name']:<{width}}  {_n(t['value'], 3):>8}  {_verdict_text(t)}".rstrip() for t in targets
        ]
    for run in scaling.get("runs") or []:
        c = run.get("cpu_seconds") or {}
        lines.append(
            f"run {run.get('label')}: {_n(run.get('messages'))} messages in {_n(run.get('seconds'), 1)} "
            f"s; CPU worker {c.get('worker', 'n/a')} s, helpers {c.get('helpers', 'n/a')} s, broker "
            f"{c.get('broker', 'n/a')} s, PostgreSQL {c.get('postgres', 'n/a')} s, other "
            f"{c.get('other', 'n/a')} s; changelog {_n(run.get('changelog_records'))} records"
        )
    if results.get("errors"):
        lines.append("errors: " + "; ".join(f"{k}: {v[:300]}" for k, v in results["errors"].items()))
    lines += [f"note: {note}" for note in results.get("notes") or []]
    return "\n".join(lines)


def render_uvloop(uv: dict[str, Any]) -> list[str]:
    """The lines of ``--uvloop-pairs``: each pair, the medians and the decision rule."""
    if not uv.get("pairs"):
        return []
    lines = [f"uvloop pairs ({uv.get('what', '')}):"]
    for i, pair in enumerate(uv["pairs"], 1):
        parts = []
        for kind in ("floor", "backfill"):
            rates = pair.get(kind) or {}
            parts.append(
                f"{kind} asyncio {_n((rates.get('asyncio') or {}).get('rate'))} / uvloop "
                f"{_n((rates.get('uvloop') or {}).get('rate'))} msg/s = {_n(pair.get(f'{kind}_ratio'), 3)}"
            )
        lines.append(f"  pair {i} ({' first, '.join(pair.get('order', []))} second): " + "; ".join(parts))
    for kind in ("floor", "backfill"):
        k = uv.get(kind) or {}
        lines.append(
            f"  {kind}: median asyncio {_u(k.get('asyncio_median'), 'msg/s')}, uvloop "
            f"{_u(k.get('uvloop_median'), 'msg/s')}; median ratio uvloop / asyncio "
            f"{_n(k.get('median_ratio'), 3)}"
        )
    pays = {True: "uvloop pays: make it the default", False: "below: keep asyncio's loop", None: "n/a"}
    lines.append(f"  backfill gain at or above {uv.get('default_gain')}: {pays[uv.get('uvloop_pays')]}")
    return lines


def render(results: dict[str, Any]) -> str:
    """The table of figures, ratios and targets, with the machine above it and the checks below it.

    Reads files of earlier versions too: a figure they lack shows as n/a, and their own targets are shown.
    A ``--regions-scaling`` file has a table of its own (``render_scaling``).
    """
    if (results.get("benchmark") or {}).get("kind") == "regions_scaling":
        return render_scaling(results)
    f, r, size, m = results["figures"], results.get("ratios") or {}, results["size"], results["machine"]
    bf, ce, sp, lv = (f.get(k) or {} for k in ("backfill", "ceiling", "sql_peer", "live"))
    mem, rs, b4 = (f.get(k) or {} for k in ("memory", "restore", "backfill_4x"))
    fl, cl = f.get("floor") or {}, f.get("changelog") or {}
    fd, bc, uv = f.get("floor_defaults") or {}, f.get("backfill_command") or {}, f.get("uvloop") or {}
    targets = {t["name"]: t for t in results.get("targets") or []}
    shown_targets: set[str] = set()

    def verdict(*names: str) -> str:
        """The first of ``names`` among the file's targets (names of earlier versions included)."""
        for name in names:
            t = targets.get(name)
            if t is None:
                continue
            shown_targets.add(name)
            mark = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
            if t.get("why"):
                mark += f", {t['why']}"
            limit = _n(t["target"], 2 if t["target"] < 100 else 0)
            return f"{mark}  ({t['op']} {limit} {t['unit']})".replace(" )", ")")
        return ""

    four_x = _u(b4.get("rate"), "msg/s")
    if b4.get("complete") is False:
        four_x = f"unfinished, ~{_n(b4.get('rate_estimate'))} msg/s"
    rows: list[tuple[str, str, str]] = [
        ("end-to-end backfill 1x, first read to last row committed",
         _u(bf.get("rate"), "msg/s"), verdict("end-to-end backfill rate")),
        ("bare-Faust floor, noack_take + ack, Ready to last ack",
         _u(fl.get("rate"), "msg/s"), ""),
        ("  floor runs right before / right after the backfill",
         " / ".join(_u(v, "msg/s") for v in fl.get("rates") or []) or "n/a", ""),
        ("  ratio end-to-end / floor", _n(r.get("backfill_to_floor"), 3),
         verdict("end-to-end backfill / floor")),
        ("bare-Faust floor, Faust's default consumer settings",
         _u(fd.get("rate"), "msg/s"), ""),
        ("  floor runs right before / right after the backfill",
         " / ".join(_u(v, "msg/s") for v in fd.get("rates") or []) or "n/a", ""),
        ("  ratio end-to-end / floor with Faust's defaults", _n(r.get("backfill_to_floor_defaults"), 3),
         verdict("end-to-end backfill / floor with Faust's defaults")),
        ("CPU per raw message, 1x backfill: worker and helpers",
         _u(bf.get("cpu_per_message_ms"), "ms", 4), ""),
        ("CPU per raw message, floor with Faust's defaults",
         _u(fd.get("cpu_per_message_ms"), "ms", 4), ""),
        ("  ratio backfill / floor", _n(r.get("cpu_per_message_to_floor_defaults"), 3),
         verdict("CPU per raw message, worker and helpers / floor with Faust's defaults")),
        ("start to first raw message: backfill command / floor (defaults)",
         f"{_u(bc.get('start_to_first_message_seconds'), 's', 2)} / "
         f"{_u(fd.get('start_to_first_message_seconds'), 's', 2)}", ""),
        ("  backfill command later by", _u(r.get("first_message_after_floor_defaults_seconds"), "s", 2),
         verdict("first raw message, backfill command after floor with Faust's defaults")),
        (f"backfill command: last write to exit (exit code {bc.get('exit_code', 'n/a')})",
         _u(bc.get("last_write_to_exit_seconds"), "s", 2), verdict("backfill command: last write to exit")),
        ("broker raw read ceiling, confluent-kafka, median",
         _u(ce.get("rate"), "msg/s"), ""),
        ("SQL peer, PostgreSQL window functions, median",
         _u(sp.get("rate"), "msg/s"), ""),
        ("  ratio end-to-end / ceiling", _n(r.get("backfill_to_ceiling"), 4), ""),
        ("  ratio floor / ceiling", _n(r.get("floor_to_ceiling"), 4), ""),
        ("  ratio end-to-end / SQL peer", _n(r.get("backfill_to_sql_peer"), 4), ""),
        ("changelog records per raw message, 1x backfill", _n(cl.get("records_per_raw_message"), 4),
         verdict("changelog records per raw message")),
        (f"live latency p50, {_n(lv.get('rate_hours_per_second'))} hours/s",
         _u(lv.get("p50_seconds"), "s", 3), ""),
        ("live latency p99", _u(lv.get("p99_seconds"), "s", 3), verdict("live latency p99")),
        ("worker peak RSS (VmHWM) after 1x history", _mib(mem.get("hwm_1x_kib")), ""),
        ("worker peak RSS (VmHWM) after 4x history", _mib(mem.get("hwm_4x_kib")), ""),
        ("  ratio 4x / 1x", _n(mem.get("hwm_ratio_4x_to_1x"), 3), verdict("peak RSS 4x / 1x")),
        ("helper processes' peak RSS (VmHWM), summed, 1x / 4x",
         f"{_mib(mem.get('helpers_hwm_1x_kib'))} / {_mib(mem.get('helpers_hwm_4x_kib'))}", ""),
        ("  ratio 4x / 1x, worker and helpers", _n(mem.get("hwm_with_helpers_ratio_4x_to_1x"), 3), ""),
        ("cold restore of the 1x state (DATA_DIR deleted)",
         _u(rs.get("seconds"), "s", 2), verdict("cold restore of the 1x state")),
        ("  changelog restore rate", _u(rs.get("rate"), "rec/s"), verdict("changelog restore rate")),
        ("end-to-end backfill 4x", four_x, ""),
    ]  # fmt: skip
    # Targets of the file that no row above carries (a version's own): listed, not lost.
    rows += [
        (f"target: {name}", _n(t.get("value"), 3), verdict(name))
        for name, t in targets.items()
        if name not in shown_targets
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    unfinished = ""
    if b4.get("complete") is False:
        unfinished = f" (unfinished: {_n(b4.get('rows'))} of {_n(b4.get('expected_rows'))} rows)"
    lines = [
        f"solar_agents benchmark: {size['regions']} regions x {size['days']} days = "
        f"{_n(size['raw_messages_1x'])} raw messages, {_n(size['feature_rows_1x'])} feature rows "
        f"({results['benchmark']['started']})",
        *_machine_lines(m),
        "",
        f"{'figure':<{widths[0]}}  {'value':>{widths[1]}}  target",
        f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * max(6, widths[2])}",
    ]
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.append("")
    lines.append(
        f"backfill 1x: {_n(bf.get('messages'))} messages in {_n(bf.get('seconds'), 1)} s; "
        f"4x: {_n(b4.get('messages'))} in {_n(b4.get('seconds'), 1)} s{unfinished}; "
        f"SQL peer query {_n(sp.get('query_seconds_median'), 2)} s (+ COPY {_n(sp.get('load_seconds'), 2)} s)"
    )
    if fl:
        fc = fl.get("cpu_seconds") or {}
        lines.append(
            f"floor: {_n(fl.get('messages'))} messages in {_n(fl.get('seconds'), 2)} s, batches of "
            f"{fl.get('batch_size')} within {fl.get('batch_within_seconds')} s, first batch "
            f"{_n(fl.get('first_batch_after_seconds'), 2)} s after Ready, {_n(fl.get('events'))} events; "
            f"CPU: worker {fc.get('worker', 'n/a')} s, broker {fc.get('broker', 'n/a')} s, "
            f"other {fc.get('other', 'n/a')} s"
        )
    if fd:
        fc = fd.get("cpu_seconds") or {}
        lines.append(
            f"floor with Faust's defaults: {_n(fd.get('messages'))} messages in {_n(fd.get('seconds'), 2)} "
            f"s, first message {_n(fd.get('start_to_first_message_seconds'), 2)} s after the start (Ready "
            f"{_n(fd.get('start_to_ready_seconds'), 2)} s), {_n(fd.get('events'))} events; CPU: process "
            f"{fc.get('worker', 'n/a')} s, broker {fc.get('broker', 'n/a')} s, other "
            f"{fc.get('other', 'n/a')} s"
        )
    if bc:
        lines.append(
            f"backfill command ({bc.get('command', 'n/a')}): {_u(bc.get('rate'), 'msg/s')}, Ready "
            f"{_n(bc.get('start_to_ready_seconds'), 2)} s and first raw message "
            f"{_n(bc.get('start_to_first_message_seconds'), 2)} s after the start "
            f"({bc.get('first_message_source') or 'n/a'}); last write to backfill_done "
            f"{_n(bc.get('last_write_to_backfill_done_seconds'), 2)} s, to exit "
            f"{_n(bc.get('last_write_to_exit_seconds'), 2)} s; exit code {bc.get('exit_code', 'n/a')}; rows "
            f"{'= SQL peer' if bc.get('rows_match') else 'DIFFER from the SQL peer'}; committed "
            f"{_n(bc.get('committed_messages'))} of {_n(bc.get('messages'))} raw messages; CPU start to exit "
            f"{_u(bc.get('cpu_seconds_start_to_exit'), 's', 1)}"
        )
    if bf.get("start_to_first_message_seconds") is not None:
        lines.append(
            f"1x backfill worker: first raw message {_n(bf.get('start_to_first_message_seconds'), 2)} s "
            f"after its start ({bf.get('first_message_source')}), Ready "
            f"{_n(bf.get('start_to_ready_seconds'), 2)} s"
        )
    lines += render_uvloop(uv)
    if cl:
        sizes = cl.get("max_value_bytes_by_topic") or {}
        per_topic = "; ".join(
            f"{topic}: {_n(n)} records, largest value {_n(sizes.get(topic))} B"
            for topic, n in (cl.get("records_by_topic") or {}).items()
        )
        lines.append(
            f"changelog after the 1x backfill: {_n(cl.get('records'))} records ({per_topic or 'none'})"
        )
    lines.append(
        f"live: {_n(lv.get('hours'))} hours, {lv.get('missing', 'n/a')} not visible "
        f"{_n(lv.get('drain_seconds'))} s after the last produce, p90 {_n(lv.get('p90_seconds'), 3)} s, "
        f"max seen {_n(lv.get('max_seen_seconds'), 3)} s; median by second: {lv.get('p50_by_second', 'n/a')}"
    )
    lines.append(
        f"restore: {_n(rs.get('changelog_records'))} changelog records in {_n(rs.get('seconds'), 2)} s "
        f"(Faust's highwaters cover {_n(rs.get('faust_highwater_records'))}); restored state "
        f"{rs.get('state_hours', 'n/a')} of {rs.get('expected_state_hours', 'n/a')} hours"
    )
    for label, key in (("after backfill", "backfill_1x"), ("after live + restore", "after_live_and_restore")):
        c = (results.get("compare") or {}).get(key) or {}
        if not c:
            lines.append(f"rows = SQL peer {label}: n/a")
            continue
        lines.append(
            f"rows = SQL peer {label}: {'MATCH' if c.get('match') else 'MISMATCH'}, "
            f"{_n(c.get('pipeline_rows'))} vs {_n(c.get('peer_rows'))} rows, {c.get('missing')} missing, "
            f"{c.get('extra')} extra, {c.get('differing')} differ beyond {c.get('tolerance')} "
            f"(max relative difference {c.get('max_relative_difference', 0):.1e})"
        )
    if bf.get("cpu_seconds"):
        c = bf["cpu_seconds"]
        lines.append(
            f"CPU during the 1x backfill ({c['wall']} s wall): worker {c['worker']} s "
            f"({c['worker_core_share']} of a core), its helper processes {c.get('helpers', 0)} s "
            f"({c.get('helpers_core_share', 0)} of a core), broker {c['broker']} s, "
            f"PostgreSQL {c['postgres']} s, other processes {c.get('other', 'n/a')} s"
        )
    if rs.get("cpu_seconds"):
        c = rs["cpu_seconds"]
        lines.append(
            f"CPU during the restore, start to Ready ({c['wall']} s wall): worker {c['worker']} s "
            f"({c['worker_core_share']} of a core), broker {c['broker']} s"
        )
    spied = [k for k in ("backfill", "backfill_4x", "restore") if (f.get(k) or {}).get("profiled")]
    if spied:
        lines.append(
            "py-spy (non-blocking) was attached during: " + ", ".join(k.replace("_", " ") for k in spied)
        )
    for label, prof in (results.get("profile") or {}).items():
        if not isinstance(prof, dict) or not prof.get("samples"):
            continue
        lines.append(
            f"profile of the {label.replace('backfill_', '') + ' backfill' if 'backfill' in label else label}"
            f" ({prof['samples']:,} samples):"
        )
        lines.append(f"  share of non-idle self samples %: {_share_text(profile_share(prof))}")
        groups = ", ".join(f"{g['group']} {g['percent']}" for g in prof["self_by_group"][:8])
        lines.append(f"  self time %, by module: {groups}")
        stages = ", ".join(f"{g['stage']} {g['percent']}" for g in prof.get("by_stage", [])[:5])
        lines.append(f"  time %, by stage: {stages}")
        top = ", ".join(f"{g['function']} {g['percent']}" for g in prof["self_by_function"][:5])
        lines.append(f"  top functions (self %): {top}")
    if results.get("before"):
        lines += render_before(results)
    if results.get("errors"):
        lines.append("errors: " + "; ".join(f"{k}: {v[:300]}" for k, v in results["errors"].items()))
    lines += [f"note: {note}" for note in results.get("notes") or []]
    return "\n".join(lines)
