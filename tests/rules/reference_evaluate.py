"""REFERENCE ONLY: the rule evaluation as it was before the per-rule SQL (commit 5108ebc).

Kept verbatim (with its baseline fill query inlined) so tests/rules/test_equivalence.py can
check that the faster evaluation in rules/evaluate.py returns exactly the same results.

Original docstring: rule evaluation over ``sensor_readings_agg``, vectorized in PostgreSQL.

One SQL statement evaluates every threshold and rate-of-change rule (the rule set travels as a
JSON parameter and is joined to the compressors it applies to); one more evaluates the no-data
rules. Python only turns the few resulting rows into :class:`Breach`/:class:`Clear` objects.

Semantics, per (compressor, rule) and hour ``h`` (hours are the aggregate's hour-start):

* *beyond(level)*: the rule's aggregate at ``h`` is at or past the level (``above``: >=,
  ``below``: <=, ``either``: |value - baseline| >= offset). Relative levels use the baseline of
  ``h``'s UTC day (see migration 010); "whichever comes first" combines absolute and relative.
* *firing*: at least ``persistence.hours`` of the last ``persistence.of`` hours (present rows
  only) are beyond the first level (warning, or critical when there is none); severity is
  ``critical`` when as many are beyond critical.
* *normal*: a row exists and is on the normal side of the clear level (default: the warning).
  Missing hours are never normal. *cleared*: the last ``clear_after_hours`` hours all normal.
  Clearing dominates: an hour that is both firing and cleared counts as cleared.

What is reported for the requested hours ``[start, end]`` (both inclusive):

* a :class:`Breach` for every hour at which a rule is *firing* (so for the latest hour: the
  breach state at that hour; in the hysteresis band between clear and warning an open episode
  is neither re-reported nor cleared);
* a :class:`Clear` at the hour an episode ends: the first hour of being *cleared* after a
  firing hour. State before ``start`` is reconstructed from ``lookback_hours`` of history; when
  that window holds no cleared hour at all the state is unknown and a Clear is emitted
  (consumers must treat a Clear for a rule without an open alert as a no-op);
* no-data rules: a Breach for each hour at which the compressor (or the rule's metric) has had
  no aggregate for ``warning_after_hours`` (value = hours without data), and a Clear at the first
  hour data is back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from altaviz.core import db
from altaviz.core.errors import InputError
from altaviz.core.payloads import Breach, Clear
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.schema import (
    RUNNING_SHARE,
    Level,
    LevelRule,
    NoDataRule,
    RateOfChangeRule,
    RuleSet,
    ThresholdRule,
)

DEFAULT_LOOKBACK_HOURS = 6
_FILL_BASELINES = """
WITH missing AS MATERIALIZED (
    SELECT c.compressor_id, c.rated_rpm, m.metric, d.day,
           ((d.day - (%(days)s + 1))::timestamp AT TIME ZONE 'UTC') AS lo,
           ((d.day - 1)::timestamp AT TIME ZONE 'UTC') AS hi
    FROM compressors c
    CROSS JOIN unnest(%(metrics)s::text[]) AS m(metric)
    CROSS JOIN unnest(%(days_list)s::date[]) AS d(day)
    WHERE c.org_id = %(org_id)s
      AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
      AND NOT EXISTS (
        SELECT 1 FROM rule_baselines b
        WHERE b.org_id = %(org_id)s AND b.compressor_id = c.compressor_id
          AND b.metric = m.metric AND b.days = %(days)s AND b.day = d.day)
)
INSERT INTO rule_baselines (org_id, compressor_id, metric, days, day, median, n)
SELECT %(org_id)s, x.compressor_id, x.metric, %(days)s, x.day,
       CASE WHEN count(a.mean) >= 24
            THEN percentile_cont(0.5) WITHIN GROUP (ORDER BY a.mean) END,
       count(a.mean)
FROM missing x
JOIN sensor_readings_agg a
  ON a.org_id = %(org_id)s AND a.compressor_id = x.compressor_id AND a.metric = x.metric
 AND a.hour >= x.lo AND a.hour < x.hi AND a.mean IS NOT NULL
JOIN sensor_readings_agg sp
  ON sp.org_id = %(org_id)s AND sp.compressor_id = x.compressor_id AND sp.metric = 'speed_rpm'
 AND sp.hour = a.hour AND sp.min_4h >= %(running_share)s * x.rated_rpm
GROUP BY x.compressor_id, x.metric, x.day
ON CONFLICT DO NOTHING
"""
_COLUMNS = ("mean", "min", "max", "stddev", "mean_4h", "min_4h", "max_4h", "stddev_4h",
            "mean_24h", "min_24h", "max_24h", "stddev_24h", "rate_of_change")


@dataclass
class EvaluationResult:
    """Breaches and clears of one evaluation, ordered by hour."""

    breaches: list[Breach] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)


def _hour(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise InputError(f"hour {ts.isoformat()} has no time zone; pass UTC datetimes")
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _level_params(prefix: str, level: Level | None) -> dict[str, Any]:
    return {f"{prefix}_abs": level.absolute if level else None,
            f"{prefix}_delta": level.delta if level else None,
            f"{prefix}_pct": level.percent if level else None}


def level_variants(rule_set: RuleSet) -> list[dict[str, Any]]:
    """Expand threshold/rate-of-change rules into one parameter row per (rule, model variant).

    A rule with per-model overrides becomes one row per overridden model plus a default row
    for every other model, so SQL can pick thresholds by a plain join on the compressor model.
    """
    rows: list[dict[str, Any]] = []
    for rule in rule_set.rules:
        if isinstance(rule, NoDataRule) or not rule.enabled:
            continue
        scope = rule.applies_to
        variants: list[tuple[str | None, list[str] | None]] = [
            (m, None) for m in rule.models]
        variants.append((None, list(scope.models) if scope.models is not None else None))
        for model, models in variants:
            warning, critical, clear = rule.levels_for(model)
            first = warning if warning is not None else critical
            assert first is not None
            rows.append({
                "vid": len(rows), "rule_id": rule.id, "metric": rule.metric,
                "col": rule.column, "cmp": rule.comparison, "model": model,
                "models": models, "except_models": list(rule.models),
                "sites": list(scope.sites) if scope.sites is not None else None,
                "orgs": list(scope.orgs) if scope.orgs is not None else None,
                **_level_params("f", first), **_level_params("c", critical),
                **_level_params("r", clear),
                "has_c": critical is not None,
                "n": rule.persistence.hours, "m": rule.persistence.of,
                "k": rule.clear_after_hours,
                "running": rule.running_only,
                "bdays": rule.baseline.days
                if isinstance(rule, ThresholdRule) and rule.baseline else None,
                "bmin": rule.baseline.min_hours
                if isinstance(rule, ThresholdRule) and rule.baseline else None,
            })
    return rows


_RECORD = sql.SQL(
    "vid int, rule_id text, metric text, col text, cmp text, model text, models text[], "
    "except_models text[], sites text[], orgs text[], f_abs float8, f_delta float8, "
    "f_pct float8, c_abs float8, c_delta float8, c_pct float8, r_abs float8, r_delta float8, "
    "r_pct float8, has_c bool, n int, m int, k int, running bool, bdays int, bmin int")


def _beyond(level: str, normal: bool = False) -> sql.Composable:
    """SQL for 'value is beyond ``level``' (or, with ``normal``, strictly on the normal side)."""
    off = sql.SQL("least({d}, {p} / 100.0 * abs(base))").format(
        d=sql.Identifier(f"{level}_delta"), p=sql.Identifier(f"{level}_pct"))
    a = sql.Identifier(f"{level}_abs")
    above = sql.SQL("least({a}, base + {off})").format(a=a, off=off)
    below = sql.SQL("greatest({a}, base - {off})").format(a=a, off=off)
    if normal:
        expr = ("CASE cmp WHEN 'above' THEN v < {above} WHEN 'below' THEN v > {below} "
                "ELSE abs(v - base) < {off} END")
    else:
        expr = ("CASE cmp WHEN 'above' THEN v >= {above} WHEN 'below' THEN v <= {below} "
                "ELSE abs(v - base) >= {off} END")
    return sql.SQL("coalesce(" + expr + ", false)").format(above=above, below=below, off=off)


def _threshold_sql(level: str) -> sql.Composable:
    off = sql.SQL("least({d}, {p} / 100.0 * abs(base))").format(
        d=sql.Identifier(f"{level}_delta"), p=sql.Identifier(f"{level}_pct"))
    a = sql.Identifier(f"{level}_abs")
    return sql.SQL(
        "CASE cmp WHEN 'above' THEN least({a}, base + {off}) "
        "WHEN 'below' THEN greatest({a}, base - {off}) "
        "ELSE CASE WHEN v >= base THEN base + {off} ELSE base - {off} END END"
    ).format(a=a, off=off)


def _window(name: str, hours: int) -> sql.Composable:
    return sql.SQL("{} AS (PARTITION BY vid, compressor_id ORDER BY hour "
                   "RANGE BETWEEN {} PRECEDING AND CURRENT ROW)").format(
        sql.Identifier(name), sql.Literal(timedelta(hours=hours - 1)))


def _count_case(var: str, flag: str, lengths: list[int], prefix: str) -> sql.Composable:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN count(*) FILTER (WHERE {}) OVER {}").format(
            sql.Literal(n), sql.Identifier(flag), sql.Identifier(f"{prefix}{n}"))
        for n in lengths)
    return sql.SQL("CASE {} {} END").format(sql.Identifier(var), whens)


_RANGE_TAIL = """), w AS (
    SELECT f.*,
           {fire_cnt} AS fire_cnt, {crit_cnt} AS crit_cnt, {norm_cnt} AS norm_cnt,
           count(*) FILTER (WHERE bf) OVER wl AS recent_bf,
           {band_cnt} AS band_cnt,
           CASE cmp WHEN 'above' THEN {hi} WHEN 'below' THEN {lo_} ELSE v END AS worst
    FROM f
    WINDOW {windows}
), s AS (
    SELECT w.*, fire_cnt >= n AND norm_cnt < k AS firing, crit_cnt >= n AS crit,
           norm_cnt >= k AS cleared,
           lag(norm_cnt >= k) OVER byhour AND lag(hour) OVER byhour = hour - interval '1 hour'
               AS prev_cleared
    FROM w
    WINDOW byhour AS (PARTITION BY vid, compressor_id ORDER BY hour)
), e AS (
    SELECT s.*, cleared AND NOT coalesce(prev_cleared, false)
                AND (recent_bf > 0 OR band_cnt > 0) AS clear_emit
    FROM s
    WHERE hour >= %(start)s AND hour <= %(end)s
)
"""
_SINGLE_TAIL = """), g AS (
    -- One evaluated hour: a plain GROUP BY over the last hours replaces the window stages.
    SELECT vid, compressor_id, n, k,
           count(*) FILTER (WHERE bf AND hour > %(end)s - m * interval '1 hour') AS fire_cnt,
           count(*) FILTER (WHERE bc AND hour > %(end)s - m * interval '1 hour') AS crit_cnt,
           count(*) FILTER (WHERE nr AND hour > %(end)s - k * interval '1 hour') AS norm_cnt,
           count(*) FILTER (WHERE nr AND hour > %(end)s - (k + 1) * interval '1 hour'
                                     AND hour < %(end)s) AS prev_norm_cnt,
           count(*) FILTER (WHERE bf AND hour < %(end)s) AS recent_bf,
           count(*) FILTER (WHERE hour = %(end)s - k * interval '1 hour'
                                     AND v IS NOT NULL AND NOT nr) AS band_cnt,
           CASE min(cmp)
               WHEN 'above' THEN max(v) FILTER (WHERE bf AND hour > %(end)s - m * interval '1 hour')
               WHEN 'below' THEN min(v) FILTER (WHERE bf AND hour > %(end)s - m * interval '1 hour')
               ELSE max(v) FILTER (WHERE hour = %(end)s) END AS worst,
           max(v) FILTER (WHERE hour = %(end)s) AS v,
           max(f_thr) FILTER (WHERE hour = %(end)s) AS f_thr,
           max(c_thr) FILTER (WHERE hour = %(end)s) AS c_thr,
           bool_or(hour = %(end)s) AS has_now
    FROM f
    GROUP BY vid, compressor_id, n, m, k
), e AS (
    SELECT vid, compressor_id, %(end)s::timestamptz AS hour, worst, v, f_thr, c_thr,
           fire_cnt >= n AND norm_cnt < k AS firing, crit_cnt >= n AS crit,
           norm_cnt >= k AND prev_norm_cnt < k AND (recent_bf > 0 OR band_cnt > 0)
               AS clear_emit
    FROM g WHERE has_now
)
"""


def _agg_case(func: str, lengths: list[int]) -> sql.Composable:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}(v) FILTER (WHERE bf) OVER {}").format(
            sql.Literal(n), sql.SQL(func), sql.Identifier(f"wm{n}")) for n in lengths)
    return sql.SQL("CASE m {} END").format(whens)


def level_rules_sql(variants: list[dict[str, Any]], lookback_hours: int,
                    single_hour: bool = False) -> sql.Composed:
    """The one statement that evaluates every threshold/rate-of-change variant.

    The window frames differ by persistence length, and PostgreSQL wants frame offsets to be
    constants, so the statement gets one named window per distinct length in the rule set.
    """
    ms = sorted({v["m"] for v in variants})
    ks = sorted({v["k"] for v in variants})
    col_case = sql.SQL("CASE t.col {} END").format(sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN a.{}").format(sql.Literal(c), sql.Identifier(c))
        for c in _COLUMNS))
    windows = sql.SQL(", ").join(
        [_window(f"wm{m}", m) for m in ms] + [_window(f"wk{k}", k) for k in ks]
        + [_window(f"wq{k}", k + 1) for k in ks]
        + [_window("wl", lookback_hours + max(ks) + 1)])
    tail = sql.SQL(_SINGLE_TAIL if single_hour else _RANGE_TAIL)
    return sql.SQL("""
WITH p AS (
    SELECT * FROM jsonb_to_recordset(%(variants)s::jsonb) AS p({record})
), t AS (
    SELECT p.*, c.compressor_id, c.site_id, c.rated_rpm
    FROM p JOIN compressors c
      ON c.org_id = %(org_id)s
     AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
     AND CASE WHEN p.model IS NOT NULL THEN c.model = p.model
              ELSE (p.models IS NULL OR c.model = ANY(p.models))
                   AND NOT (c.model = ANY(p.except_models)) END
     AND (p.sites IS NULL OR c.site_id = ANY(p.sites))
     AND (p.orgs IS NULL OR c.org_id = ANY(p.orgs))
), bl AS MATERIALIZED (
    SELECT compressor_id, metric, days, day, median, n FROM rule_baselines
    WHERE org_id = %(org_id)s AND day >= (%(lo)s AT TIME ZONE 'UTC')::date
      AND day <= (%(hi)s AT TIME ZONE 'UTC')::date
), o AS (
    SELECT t.vid, t.compressor_id, t.cmp, t.n, t.m, t.k, t.has_c, t.f_abs, t.f_delta,
           t.f_pct, t.c_abs, t.c_delta, t.c_pct, t.r_abs, t.r_delta, t.r_pct,
           a.hour,
           CASE WHEN NOT t.running OR sp.min_4h >= %(running_share)s * t.rated_rpm
                THEN {col_case} END AS v,
           b.median AS base
    FROM t
    JOIN sensor_readings_agg a
      ON a.org_id = %(org_id)s AND a.compressor_id = t.compressor_id
     AND a.metric = t.metric AND a.hour >= %(lo)s AND a.hour <= %(hi)s
    LEFT JOIN sensor_readings_agg sp
      ON sp.org_id = %(org_id)s AND sp.compressor_id = t.compressor_id
     AND sp.metric = 'speed_rpm' AND sp.hour = a.hour
    LEFT JOIN bl b
      ON b.compressor_id = t.compressor_id AND b.metric = t.metric AND b.days = t.bdays
     AND b.n >= t.bmin
     AND b.day = (a.hour AT TIME ZONE 'UTC')::date
), f AS (
    -- Only narrow rows go through the window stages (wide rows made them several times slower).
    SELECT vid, compressor_id, hour, v, cmp, n, m, k,
           {bf} AS bf, has_c AND {bc} AS bc, v IS NOT NULL AND {nr} AS nr,
           v IS NOT NULL AND NOT {nr} AS band,
           {f_thr} AS f_thr, {c_thr} AS c_thr
    FROM o
{tail}SELECT p.rule_id, p.metric, e.compressor_id, c.site_id, hour,
       CASE WHEN firing THEN worst ELSE v END, firing, crit,
       CASE WHEN crit THEN c_thr ELSE f_thr END AS threshold, clear_emit
FROM e
JOIN p ON p.vid = e.vid
JOIN compressors c ON c.org_id = %(org_id)s AND c.compressor_id = e.compressor_id
WHERE firing OR clear_emit
ORDER BY hour, e.compressor_id, p.rule_id
""").format(
        tail=tail.format(
            windows=windows,
            fire_cnt=_count_case("m", "bf", ms, "wm"), crit_cnt=_count_case("m", "bc", ms, "wm"),
            norm_cnt=_count_case("k", "nr", ks, "wk"),
            band_cnt=_count_case("k", "band", ks, "wq"),
            hi=_agg_case("max", ms), lo_=_agg_case("min", ms)),
        record=_RECORD, col_case=col_case, bf=_beyond("f"), bc=_beyond("c"),
        nr=_beyond("r", normal=True), c_thr=_threshold_sql("c"), f_thr=_threshold_sql("f"))


def no_data_sql() -> sql.SQL:
    """Statement for no-data rules: hours since the last aggregate, per compressor and hour."""
    return sql.SQL("""
WITH p AS (
    SELECT * FROM jsonb_to_recordset(%(rules)s::jsonb) AS p(
        rule_id text, metric text, models text[], sites text[], orgs text[],
        warn int, crit int)
), t AS (
    SELECT p.*, c.compressor_id, c.site_id
    FROM p JOIN compressors c
      ON c.org_id = %(org_id)s
     AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
     AND (p.models IS NULL OR c.model = ANY(p.models))
     AND (p.sites IS NULL OR c.site_id = ANY(p.sites))
     AND (p.orgs IS NULL OR c.org_id = ANY(p.orgs))
), data_hours AS (
    SELECT DISTINCT t.rule_id, t.compressor_id, a.hour
    FROM t JOIN sensor_readings_agg a
      ON a.org_id = %(org_id)s AND a.compressor_id = t.compressor_id
     AND a.metric = ANY(CASE WHEN t.metric IS NULL THEN %(all_metrics)s::text[]
                              ELSE ARRAY[t.metric] END)
     AND a.hour >= %(lo)s AND a.hour <= %(end)s AND a.n > 0
), grid AS (
    SELECT t.rule_id, t.compressor_id, t.site_id, t.metric, t.warn, t.crit, g.hour,
           d.hour IS NOT NULL AS has_data
    FROM t CROSS JOIN generate_series(%(lo)s::timestamptz, %(end)s::timestamptz,
                                      interval '1 hour') AS g(hour)
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
           extract(epoch FROM hour - coalesce(last_data, %(lo)s - interval '1 hour'))
               / 3600.0 AS gap,
           extract(epoch FROM hour - coalesce(prev_data, %(lo)s - interval '1 hour'))
               / 3600.0 - 1 AS prev_gap
    FROM lastseen
)
SELECT rule_id, metric, compressor_id, site_id, hour, gap::float8, gap >= warn AS firing,
       crit IS NOT NULL AND gap >= crit AS is_crit,
       CASE WHEN crit IS NOT NULL AND gap >= crit THEN crit ELSE warn END AS threshold,
       has_data AND prev_gap >= warn AS clear_emit
FROM gaps
WHERE hour >= %(start)s AND (gap >= warn OR (has_data AND prev_gap >= warn))
ORDER BY hour, compressor_id, rule_id
""")


def _relative_needs(rule_set: RuleSet) -> dict[int, set[str]]:
    needs: dict[int, set[str]] = {}
    for rule in rule_set.rules:
        if isinstance(rule, ThresholdRule) and rule.baseline is not None and rule.enabled:
            needs.setdefault(rule.baseline.days, set()).add(rule.metric)
    return needs


def fill_baselines(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                   first_day: date, last_day: date,
                   compressors: list[str] | None = None) -> None:
    """Compute (once) the baselines relative rules need for days ``first_day..last_day``.

    Must run inside a tenant transaction for ``org_id``.
    """
    days_list = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
    for days, metrics in sorted(_relative_needs(rule_set).items()):
        conn.execute(_FILL_BASELINES, {
            "org_id": org_id, "compressors": compressors, "metrics": sorted(metrics),
            "days_list": days_list, "days": days, "running_share": RUNNING_SHARE})


@dataclass(frozen=True)
class Row:
    """One raw evaluation row (used by the backtest, which needs episodes, not payloads)."""

    rule_id: str
    metric: str
    compressor_id: str
    site_id: str
    hour: datetime
    value: float | None
    firing: bool
    critical: bool
    threshold: float | None
    clear: bool


def evaluate_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                  start: datetime, end: datetime, compressors: list[str] | None = None,
                  lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> list[Row]:
    """Firing and clearing rows for ``[start, end]``; must run inside ``db.tenant(org_id)``."""
    start, end = _hour(start), _hour(end)
    if end < start:
        raise InputError(f"end {end.isoformat()} is before start {start.isoformat()}")
    out: list[Row] = []
    variants = level_variants(rule_set)
    if variants:
        span = max(max(v["m"], v["k"] + 1) for v in variants) + lookback_hours
        lo = start - timedelta(hours=span)
        fill_baselines(conn, rule_set, org_id, lo.date(), end.date(), compressors)
        # jsonb_to_recordset hides the row counts from the planner, which then picks one
        # index probe per (compressor, metric); a hash join over the hour range and a hashed
        # aggregate are several times faster at fleet scale. SET LOCAL: this transaction only.
        conn.execute("SET LOCAL enable_nestloop = off")
        conn.execute("SET LOCAL work_mem = '64MB'")
        cur = conn.execute(level_rules_sql(variants, lookback_hours, start == end), {
            "variants": Jsonb(variants), "org_id": org_id, "compressors": compressors,
            "running_share": RUNNING_SHARE,
            "lo": lo, "hi": end, "start": start, "end": end})
        for r in cur:
            out.append(Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]))
    nd = [r for r in rule_set.rules if isinstance(r, NoDataRule) and r.enabled]
    if nd:
        span = max(r.critical_after_hours or r.warning_after_hours for r in nd) + lookback_hours
        lo = start - timedelta(hours=span)
        params = [{"rule_id": r.id, "metric": r.metric,
                   "models": list(r.applies_to.models) if r.applies_to.models else None,
                   "sites": list(r.applies_to.sites) if r.applies_to.sites else None,
                   "orgs": list(r.applies_to.orgs) if r.applies_to.orgs else None,
                   "warn": r.warning_after_hours, "crit": r.critical_after_hours} for r in nd]
        cur = conn.execute(no_data_sql(), {
            "rules": Jsonb(params), "org_id": org_id, "compressors": compressors,
            "all_metrics": list(METRIC_BY_NAME), "lo": lo, "start": start, "end": end})
        for r in cur:
            out.append(Row(r[0], r[1] or "*", r[2], r[3], r[4], r[5], r[6], r[7],
                           float(r[8]), r[9]))
    out.sort(key=lambda r: (r.hour, r.compressor_id, r.rule_id))
    return out


def evaluate(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
             hours: tuple[datetime, datetime], compressors: list[str] | None = None,
             *, lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> EvaluationResult:
    """Evaluate ``rule_set`` for one organization over the hours ``[start, end]``.

    Runs in its own tenant transaction (row-level security confines it to ``org_id``) and
    writes nothing but missing baselines. See the module docstring for exactly which hours
    produce a Breach or a Clear; pass ``(h, h)`` for the pipeline's hourly run.

    Args:
        conn: a connection not inside another transaction (autocommit off is fine).
        rule_set: a validated set; stored sets stamp ``rule_set_id``/``rule_version``.
        org_id: the tenant.
        hours: first and last hour (UTC, inclusive; truncated to the hour).
        compressors: restrict to these compressor ids (None: every compressor of the org).
        lookback_hours: history read before ``start`` to reconstruct episode state.
    """
    start, end = hours
    by_id = {r.id: r for r in rule_set.rules}
    result = EvaluationResult()
    with db.tenant(conn, org_id):
        rows = evaluate_rows(conn, rule_set, org_id, start, end, compressors, lookback_hours)
    for row in rows:
        rule = by_id[row.rule_id]
        stamp = {"rule_set_id": rule_set.rule_set_id, "rule_version": rule_set.version}
        if row.firing:
            result.breaches.append(Breach(
                org_id=org_id, compressor_id=row.compressor_id, site_id=row.site_id,
                rule_id=row.rule_id, metric=row.metric,
                value=row.value, threshold=row.threshold,
                severity="critical" if row.critical else "warning", hour=row.hour,
                escalation_delay_hours=rule.escalation_delay_hours,
                diagnosis=rule.diagnosis, **stamp))
        if row.clear:
            result.clears.append(Clear(
                org_id=org_id, compressor_id=row.compressor_id, rule_id=row.rule_id,
                metric=row.metric, value=row.value, hour=row.hour, **stamp))
    return result


__all__ = ["EvaluationResult", "LevelRule", "RateOfChangeRule", "Row",
           "evaluate", "evaluate_rows", "fill_baselines"]
