"""The SQL peer: PostgreSQL computing SPEC's features with window functions, and the row-by-row compare.

Also the database hooks of the benchmark: a statement trigger that logs when the pipeline's writes commit
(the end of a backfill), and a row trigger that NOTIFYs each written row (live latency).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from solar_agents.schema import CREATE_TABLE

RAW_SOLAR = "bench_raw_solar"
RAW_WEATHER = "bench_raw_weather"
WRITES = "bench_writes"
NOTIFY_CHANNEL = "bench_rows"

FLOAT_COLUMNS = (
    "production_mw",
    "temperature_c",
    "cloud_cover_pct",
    "solar_radiation_wm2",
    "latitude",
    "longitude",
    "production_ma_24h",
    "temperature_ma_24h",
    "cloud_cover_ma_24h",
    "production_lag_1h",
    "production_lag_24h",
)
EXACT_COLUMNS = ("hour_of_day", "day_of_week", "is_weekend")
TOLERANCE = 1e-9

# SPEC, in SQL. Hours: the nearest UTC hour (half past rounds up); per (region, hour) the nearest record, then
# the later offset, then the greater partition. Windows count clock hours: RANGE over a timestamptz, not ROWS;
# lags join on ts - interval, not LAG(), which would count records.
FEATURES_SQL = """
INSERT INTO {peer}
WITH s AS (
    SELECT DISTINCT ON (region, hour) region, hour, production_mw
    FROM (SELECT region, date_trunc('hour', ts + interval '30 minutes') AS hour, ts, production_mw, part, off
          FROM {raw_solar}) x
    ORDER BY region, hour, greatest(ts - hour, hour - ts), off DESC, part DESC
), w AS (
    SELECT DISTINCT ON (region, hour)
           region, hour, temperature_c, cloud_cover_pct, solar_radiation_wm2, latitude, longitude
    FROM (SELECT region, date_trunc('hour', ts + interval '30 minutes') AS hour, ts, temperature_c,
                 cloud_cover_pct, solar_radiation_wm2, latitude, longitude, part, off
          FROM {raw_weather}) x
    ORDER BY region, hour, greatest(ts - hour, hour - ts), off DESC, part DESC
), s_ma AS (
    SELECT region, hour, production_mw,
           avg(production_mw) OVER win AS production_ma
    FROM s
    WINDOW win AS (PARTITION BY region ORDER BY hour RANGE BETWEEN {span} PRECEDING AND CURRENT ROW)
), w_ma AS (
    SELECT w.*,
           avg(temperature_c) OVER win AS temperature_ma,
           avg(cloud_cover_pct) OVER win AS cloud_cover_ma
    FROM w
    WINDOW win AS (PARTITION BY region ORDER BY hour RANGE BETWEEN {span} PRECEDING AND CURRENT ROW)
)
SELECT s_ma.region, s_ma.hour, s_ma.production_mw,
       w_ma.temperature_c, w_ma.cloud_cover_pct, w_ma.solar_radiation_wm2, w_ma.latitude, w_ma.longitude,
       s_ma.production_ma, w_ma.temperature_ma, w_ma.cloud_cover_ma,
       l1.production_mw, l24.production_mw,
       extract(hour FROM s_ma.hour)::int,
       extract(isodow FROM s_ma.hour)::int - 1,
       extract(isodow FROM s_ma.hour) >= 6
FROM s_ma
JOIN w_ma ON w_ma.region = s_ma.region AND w_ma.hour = s_ma.hour
LEFT JOIN s l1 ON l1.region = s_ma.region AND l1.hour = s_ma.hour - interval '1 hour'
LEFT JOIN s l24 ON l24.region = s_ma.region AND l24.hour = s_ma.hour - interval '24 hours'
"""


def create_features_table(conn: Any, table: str) -> None:
    """The output table of SPEC, with the sink's own DDL."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL(CREATE_TABLE).format(table=sql.Identifier(table)))


def create_raw_tables(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "DROP TABLE IF EXISTS {s}, {w};"
                "CREATE TABLE {s} (region text, ts timestamptz, production_mw float8, part int, off bigint);"
                "CREATE TABLE {w} (region text, ts timestamptz, temperature_c float8, cloud_cover_pct float8,"
                " solar_radiation_wm2 float8, latitude float8, longitude float8, part int, off bigint)"
            ).format(s=sql.Identifier(RAW_SOLAR), w=sql.Identifier(RAW_WEATHER))
        )


def _cell(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, float):
        return repr(value)
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


@dataclass
class RawCollector:
    """Raw messages as COPY text for the two raw tables; parsed with ``json`` only (no pipeline code)."""

    solar_topic: str
    weather_topic: str
    solar: io.StringIO = field(default_factory=io.StringIO)
    weather: io.StringIO = field(default_factory=io.StringIO)
    counts: dict[str, int] = field(default_factory=lambda: {"solar": 0, "weather": 0})

    def __call__(
        self, topic: str, partition: int, offset: int, _key: bytes | None, value: bytes | None
    ) -> None:
        assert value is not None
        m = json.loads(value)
        if topic == self.solar_topic:
            solar = (m["region"], m["timestamp"], m["production_mw"], partition, offset)
            self.solar.write("\t".join(map(_cell, solar)) + "\n")
            self.counts["solar"] += 1
        else:
            cells = (
                m["region"], m["timestamp"], m.get("temperature_c"), m.get("cloud_cover_pct"),
                m.get("solar_radiation_wm2"), m["latitude"], m["longitude"], partition, offset,
            )  # fmt: skip
            self.weather.write("\t".join(map(_cell, cells)) + "\n")
            self.counts["weather"] += 1

    def load(self, conn: Any) -> None:
        """TRUNCATE and COPY both raw tables, then ANALYZE them."""
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'")
            for table, buffer in ((RAW_SOLAR, self.solar), (RAW_WEATHER, self.weather)):
                cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
                buffer.seek(0)
                cur.copy_expert(
                    sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table)).as_string(cur), buffer
                )
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def compute_features(conn: Any, peer_table: str, window_hours: int) -> tuple[float, int]:
    """Recompute the peer table from the raw tables; returns (seconds, rows)."""
    query = sql.SQL(FEATURES_SQL).format(
        peer=sql.Identifier(peer_table),
        raw_solar=sql.Identifier(RAW_SOLAR),
        raw_weather=sql.Identifier(RAW_WEATHER),
        span=sql.Literal(f"{window_hours - 1} hours") + sql.SQL("::interval"),
    )
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(peer_table)))
        started = time.perf_counter()
        cur.execute(query)
        seconds = time.perf_counter() - started
        rows = cur.rowcount
    return seconds, rows


def _differs(column: str) -> sql.Composed:
    a, b = sql.SQL("p.") + sql.Identifier(column), sql.SQL("q.") + sql.Identifier(column)
    if column in EXACT_COLUMNS:
        return sql.SQL("({a} IS DISTINCT FROM {b})").format(a=a, b=b)
    return sql.SQL(
        "(({a} IS NULL) <> ({b} IS NULL) OR abs({a} - {b}) > {tol} * greatest(1.0, abs({a}), abs({b})))"
    ).format(a=a, b=b, tol=sql.Literal(TOLERANCE))


def _rel_diff(column: str) -> sql.Composed:
    a, b = sql.SQL("p.") + sql.Identifier(column), sql.SQL("q.") + sql.Identifier(column)
    return sql.SQL("coalesce(abs({a} - {b}) / greatest(1.0, abs({a}), abs({b})), 0)").format(a=a, b=b)


def compare(conn: Any, pipeline_table: str, peer_table: str, samples: int = 5) -> dict[str, Any]:
    """Every row of both tables, by key: missing, extra, and rows with a column beyond the tolerance.

    Floats are equal when |a - b| <= 1e-9 * max(1, |a|, |b|) (or both NULL); integers and booleans exactly.
    Runs in one REPEATABLE READ snapshot, with the time of the pipeline's last committed write in it.
    """
    differs = sql.SQL(" OR ").join(_differs(c) for c in (*FLOAT_COLUMNS, *EXACT_COLUMNS))
    rel = sql.SQL("greatest({})").format(sql.SQL(", ").join(_rel_diff(c) for c in FLOAT_COLUMNS))
    joined = sql.SQL(
        'FROM {p} p FULL JOIN {q} q ON p.region = q.region AND p."timestamp" = q."timestamp"'
    ).format(p=sql.Identifier(pipeline_table), q=sql.Identifier(peer_table))
    summary = sql.SQL(
        "SELECT count(p.region), count(q.region),"
        " count(*) FILTER (WHERE p.region IS NULL),"
        " count(*) FILTER (WHERE q.region IS NULL),"
        " count(*) FILTER (WHERE p.region IS NOT NULL AND q.region IS NOT NULL AND ({differs})),"
        " coalesce(max({rel}) FILTER (WHERE p.region IS NOT NULL AND q.region IS NOT NULL), 0) {joined}"
    ).format(differs=differs, rel=rel, joined=joined)
    detail = sql.SQL(
        'SELECT coalesce(p.region, q.region), coalesce(p."timestamp", q."timestamp")::text,'
        " CASE WHEN p.region IS NULL THEN 'missing' WHEN q.region IS NULL THEN 'extra' ELSE 'differs' END"
        " {joined} WHERE p.region IS NULL OR q.region IS NULL OR ({differs})"
        " ORDER BY 2, 1 LIMIT {n}"
    ).format(joined=joined, differs=differs, n=sql.Literal(samples))
    old_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            # This table's writes only: other runs' workers may write to theirs meanwhile.
            cur.execute(
                sql.SQL("SELECT extract(epoch FROM max(at)), count(*) FROM {} WHERE tbl = %s").format(
                    sql.Identifier(WRITES)
                ),
                (pipeline_table,),
            )
            last_write, writes = cur.fetchone()
            cur.execute(summary)
            pipeline_rows, peer_rows, missing, extra, differing, max_rel = cur.fetchone()
            bad: list[list[str]] = []
            if missing or extra or differing:
                cur.execute(detail)
                bad = [list(map(str, r)) for r in cur.fetchall()]
        conn.commit()
    finally:
        conn.autocommit = old_autocommit
    return {
        "pipeline_rows": pipeline_rows,
        "peer_rows": peer_rows,
        "missing": missing,
        "extra": extra,
        "differing": differing,
        "max_relative_difference": float(max_rel),
        "tolerance": TOLERANCE,
        "match": bool(pipeline_rows == peer_rows and not (missing or extra or differing)),
        "samples": bad,
        "last_write_at": None if last_write is None else float(last_write),
        "write_statements": writes,
    }


def install_write_log(conn: Any, table: str) -> None:
    """Log the commit-side time of every write statement on ``table`` (one row per statement: cheap)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {w} (tbl text, at timestamptz);"
                "CREATE OR REPLACE FUNCTION bench_log_write() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN INSERT INTO {w} VALUES (TG_TABLE_NAME, clock_timestamp()); RETURN NULL; END $$;"
                "CREATE TRIGGER bench_log_write AFTER INSERT ON {t} FOR EACH STATEMENT"
                " EXECUTE FUNCTION bench_log_write()"
            ).format(w=sql.Identifier(WRITES), t=sql.Identifier(table))
        )


def writes_of(conn: Any, table: str) -> tuple[int, float | None, float | None]:
    """(write statements, epoch of the first, epoch of the last) on ``table``."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*), extract(epoch FROM min(at)), extract(epoch FROM max(at))"
                " FROM {} WHERE tbl = %s"
            ).format(sql.Identifier(WRITES)),
            (table,),
        )
        n, first, last = cur.fetchone()
    return n, None if first is None else float(first), None if last is None else float(last)


def install_notify(conn: Any, table: str) -> None:
    """NOTIFY ``region|epoch`` for every row written to ``table``; delivered to listeners at commit."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN PERFORM pg_notify({ch},"
                " NEW.region || '|' || extract(epoch FROM NEW.\"timestamp\")::bigint);"
                " RETURN NULL; END $$;"
                "CREATE TRIGGER bench_notify AFTER INSERT OR UPDATE ON {t} FOR EACH ROW"
                " EXECUTE FUNCTION bench_notify()"
            ).format(ch=sql.Literal(NOTIFY_CHANNEL), t=sql.Identifier(table))
        )


def drop_notify(conn: Any, table: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TRIGGER IF EXISTS bench_notify ON {}").format(sql.Identifier(table)))


def count_rows(conn: Any, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(cur.fetchone()[0])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


ProgressFn = Callable[[str], None]
