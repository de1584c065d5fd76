"""Backtests evaluated in DuckDB over the gold Delta table: the fleet-scale engine.

A 30-day backtest of 4,500 units reads ~78 million (unit, metric, hour) rows. Read out of
PostgreSQL's long, row-wise ``sensor_readings_agg`` that took ~400 s here (plus ~1,500 s
filling baselines); DuckDB reads the same aggregates column-wise from the ETL's gold table,
which holds exactly the rows and columns of ``sensor_readings_agg`` (``etl/gold.py``),
partitioned by date, and runs the same rule SQL on all cores.

The rule branches are the PostgreSQL engine's own (:func:`rules.evaluate._range_branch`,
rendered for DuckDB: thresholds and frames are literals, so the generated text is portable
SQL); only the sources differ:

* the hour pivot ``pv`` (one row per unit and hour, a presence bit per metric, each needed
  value, the running gate and the baselines) is built from ``delta_scan(gold)`` filtered to
  the organization and the date partitions of the range;
* the unit's columns come from PostgreSQL's ``compressors`` (a tenant transaction: 4,500 rows);
* baselines are computed from gold with the definition of the ``fill_baselines`` query
  (median of the running hours' 1h means over the window days, NULL under 24 hours), with
  PostgreSQL's ``percentile_cont`` interpolation spelled out, and are not stored: a backtest
  here writes nothing. (Stored baselines computed before late data arrived can therefore
  differ from these; on the same data both engines give the same rows, which
  ``tests/rules/test_duck_engine.py`` holds them to.)

Tenant scoping: every gold read filters on ``org_id``; units come from a tenant transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from psycopg import sql

from altaviz import db
from altaviz.errors import InputError
from altaviz.telemetry import METRIC_BY_NAME
from rules.evaluate import (
    DEFAULT_LOOKBACK_HOURS,
    Row,
    Variant,
    _Pivot,
    _range_branch,
    history_start,
    variants_of,
)
from rules.evaluate import _hour as hour_of
from rules.schema import RUNNING_SHARE, NoDataRule, RuleSet, ThresholdRule

_PARAM = re.compile(r"%\((\w+)\)s")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _render(composed: sql.Composable) -> tuple[str, list[str]]:
    """PostgreSQL-style composable -> DuckDB text with ``$name`` parameters (and their names)."""
    text = composed.as_string(None)
    names = sorted(set(_PARAM.findall(text)))
    return _PARAM.sub(lambda m: "$" + m.group(1), text), names


def _run(con: duckdb.DuckDBPyConnection, text: str, params: Mapping[str, Any]) -> Any:
    used = set(re.findall(r"\$(\w+)", text))
    return con.execute(text, {k: v for k, v in params.items() if k in used})


def _gold(gold_uri: str) -> str:
    return f"delta_scan({_quote(gold_uri)})"


def _units(conn: psycopg.Connection[Any], org_id: str,
           compressors: list[str] | None) -> pa.Table:
    """The organization's compressors (through RLS) as an Arrow table for DuckDB."""
    with db.tenant(conn, org_id):
        rows = conn.execute(
            "SELECT org_id, compressor_id, site_id, model, rated_rpm FROM compressors "
            "WHERE org_id = %s AND (%s::text[] IS NULL OR compressor_id = ANY(%s::text[]))",
            [org_id, compressors, compressors]).fetchall()
    cols: list[list[Any]] = [[r[i] for r in rows] for i in range(5)]
    return pa.table({
        "org_id": pa.array(cols[0], pa.string()),
        "compressor_id": pa.array(cols[1], pa.string()),
        "site_id": pa.array(cols[2], pa.string()),
        "model": pa.array(cols[3], pa.string()),
        "rated_rpm": pa.array(cols[4], pa.int32())})


def _date_filter(alias: str, lo: datetime, hi: datetime) -> str:
    """Partition predicates (DuckDB's delta scan prunes files by ``date``, never by hour)."""
    return (f"{alias}.date >= {_quote(lo.date().isoformat())} "
            f"AND {alias}.date <= {_quote(hi.date().isoformat())}")


def compute_baselines(con: duckdb.DuckDBPyConnection, gold: str, rule_set: RuleSet,
                      org_id: str, first_day: Any, last_day: Any) -> None:
    """Fill the temp table ``bl_long(compressor_id, metric, days, day, median, n)``.

    Same definition as the ``fill_baselines`` query: day D's window is the UTC days
    ``D-(days+1) .. D-2``; only hours the unit ran (speed_rpm ``min_4h`` >= RUNNING_SHARE x
    rated rpm) with a mean count; the median is NULL under 24 hours. Each day's running
    means are gathered once into a list and handed to the ``days`` baseline days whose window
    holds that day; the median is PostgreSQL's ``percentile_cont(0.5)``: the middle value, or
    ``lo + (hi - lo) * 0.5`` of the two middle ones.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE bl_long (compressor_id VARCHAR, metric VARCHAR, "
                "days INTEGER, day DATE, median DOUBLE, n BIGINT)")
    needs: dict[int, set[str]] = {}
    for rule in rule_set.rules:
        if isinstance(rule, ThresholdRule) and rule.baseline is not None and rule.enabled:
            needs.setdefault(rule.baseline.days, set()).add(rule.metric)
    for days, metrics in sorted(needs.items()):
        lo = datetime.combine(first_day - timedelta(days=days + 1), datetime.min.time())
        hi = datetime.combine(last_day - timedelta(days=2), datetime.min.time())
        metric_list = ", ".join(_quote(m) for m in sorted(metrics))
        _run(con, f"""
INSERT INTO bl_long
WITH running AS (
    SELECT s.compressor_id, s.hour
    FROM {gold} s JOIN units c ON c.compressor_id = s.compressor_id
    WHERE s.org_id = $org AND s.metric = 'speed_rpm' AND {_date_filter('s', lo, hi)}
      AND s.min_4h >= $running_share * c.rated_rpm
), daily AS (
    SELECT a.compressor_id, a.metric, CAST(a.hour AS DATE) AS d, list(a.mean) AS vals
    FROM {gold} a SEMI JOIN running r ON r.compressor_id = a.compressor_id AND r.hour = a.hour
    WHERE a.org_id = $org AND a.metric IN ({metric_list}) AND {_date_filter('a', lo, hi)}
      AND a.mean IS NOT NULL
    GROUP BY a.compressor_id, a.metric, CAST(a.hour AS DATE)
), gathered AS (
    SELECT compressor_id, metric, CAST(d + CAST(k AS INTEGER) AS DATE) AS day,
           list_sort(flatten(list(vals))) AS s
    FROM daily CROSS JOIN range(2, {days} + 2) AS t(k)
    WHERE CAST(d + CAST(k AS INTEGER) AS DATE) BETWEEN $first_day AND $last_day
    GROUP BY ALL
)
SELECT compressor_id, metric, {days}, day,
       CASE WHEN len(s) < 24 THEN NULL
            WHEN len(s) % 2 = 1 THEN s[len(s) // 2 + 1]
            ELSE s[len(s) // 2] + (s[len(s) // 2 + 1] - s[len(s) // 2]) * 0.5 END,
       len(s)
FROM gathered""", {"org": org_id, "running_share": RUNNING_SHARE,
                   "first_day": first_day, "last_day": last_day})


def _pivot_sql(variants: list[Variant], pv: _Pivot, gold: str, read_lo: datetime,
               hi: datetime) -> str:
    """The hour pivot ``pv``, as the PostgreSQL engine's ``level_rules_sql`` builds it."""
    bits = " ".join(f"WHEN {_quote(m)} THEN {1 << i}" for m, i in pv.bits.items())
    aggs = ["max(min_4h) FILTER (WHERE metric = 'speed_rpm') AS speed_min_4h",
            f"bit_or(CASE metric {bits} END::BIGINT) AS present"]
    aggs += [f"max({c}) FILTER (WHERE metric = {_quote(m)}) AS {n}"
             for (m, c), n in pv.values.items()]
    all_metrics = ", ".join(_quote(m) for m in sorted({*pv.bits, "speed_rpm"}))
    x_cols = ", ".join(f"x.{n}" for n in ["speed_min_4h", *pv.values.values()])
    base_names = "".join(f", bl.{n}" for n in pv.bases.values())
    bases = ""
    if pv.bases:
        cols = ", ".join(f"max(median) FILTER (WHERE metric = {_quote(m)} AND days = {d}) AS {n}"
                         for (m, d), n in pv.bases.items())
        bases = f"""
    LEFT JOIN (SELECT compressor_id, day, {cols} FROM bl_long GROUP BY compressor_id, day) bl
      ON bl.compressor_id = c.compressor_id AND bl.day = CAST(g.hour AS DATE)"""
    return f"""
CREATE OR REPLACE TEMP TABLE pv AS
SELECT c.compressor_id, g.hour, coalesce(x.present, 0) AS present, {x_cols},
       c.org_id, c.site_id, c.model, c.rated_rpm{base_names}
FROM units c
CROSS JOIN (SELECT unnest(generate_series($read_lo, $hi, INTERVAL 1 HOUR)) AS hour) g
LEFT JOIN (
    SELECT compressor_id, hour, {", ".join(aggs)}
    FROM {gold} a
    WHERE org_id = $org AND {_date_filter('a', read_lo, hi)}
      AND hour >= $read_lo AND hour <= $hi AND metric IN ({all_metrics})
    GROUP BY hour, compressor_id
) x ON x.compressor_id = c.compressor_id AND x.hour = g.hour{bases}"""


def _no_data_sql(rules: list[NoDataRule], gold: str, lo: datetime, end: datetime) -> str:
    """The PostgreSQL engine's ``no_data_sql`` for DuckDB: hours since the last aggregate."""
    all_metrics = ", ".join(_quote(m) for m in sorted(METRIC_BY_NAME))
    targets, data = [], []
    for r in rules:
        where = "".join(f" AND c.{col} IN ({', '.join(_quote(x) for x in values)})"
                        for col, values in (("model", r.applies_to.models),
                                            ("site_id", r.applies_to.sites),
                                            ("org_id", r.applies_to.orgs)) if values is not None)
        crit = "NULL::INTEGER" if r.critical_after_hours is None else str(r.critical_after_hours)
        metric = "NULL::VARCHAR" if r.metric is None else _quote(r.metric)
        targets.append(f"SELECT {_quote(r.id)} AS rule_id, {metric} AS metric, "
                       f"{r.warning_after_hours} AS warn, {crit} AS crit, c.compressor_id, "
                       f"c.site_id FROM units c WHERE true{where}")
        metric_cond = (f"a.metric IN ({all_metrics})" if r.metric is None
                       else f"a.metric = {_quote(r.metric)}")
        data.append(f"SELECT DISTINCT {_quote(r.id)} AS rule_id, a.compressor_id, a.hour "
                    f"FROM {gold} a WHERE a.org_id = $org AND {_date_filter('a', lo, end)} "
                    f"AND a.hour >= $lo AND a.hour <= $end AND a.n > 0 AND {metric_cond}")
    return f"""
WITH t AS ({" UNION ALL ".join(targets)}),
data_hours AS ({" UNION ALL ".join(data)}),
grid AS (
    SELECT t.rule_id, t.compressor_id, t.site_id, t.metric, t.warn, t.crit, g.hour,
           d.hour IS NOT NULL AS has_data
    FROM t CROSS JOIN (SELECT unnest(generate_series($lo, $end, INTERVAL 1 HOUR)) AS hour) g
    LEFT JOIN data_hours d
      ON d.rule_id = t.rule_id AND d.compressor_id = t.compressor_id AND d.hour = g.hour
), lastseen AS (
    SELECT grid.*,
           max(hour) FILTER (WHERE has_data) OVER upto AS last_data,
           max(hour) FILTER (WHERE has_data) OVER before AS prev_data
    FROM grid
    WINDOW upto AS (PARTITION BY rule_id, compressor_id ORDER BY hour
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
           before AS (PARTITION BY rule_id, compressor_id ORDER BY hour
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), gaps AS (
    SELECT lastseen.*,
           epoch(hour - coalesce(last_data, $lo - INTERVAL 1 HOUR)) / 3600.0 AS gap,
           epoch(hour - coalesce(prev_data, $lo - INTERVAL 1 HOUR)) / 3600.0 - 1 AS prev_gap
    FROM lastseen
)
SELECT rule_id, metric, compressor_id, site_id, hour, gap::DOUBLE, gap >= warn AS firing,
       crit IS NOT NULL AND gap >= crit AS is_crit,
       CASE WHEN crit IS NOT NULL AND gap >= crit THEN crit ELSE warn END AS threshold,
       has_data AND prev_gap >= warn AS clear_emit
FROM gaps
WHERE hour >= $start AND (gap >= warn OR (has_data AND prev_gap >= warn))"""


def connect(threads: int | None = None, memory_limit: str = "4GB") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for backtests (delta extension loaded offline, UTC)."""
    from etl.duck import connect as duck_connect

    return duck_connect(memory_limit=memory_limit, threads=threads)


def episode_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                 start: datetime, end: datetime, gold_uri: str,
                 lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
                 compressors: list[str] | None = None,
                 con: duckdb.DuckDBPyConnection | None = None) -> list[Row]:
    """Firing/clear rows of ``[start, end]`` for one organization, evaluated in DuckDB.

    The same rows as :func:`rules.evaluate.evaluate_rows` on the same aggregates (ordered by
    hour, compressor, rule), read from the gold Delta table at ``gold_uri`` instead of
    PostgreSQL; ``conn`` only supplies the organization's compressors. Writes nothing.
    """
    start, end = hour_of(start), hour_of(end)
    if end < start:
        raise InputError(f"end {end.isoformat()} is before start {start.isoformat()}")
    own = con is None
    duck = con if con is not None else connect()
    try:
        units = _units(conn, org_id, compressors)
        duck.register("units_arrow", units)
        duck.execute("CREATE OR REPLACE TEMP TABLE units AS SELECT * FROM units_arrow")
        duck.unregister("units_arrow")
        gold = _gold(gold_uri)
        out: list[Row] = []
        variants = variants_of(rule_set)
        params: dict[str, Any] = {"org": org_id, "org_id": org_id, "start": start, "end": end,
                                  "running_share": RUNNING_SHARE}
        if variants:
            lo = history_start(variants, start, lookback_hours)
            compute_baselines(duck, gold, rule_set, org_id, lo.date(), end.date())
            pv = _Pivot.of(variants)
            _run(duck, _pivot_sql(variants, pv, gold, lo, end),
                 {**params, "read_lo": lo, "hi": end})
            wl_hours = lookback_hours + max(v.k for v in variants) + 1
            branches = sql.SQL("\nUNION ALL\n").join(
                sql.SQL("SELECT {rule_id} AS rule_id, {metric} AS metric, x.* FROM ({b}) x"
                        ).format(rule_id=sql.SQL(_quote(v.rule.id)),
                                 metric=sql.SQL(_quote(v.rule.metric)),
                                 b=_range_branch(v, wl_hours, pv, duck=True))
                for v in variants)
            text, _ = _render(branches)
            for r in _run(duck, text, params).fetchall():
                out.append(Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]))
        nd = [r for r in rule_set.rules if isinstance(r, NoDataRule) and r.enabled]
        if nd:
            span = max(r.critical_after_hours or r.warning_after_hours for r in nd) + lookback_hours
            lo = start - timedelta(hours=span)
            for r in _run(duck, _no_data_sql(nd, gold, lo, end),
                          {**params, "lo": lo}).fetchall():
                out.append(Row(r[0], r[1] or "*", r[2], r[3], r[4], r[5], r[6], r[7],
                               float(r[8]), r[9]))
        out.sort(key=lambda r: (r.hour, r.compressor_id, r.rule_id))
        return out
    finally:
        if own:
            duck.close()


__all__ = ["compute_baselines", "connect", "episode_rows"]
