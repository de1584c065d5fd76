"""Rule evaluation over ``sensor_readings_agg``, vectorized in PostgreSQL.

One SQL statement evaluates every threshold and rate-of-change rule: it is generated from the
rule set with one branch per (rule, model variant) whose metric, column, thresholds, window
frames and scope are literals (``psycopg.sql.Literal``), so each aggregate row meets a few plain
comparisons; the running gate (the hours each unit ran) and the baselines are read once and
shared by every branch. One more statement evaluates the no-data rules. Python only turns the
few resulting rows into :class:`Breach`/:class:`Clear` objects. (The earlier form, one statement
joining the rule set as a JSON parameter table, is kept in tests/rules/reference_evaluate.py;
tests/rules/test_equivalence.py holds the two to identical results.) The pipeline's one-hour
evaluation computes every variant in a single grouping of the pivot (:func:`_single_all`);
fleet-scale backtests run the same semantics over the lake's gold table in
rules/duck_engine.py.

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

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from altaviz.core import db
from altaviz.core.errors import InputError, ServiceError
from altaviz.core.payloads import Breach, Clear
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.parallel import extra_connections, in_parallel
from rules.schema import (
    RUNNING_SHARE,
    Level,
    LevelRule,
    NoDataRule,
    RateOfChangeRule,
    RuleSet,
    ThresholdRule,
)

log = logging.getLogger(__name__)
DEFAULT_LOOKBACK_HOURS = 6
#: The fewest units per connection worth splitting a one-hour evaluation over another one.
SPLIT_MIN_UNITS = 1000
#: How long to wait for a pooled connection before evaluating on one (seconds).
POOL_WAIT_S = 1.0


@dataclass
class EvaluationResult:
    """Breaches and clears of one evaluation, ordered by hour."""

    breaches: list[Breach] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)


def _hour(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise InputError(f"hour {ts.isoformat()} has no time zone; pass UTC datetimes")
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Variant:
    """One (rule, model variant): the thresholds and scope one generated SQL branch uses.

    A rule with per-model overrides becomes one variant per overridden model plus a default
    variant for every other model in scope, so each branch compares with literal thresholds.
    """

    vid: int
    rule: LevelRule
    model: str | None                  # an overridden model, or None: the default variant
    models: tuple[str, ...] | None     # default variant: the scope's models (None: all)
    except_models: tuple[str, ...]     # default variant: models that have their own variant
    first: Level
    critical: Level | None
    clear: Level

    @property
    def m(self) -> int:
        return self.rule.persistence.of

    @property
    def n(self) -> int:
        return self.rule.persistence.hours

    @property
    def k(self) -> int:
        return self.rule.clear_after_hours


def variants_of(rule_set: RuleSet) -> list[Variant]:
    """Expand the enabled threshold/rate-of-change rules into variants (see :class:`Variant`)."""
    out: list[Variant] = []
    for rule in rule_set.rules:
        if isinstance(rule, NoDataRule) or not rule.enabled:
            continue
        scope = rule.applies_to
        choices: list[tuple[str | None, tuple[str, ...] | None]] = [
            (m, None) for m in rule.models]
        choices.append((None, tuple(scope.models) if scope.models is not None else None))
        for model, models in choices:
            warning, critical, clear = rule.levels_for(model)
            first = warning if warning is not None else critical
            assert first is not None
            out.append(Variant(len(out), rule, model, models, tuple(rule.models), first,
                               critical, clear))
    return out


def _num(x: float) -> sql.Composable:
    # Typed float8 like the reference evaluation's parameters (tests/rules/reference_evaluate.py),
    # so every expression (e.g. percent / 100.0) is evaluated in the same type and gives the
    # same bits.
    return sql.SQL("{}::float8").format(sql.Literal(float(x)))


def _offset(level: Level) -> sql.Composable | None:
    """``least(delta, percent% of |base|)`` over the parts given (None: absolute only)."""
    parts: list[sql.Composable] = []
    if level.delta is not None:
        parts.append(_num(level.delta))
    if level.percent is not None:
        parts.append(sql.SQL("{} / 100.0 * abs(base)").format(_num(level.percent)))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else sql.SQL("least({}, {})").format(*parts)


def _limit(level: Level, cmp: str) -> sql.Composable:
    """The level as a value for ``above``/``below`` (whichever of absolute/relative first)."""
    off = _offset(level)
    rel = None if off is None else sql.SQL("(base {} {})").format(
        sql.SQL("+" if cmp == "above" else "-"), off)
    if level.absolute is None:
        assert rel is not None
        return rel
    if rel is None:
        return _num(level.absolute)
    return sql.SQL("{}({}, {})").format(sql.SQL("least" if cmp == "above" else "greatest"),
                                         _num(level.absolute), rel)


def _beyond_lit(level: Level, cmp: str, normal: bool = False) -> sql.Composable:
    """'v is beyond ``level``' (or, with ``normal``, strictly on the normal side) as SQL."""
    if cmp == "either":
        off = _offset(level)
        assert off is not None
        expr = sql.SQL("abs(v - base) {} {}").format(sql.SQL("<" if normal else ">="), off)
    else:
        op = {("above", False): ">=", ("below", False): "<=",
              ("above", True): "<", ("below", True): ">"}[(cmp, normal)]
        expr = sql.SQL("v {} {}").format(sql.SQL(op), _limit(level, cmp))
    return sql.SQL("coalesce({}, false)").format(expr)


def _threshold_lit(level: Level | None, cmp: str) -> sql.Composable:
    """The threshold reported with a breach at this level."""
    if level is None:
        return sql.SQL("NULL::float8")
    if cmp != "either":
        return _limit(level, cmp)
    off = _offset(level)
    return sql.SQL("CASE WHEN v >= base THEN base + {off} ELSE base - {off} END").format(off=off)


def _in(column: str, values: tuple[str, ...], duck: bool = False) -> sql.Composable:
    if duck:   # DuckDB has no PostgreSQL array literals: a plain IN list
        quoted = ", ".join("'" + x.replace("'", "''") + "'" for x in values)
        return sql.SQL("{} IN ({})").format(sql.SQL(column), sql.SQL(quoted))
    return sql.SQL("{} = ANY({}::text[])").format(sql.SQL(column), sql.Literal(list(values)))


def _scope(v: Variant, duck: bool = False) -> sql.Composable:
    """Which compressors a variant applies to (the compressors table is ``c``; ``duck``:
    spelled for DuckDB, see rules/duck_engine.py)."""
    conds: list[sql.Composable] = []
    if v.model is not None:
        conds.append(sql.SQL("c.model = {}").format(sql.Literal(v.model)))
    else:
        if v.models is not None:
            conds.append(_in("c.model", v.models, duck))
        if v.except_models:
            conds.append(sql.SQL("NOT ({})").format(_in("c.model", v.except_models, duck)))
    scope = v.rule.applies_to
    if scope.sites is not None:
        conds.append(_in("c.site_id", tuple(scope.sites), duck))
    if scope.orgs is not None:
        conds.append(_in("c.org_id", tuple(scope.orgs), duck))
    return sql.SQL("").join(sql.SQL(" AND ") + c for c in conds)


def _flags(v: Variant) -> sql.Composable:
    """The per-row flags of a branch: beyond first/critical, normal, band, thresholds."""
    cmp = v.rule.comparison
    nr = _beyond_lit(v.clear, cmp, normal=True)
    bc = _beyond_lit(v.critical, cmp) if v.critical is not None else sql.SQL("false")
    return sql.SQL(
        "{bf} AS bf, {bc} AS bc, v IS NOT NULL AND {nr} AS nr, "
        "v IS NOT NULL AND NOT {nr} AS band, {f_thr} AS f_thr, {c_thr} AS c_thr").format(
        bf=_beyond_lit(v.first, cmp), bc=bc, nr=nr,
        f_thr=_threshold_lit(v.first, cmp), c_thr=_threshold_lit(v.critical, cmp))


def _value(v: Variant, running: str) -> sql.Composable:
    col = sql.SQL("a.{}").format(sql.Identifier(v.rule.column))
    if not v.rule.running_only:
        return col
    return sql.SQL("CASE WHEN {} THEN {} END").format(sql.SQL(running), col)


def _baseline_days(v: Variant) -> int | None:
    rule = v.rule
    return rule.baseline.days if isinstance(rule, ThresholdRule) and rule.baseline else None


@dataclass(frozen=True)
class _Pivot:
    """Where a branch finds its inputs in the pivot ``pv`` (one row per unit and hour)."""

    bits: dict[str, int]                    # metric -> bit of ``present``
    values: dict[tuple[str, str], str]      # (metric, column) -> pivot column
    bases: dict[tuple[str, int], str]       # (metric, baseline days) -> pivot column

    @classmethod
    def of(cls, variants: list[Variant]) -> _Pivot:
        metrics = sorted({v.rule.metric for v in variants})
        pairs = sorted({(v.rule.metric, v.rule.column) for v in variants})
        bases = sorted({(v.rule.metric, d) for v in variants
                        if (d := _baseline_days(v)) is not None})
        return cls({m: i for i, m in enumerate(metrics)},
                   {mc: f"v{i}" for i, mc in enumerate(pairs)},
                   {md: f"b{i}" for i, md in enumerate(bases)})


def _operands(v: Variant, pv: _Pivot) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """``(value, baseline, presence bit)`` of a variant's metric in the pivot row ``c``: the
    value is NULL where the running gate says no."""
    days = _baseline_days(v)
    col = sql.SQL("c.{}").format(sql.Identifier(pv.values[(v.rule.metric, v.rule.column)]))
    value = (sql.SQL("CASE WHEN c.speed_min_4h >= %(running_share)s * c.rated_rpm "
                     "THEN {} END").format(col) if v.rule.running_only else col)
    base = (sql.SQL("c.{}").format(sql.Identifier(pv.bases[(v.rule.metric, days)]))
            if days is not None else sql.SQL("NULL::float8"))
    return value, base, sql.Literal(1 << pv.bits[v.rule.metric])


def _rows(v: Variant, pv: _Pivot, dense: bool = False, duck: bool = False) -> sql.Composable:
    """The branch's input rows from the pivot: one per unit in scope and hour that has an
    aggregate of the rule's metric, with its value (NULL when the running gate says no) and
    baseline. (The pivot is aliased ``c``: it carries the compressor's columns.)"""
    value, base, bit = _operands(v, pv)
    if dense:   # every hour of every unit in scope; ``present``: the metric has a row
        return sql.SQL(
            "SELECT c.compressor_id, c.site_id, c.hour, c.present & {bit} <> 0 AS present, "
            "CASE WHEN c.present & {bit} <> 0 THEN {value} END AS v, {base} AS base "
            "FROM pv c WHERE true{scope}").format(
            value=value, base=base, bit=bit, scope=_scope(v, duck))
    return sql.SQL(
        "SELECT c.compressor_id, c.site_id, c.hour, {value} AS v, {base} AS base "
        "FROM pv c WHERE c.present & {bit} <> 0{scope}").format(
        value=value, base=base, bit=bit, scope=_scope(v))


def _earlier_breach(v: Variant) -> sql.Composable:
    """Whether unit ``g.compressor_id`` was beyond the first level at any hour in
    ``[lo, read_lo)``: the episode evidence older than the hours the one-hour path reads.
    Only asked for the rare unit that clears at ``end``, with index lookups."""
    days = _baseline_days(v)
    joins: list[sql.Composable] = []
    if v.rule.running_only:
        joins.append(sql.SQL(
            " LEFT JOIN sensor_readings_agg s ON s.org_id = %(org_id)s AND s.hour = a.hour"
            " AND s.compressor_id = a.compressor_id AND s.metric = 'speed_rpm'"
            " AND s.min_4h >= %(running_share)s * c.rated_rpm"))
    if days is not None:
        joins.append(sql.SQL(
            " LEFT JOIN rule_baselines b ON b.org_id = %(org_id)s"
            " AND b.compressor_id = a.compressor_id AND b.metric = {metric}"
            " AND b.days = {days} AND b.day = (a.hour AT TIME ZONE 'UTC')::date").format(
            metric=sql.Literal(v.rule.metric), days=sql.Literal(days)))
    return sql.SQL(
        "EXISTS (SELECT 1 FROM (SELECT {value} AS v, {base} AS base "
        "FROM sensor_readings_agg a "
        "JOIN compressors c ON c.org_id = %(org_id)s AND c.compressor_id = a.compressor_id"
        "{joins} WHERE a.org_id = %(org_id)s AND a.compressor_id = g.compressor_id "
        "AND a.metric = {metric} AND a.hour >= %(lo)s AND a.hour < %(read_lo)s) o "
        "WHERE {bf})").format(
        value=_value(v, "s.compressor_id IS NOT NULL"),
        base=sql.SQL("b.median") if days is not None else sql.SQL("NULL::float8"),
        joins=sql.SQL("").join(joins), metric=sql.Literal(v.rule.metric),
        bf=_beyond_lit(v.first, v.rule.comparison))


def _span(hours: int) -> sql.Composable:
    return sql.Literal(timedelta(hours=hours - 1))


def _range_branch(v: Variant, wl_hours: int, pv: _Pivot, duck: bool = False) -> sql.Composable:
    """Every hour of ``[start, end]`` for one variant, over each unit's dense hour grid.

    The pivot has a row for every unit and hour (absent aggregates are placeholder rows that
    are neither beyond nor normal), so "the last N hours" is "the last N rows": each count is a
    difference of running counts, ``cum - lag(cum, N)``. That is two window passes over one
    sort instead of one pass per frame length (same counts; bench/bench_rules.py, backtest
    part, measures the PostgreSQL engine).
    """
    cmp = v.rule.comparison
    lags = sql.SQL(", ").join(
        [sql.SQL("bfv")] + [sql.SQL("lag(bfv, {}) OVER byrow").format(sql.Literal(i))
                            for i in range(1, v.m)])
    worst = {"above": sql.SQL("greatest({})").format(lags),
             "below": sql.SQL("least({})").format(lags)}.get(cmp, sql.SQL("v"))
    rows = _rows(v, pv, dense=True, duck=duck)
    return sql.SQL("""
SELECT e.compressor_id, e.site_id, e.hour, CASE WHEN firing THEN worst ELSE v END AS value,
       firing, crit, CASE WHEN crit THEN c_thr ELSE f_thr END AS threshold, clear_emit
FROM (
    SELECT w.*, fire_cnt >= {n} AND norm_cnt < {k} AS firing, crit_cnt >= {n} AS crit,
           norm_cnt >= {k} AND NOT coalesce(prev_cleared, false)
               AND (recent_bf > 0 OR band_cnt > 0) AS clear_emit
    FROM (
        SELECT q.*,
               cbf - lag(cbf, {m}, 0) OVER byrow AS fire_cnt,
               cbc - lag(cbc, {m}, 0) OVER byrow AS crit_cnt,
               cnr - lag(cnr, {k}, 0) OVER byrow AS norm_cnt,
               cbf - lag(cbf, {l}, 0) OVER byrow AS recent_bf,
               cband - lag(cband, {q}, 0) OVER byrow AS band_cnt,
               lag(present) OVER byrow
                   AND lag(cnr, 1, 0) OVER byrow - lag(cnr, {q}, 0) OVER byrow >= {k}
                   AS prev_cleared,
               {worst} AS worst
        FROM (
            SELECT f.*,
                   count(*) FILTER (WHERE bf) OVER cum AS cbf,
                   count(*) FILTER (WHERE bc) OVER cum AS cbc,
                   count(*) FILTER (WHERE nr) OVER cum AS cnr,
                   count(*) FILTER (WHERE band) OVER cum AS cband
            FROM (SELECT compressor_id, site_id, hour, present, v,
                         CASE WHEN {bf} THEN v END AS bfv, {flags}
                  FROM ({rows}) o) f
            WINDOW cum AS (PARTITION BY compressor_id ORDER BY hour
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ) q
        WINDOW byrow AS (PARTITION BY compressor_id ORDER BY hour)
    ) w
    WHERE present AND hour >= %(start)s AND hour <= %(end)s
) e
WHERE firing OR clear_emit""").format(
        n=sql.Literal(v.n), k=sql.Literal(v.k), m=sql.Literal(v.m), q=sql.Literal(v.k + 1),
        l=sql.Literal(wl_hours), worst=worst, flags=_flags(v), rows=rows,
        bf=_beyond_lit(v.first, cmp))


def _single_branch(v: Variant,
                   pv: _Pivot) -> sql.Composable:
    """The hour ``end`` alone for one variant: one GROUP BY over each unit's last hours."""
    cmp = v.rule.comparison
    in_m = sql.SQL("hour > %(end)s - {} * interval '1 hour'").format(sql.Literal(v.m))
    worst = {"above": sql.SQL("max(v) FILTER (WHERE bf AND {})").format(in_m),
             "below": sql.SQL("min(v) FILTER (WHERE bf AND {})").format(in_m)}.get(
        cmp, sql.SQL("max(v) FILTER (WHERE hour = %(end)s)"))
    return sql.SQL("""
SELECT compressor_id, site_id, %(end)s::timestamptz AS hour,
       CASE WHEN firing THEN worst ELSE v END AS value, firing, crit,
       CASE WHEN crit THEN c_thr ELSE f_thr END AS threshold, clear_emit
FROM (
    SELECT compressor_id, site_id, worst, v, f_thr, c_thr,
           fire_cnt >= {n} AND norm_cnt < {k} AS firing, crit_cnt >= {n} AS crit,
           norm_cnt >= {k} AND prev_norm_cnt < {k}
               AND (recent_bf > 0 OR band_cnt > 0 OR {earlier}) AS clear_emit
    FROM (
        SELECT compressor_id, site_id,
               count(*) FILTER (WHERE bf AND {in_m}) AS fire_cnt,
               count(*) FILTER (WHERE bc AND {in_m}) AS crit_cnt,
               count(*) FILTER (WHERE nr AND hour > %(end)s - {k} * interval '1 hour')
                   AS norm_cnt,
               count(*) FILTER (WHERE nr AND hour > %(end)s - ({k} + 1) * interval '1 hour'
                                         AND hour < %(end)s) AS prev_norm_cnt,
               count(*) FILTER (WHERE bf AND hour < %(end)s) AS recent_bf,
               count(*) FILTER (WHERE hour = %(end)s - {k} * interval '1 hour'
                                         AND v IS NOT NULL AND NOT nr) AS band_cnt,
               {worst} AS worst,
               max(v) FILTER (WHERE hour = %(end)s) AS v,
               max(f_thr) FILTER (WHERE hour = %(end)s) AS f_thr,
               max(c_thr) FILTER (WHERE hour = %(end)s) AS c_thr,
               bool_or(hour = %(end)s) AS has_now
        FROM (SELECT compressor_id, site_id, hour, v, {flags} FROM ({rows}) o) f
        GROUP BY compressor_id, site_id
    ) g
    WHERE has_now
) e
WHERE firing OR clear_emit""").format(
        n=sql.Literal(v.n), k=sql.Literal(v.k), in_m=in_m, worst=worst, flags=_flags(v),
        rows=_rows(v, pv), earlier=_earlier_breach(v))


def _single_all(variants: list[Variant], pv: _Pivot) -> sql.Composable:
    """The hour ``end`` for every variant in ONE grouping of the pivot (one sort, one pass).

    Per variant the same counts as a per-variant GROUP BY over each unit's last hours would
    give (the rows of a variant are the pivot rows with its metric present; a row without it
    has a NULL value and no presence, so it adds to no count), then one output row per
    (unit, variant) via LATERAL VALUES. Compared with 21 separate branches (each a scan, a
    sort and a grouping of the same 22,500 rows at 4,500 units), the pivot is scanned and
    sorted once. Hours are compared as ``age`` (whole hours before ``end``, an integer column
    of the pivot) rather than as ``end - N * interval`` (a timestamptz computation per row and
    count that cost more than the counting).
    """
    laterals: list[sql.Composable] = []
    aggs: list[sql.Composable] = []
    rows: list[sql.Composable] = []
    ends: list[sql.Composable] = []
    for i, v in enumerate(variants):
        value, base, bit = _operands(v, pv)
        li = sql.Identifier(f"l{i}")
        laterals.append(sql.SQL(
            "CROSS JOIN LATERAL (SELECT z.p, z.v, {flags} FROM (SELECT c.present & {bit} <> 0 "
            "AS p, CASE WHEN c.present & {bit} <> 0 THEN {value} END AS v, {base} AS base) z) "
            "AS {li}").format(flags=_flags(v), bit=bit, value=value, base=base, li=li))
        in_m = sql.SQL("c.age < {m}").format(m=sql.Literal(v.m))
        cmp = v.rule.comparison
        a = f"a{i}_"
        worst = {"above": sql.SQL("max({li}.v) FILTER (WHERE {li}.bf AND {in_m})"),
                 "below": sql.SQL("min({li}.v) FILTER (WHERE {li}.bf AND {in_m})")}.get(
            cmp, sql.SQL("NULL::float8")).format(li=li, in_m=in_m)
        aggs.append(sql.SQL(
            "count(*) FILTER (WHERE {li}.bf AND {in_m}) AS {fire}, "
            "count(*) FILTER (WHERE {li}.bc AND {in_m}) AS {crit}, "
            "count(*) FILTER (WHERE {li}.nr AND c.age < {k}) AS {norm}, "
            "count(*) FILTER (WHERE {li}.nr AND c.age BETWEEN 1 AND {k}) AS {prev}, "
            "count(*) FILTER (WHERE {li}.bf AND c.age > 0) AS {rbf}, "
            "count(*) FILTER (WHERE c.age = {k} AND {li}.v IS NOT NULL AND NOT {li}.nr) "
            "AS {band}, "
            "{worst} AS {worst_n}").format(
            li=li, in_m=in_m, k=sql.Literal(v.k), worst=worst,
            **{x: sql.Identifier(a + x) for x in ("fire", "crit", "norm", "prev", "rbf",
                                                  "band")},
            worst_n=sql.Identifier(a + "worst")))
        # The hour ``end`` itself: read from the unit's one row there (the pivot is dense).
        ends.append(sql.SQL(
            "{li}.v AS {vnow}, CASE WHEN {li}.p THEN {li}.f_thr END AS {ft}, "
            "CASE WHEN {li}.p THEN {li}.c_thr END AS {ct}, {li}.p AS {now}").format(
            li=li, **{x: sql.Identifier(a + x) for x in ("vnow", "ft", "ct", "now")}))
        g = {x: sql.SQL("g.{}").format(sql.Identifier(a + x))
             for x in ("fire", "crit", "norm", "prev", "rbf", "band", "worst")}
        g |= {x: sql.SQL("e.{}").format(sql.Identifier(a + x))
              for x in ("vnow", "ft", "ct", "now")}
        if cmp == "either":
            g["worst"] = g["vnow"]
        ok = sql.SQL("({now} AND true{scope})").format(now=g["now"], scope=_scope(v))
        firing = sql.SQL("{ok} AND {fire} >= {n} AND {norm} < {k}").format(
            ok=ok, n=sql.Literal(v.n), k=sql.Literal(v.k), **g)
        rows.append(sql.SQL(
            "({rule_id}, {metric}, CASE WHEN {firing} THEN {worst} ELSE {vnow} END, {firing}, "
            "{crit} >= {n}, CASE WHEN {crit} >= {n} THEN {ct} ELSE {ft} END, "
            "{ok} AND {norm} >= {k} AND {prev} < {k} AND ({rbf} > 0 OR {band} > 0 OR {earlier}))"
        ).format(rule_id=sql.Literal(v.rule.id), metric=sql.Literal(v.rule.metric),
                 firing=firing, ok=ok, n=sql.Literal(v.n), k=sql.Literal(v.k),
                 earlier=_earlier_breach(v), **g))
    return sql.SQL("""
SELECT x.rule_id, x.metric, g.compressor_id, g.site_id, %(end)s::timestamptz AS hour,
       x.value, x.firing, x.crit, x.threshold, x.clear_emit
FROM (
    SELECT c.compressor_id, c.site_id, c.model, c.org_id, {aggs}
    FROM pv c {laterals}
    GROUP BY c.compressor_id, c.site_id, c.model, c.org_id
) g
JOIN (
    SELECT c.compressor_id, {ends} FROM pv c {laterals} WHERE c.age = 0
) e ON e.compressor_id = g.compressor_id
CROSS JOIN LATERAL (SELECT g.model, g.site_id, g.org_id) c
CROSS JOIN LATERAL (VALUES {rows}) AS x(rule_id, metric, value, firing, crit, threshold,
                                          clear_emit)
WHERE x.firing OR x.clear_emit""").format(
        aggs=sql.SQL(", ").join(aggs), laterals=sql.SQL(" ").join(laterals),
        ends=sql.SQL(", ").join(ends),
        rows=sql.SQL(", ").join(rows))


def level_rules_sql(variants: list[Variant], lookback_hours: int,
                    single_hour: bool = False) -> sql.Composed:
    """The statement evaluating every threshold/rate-of-change variant.

    One branch per variant with its thresholds, metric, column, window frames and scope as
    literals, so each row meets a handful of comparisons instead of CASE expressions over a
    joined parameter table; the running gate (which hours each unit ran) and the baselines
    are read once and shared by every branch.
    """
    wl_hours = lookback_hours + max(v.k for v in variants) + 1
    pv = _Pivot.of(variants)
    branches = _single_all(variants, pv) if single_hour else sql.SQL("\nUNION ALL\n").join(
        sql.SQL("SELECT {rule_id} AS rule_id, {metric} AS metric, x.* FROM ({b}) x").format(
            rule_id=sql.Literal(v.rule.id), metric=sql.Literal(v.rule.metric),
            b=_range_branch(v, wl_hours, pv))
        for v in variants)
    metrics = sorted(pv.bits)

    def at(column: str, metric: str) -> sql.Composable:
        """A metric's element of an ``agg_compressor_hours`` array (the position folds to a
        constant when the statement is planned: ``agg_metric_names()`` is immutable)."""
        return sql.SQL("{}[array_position(agg_metric_names(), {})]").format(
            sql.Identifier(column), sql.Literal(metric))

    aggs: list[sql.Composable] = [
        sql.SQL("{} AS speed_min_4h").format(at("min_4h", "speed_rpm")),
        # One bit per metric present (n set, even with a NULL value: that is not absence).
        sql.SQL("{} AS present").format(sql.SQL(" + ").join(
            sql.SQL("CASE WHEN {} IS NOT NULL THEN {} ELSE 0 END").format(
                at("n", m), sql.Literal(1 << i)) for i, m in enumerate(metrics)))]
    aggs += [sql.SQL("{} AS {}").format(at(c, m), sql.Identifier(n))
             for (m, c), n in pv.values.items()]
    base_cols = [sql.SQL("max(median) FILTER (WHERE metric = {} AND days = {}) AS {}").format(
        sql.Literal(m), sql.Literal(d), sql.Identifier(n)) for (m, d), n in pv.bases.items()]
    bases = sql.SQL("") if not base_cols else sql.SQL("""
    LEFT JOIN (
        SELECT compressor_id, day, {base_cols} FROM rule_baselines
        WHERE org_id = %(org_id)s AND day >= (%(lo)s AT TIME ZONE 'UTC')::date
          AND day <= (%(hi)s AT TIME ZONE 'UTC')::date
        GROUP BY compressor_id, day
    ) bl ON bl.compressor_id = c.compressor_id AND bl.day = (g.hour AT TIME ZONE 'UTC')::date
""").format(base_cols=sql.SQL(", ").join(base_cols))
    return sql.SQL("""
WITH pv AS MATERIALIZED (
    -- Every hour any branch reads, read once as one row per unit and hour with the unit's
    -- columns and baselines: agg_compressor_hours already is that shape (migration 070), each
    -- branch's value one element of an array; units and hours without a row are present = 0.
    SELECT c.compressor_id, g.hour, coalesce(x.present, 0) AS present, {x_cols},
           (extract(epoch FROM %(hi)s::timestamptz - g.hour) / 3600)::int AS age,
           c.org_id, c.site_id, c.model, c.rated_rpm{base_names}
    FROM compressors c
    CROSS JOIN generate_series(%(read_lo)s::timestamptz, %(hi)s::timestamptz,
                               interval '1 hour') AS g(hour)
    LEFT JOIN (
        SELECT compressor_id, hour, {aggs}
        FROM agg_compressor_hours
        WHERE org_id = %(org_id)s AND hour >= %(read_lo)s AND hour <= %(hi)s
          AND (%(compressors)s::text[] IS NULL
               OR compressor_id = ANY(%(compressors)s::text[]))
    ) x ON x.compressor_id = c.compressor_id AND x.hour = g.hour{bases}
    WHERE c.org_id = %(org_id)s
      AND (%(compressors)s::text[] IS NULL OR c.compressor_id = ANY(%(compressors)s::text[]))
)
SELECT rule_id, metric, compressor_id, site_id, hour, value, firing, crit, threshold,
       clear_emit
FROM ({branches}) r
ORDER BY hour, compressor_id, rule_id
""").format(branches=branches, aggs=sql.SQL(", ").join(aggs), bases=bases,
            x_cols=sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(n)) for n in
                                      ["speed_min_4h", *pv.values.values()]),
            base_names=sql.SQL("").join(sql.SQL(", bl.{}").format(sql.Identifier(n))
                                        for n in pv.bases.values()))

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
    -- one agg_compressor_hours row per unit-hour (migration 070): data if any metric the
    -- rule watches has readings
    SELECT t.rule_id, t.compressor_id, a.hour
    FROM t JOIN agg_compressor_hours a
      ON a.org_id = %(org_id)s AND a.compressor_id = t.compressor_id
     AND a.hour >= %(lo)s AND a.hour <= %(end)s
    WHERE EXISTS (SELECT 1 FROM unnest(agg_metric_names(), a.n) AS u(metric, n)
                  WHERE u.n > 0
                    AND u.metric = ANY(CASE WHEN t.metric IS NULL THEN %(all_metrics)s::text[]
                                            ELSE ARRAY[t.metric] END))
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
    needs = sorted(_relative_needs(rule_set).items())
    if not needs:
        return
    # The planner cannot estimate how many baselines are missing (NOT EXISTS) and, guessing one,
    # picks nested loops over millions of hours, several times slower for a fleet day
    # (bench/bench_rules.py, daily baseline fill); the grouping sort also needs memory. Both
    # settings are restored for the rest of the transaction, whose one-hour path relies on index
    # nested loops.
    prev = conn.execute("SELECT current_setting('enable_nestloop'), "
                        "current_setting('work_mem')").fetchone()
    conn.execute("SET LOCAL enable_nestloop = off")
    conn.execute("SET LOCAL work_mem = '256MB'")
    try:
        for days, metrics in needs:
            conn.execute(db.queries("rules")["fill_baselines"], {
                "org_id": org_id, "compressors": compressors, "metrics": sorted(metrics),
                "days_list": days_list, "days": days, "running_share": RUNNING_SHARE},
                prepare=False)   # (a unit-list parameter: see evaluate_rows)
    finally:
        if prev is not None:
            conn.execute("SELECT set_config('enable_nestloop', %s, true), "
                         "set_config('work_mem', %s, true)", [prev[0], prev[1]])


def history_start(variants: list[Variant], start: datetime, lookback_hours: int) -> datetime:
    """The first hour the threshold rules read to evaluate from ``start``: persistence and
    clear windows plus ``lookback_hours`` of episode history. Every output hour depends only
    on the rows of its own span, so a range can be evaluated in independent chunks."""
    span = max(max(v.m, v.k + 1) for v in variants) + lookback_hours
    return start - timedelta(hours=span)


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


def _row_order(r: Row) -> tuple[datetime, str, str]:
    """The order of evaluation rows: by hour, unit and rule."""
    return r.hour, r.compressor_id, r.rule_id


def evaluate_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                  start: datetime, end: datetime, compressors: list[str] | None = None,
                  lookback_hours: int = DEFAULT_LOOKBACK_HOURS) -> list[Row]:
    """Firing and clearing rows for ``[start, end]``; must run inside ``db.tenant(org_id)``."""
    start, end = _hour(start), _hour(end)
    if end < start:
        raise InputError(f"end {end.isoformat()} is before start {start.isoformat()}")
    out: list[Row] = []
    variants = variants_of(rule_set)
    if variants:
        lo = history_start(variants, start, lookback_hours)
        fill_baselines(conn, rule_set, org_id, lo.date(), end.date(), compressors)
        conn.execute("SET LOCAL work_mem = '64MB'")
        # The few hours read sit in cache (the ETL just wrote them): a random page costs about
        # what a sequential one does. With the default 4.0 PostgreSQL 18 chose a parallel
        # sequential scan of the whole month partition for the one-hour path, slower than
        # the index scan (bench/bench_rules.py, latest part).
        conn.execute("SET LOCAL random_page_cost = 1.1")
        single = start == end
        # The one-hour path reads only the hours its counts need; older episode evidence is
        # looked up per unit when it matters (see _earlier_breach).
        read_lo = (end - timedelta(hours=max(max(v.m, v.k + 1) for v in variants) - 1)
                   if single else lo)
        # prepare=False: psycopg would prepare a statement run five times on a connection (the
        # hourly run on a pooled one), and PostgreSQL may then switch to a generic plan in
        # which the unit list is a parameter, not a constant it can hash: an order of
        # magnitude slower (bench/bench_rules.py, latest part, runs it five times).
        cur = conn.execute(level_rules_sql(variants, lookback_hours, single), {
            "org_id": org_id, "compressors": compressors, "running_share": RUNNING_SHARE,
            "lo": lo, "read_lo": read_lo, "hi": end, "start": start, "end": end},
            prepare=False)
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
        args = {"rules": Jsonb(params), "org_id": org_id, "compressors": compressors,
                "all_metrics": list(METRIC_BY_NAME), "lo": lo, "start": start, "end": end}
        if start == end:
            # Only units without data now or an hour ago can produce a row: evaluate just those.
            args["compressors"] = [r[0] for r in conn.execute(
                db.queries("rules")["no_data_candidates"], args, prepare=False)]
        nd_rows = (conn.execute(no_data_sql(), args, prepare=False)
                   if args["compressors"] != [] else ())
        for r in nd_rows:
            out.append(Row(r[0], r[1] or "*", r[2], r[3], r[4], r[5], r[6], r[7],
                           float(r[8]), r[9]))
    out.sort(key=_row_order)
    return out


def evaluate(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
             hours: tuple[datetime, datetime], compressors: list[str] | None = None,
             *, lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
             workers: int = 1, pool: ConnectionPool[Any] | None = None,
             split_min_units: int = SPLIT_MIN_UNITS) -> EvaluationResult:
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
        workers: connections a one-hour evaluation of at least ``workers *
            split_min_units`` units is split over (contiguous chunks of unit ids, each in its
            own tenant transaction on its own connection, opened like ``conn``); 1: ``conn``
            alone. Units are independent, so the rows equal one statement's. The worker
            passes ``settings.rules_connections``.
        pool: where the extra connections come from (the worker's pool); None: opened for
            this call and closed after it.
        split_min_units: the fewest units per connection worth another connection.
    """
    start, end = hours
    by_id = {r.id: r for r in rule_set.rules}
    result = EvaluationResult()
    rows = _rows_in_chunks(conn, rule_set, org_id, start, end, compressors, lookback_hours,
                           workers, pool, split_min_units)
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


def _rows_in_chunks(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                    start: datetime, end: datetime, compressors: list[str] | None,
                    lookback_hours: int, workers: int,
                    pool: ConnectionPool[Any] | None, split_min_units: int) -> list[Row]:
    """:func:`evaluate_rows` for the units, split over ``workers`` connections when it is
    one hour of enough units: one statement runs on one core, so chunks on several
    connections use several (bench/bench_rules.py, latest part, times both). The extra
    connections come from ``pool`` when given: a new backend also spends longer planning the
    statement (cold catalog caches) than one that planned it before."""
    units = compressors
    split = workers > 1 and _hour(start) == _hour(end)
    if split and units is None:
        with db.tenant(conn, org_id):
            units = [r[0] for r in conn.execute(db.queries("rules")["org_units"])]
    with contextlib.ExitStack() as stack:
        if split and units is not None and len(units) >= workers * split_min_units:
            extra = _extra(stack, conn, pool, workers - 1, org_id)
            if extra:
                return _split_rows([conn, *extra], rule_set, org_id, start, end, units,
                                   lookback_hours)
    with db.tenant(conn, org_id):
        return evaluate_rows(conn, rule_set, org_id, start, end, compressors, lookback_hours)


def _extra(stack: contextlib.ExitStack, conn: psycopg.Connection[Any],
           pool: ConnectionPool[Any] | None, n: int, org_id: str
           ) -> list[psycopg.Connection[Any]]:
    """``n`` more connections, given back when ``stack`` closes; none when they cannot be had
    (pool exhausted, max_connections reached): one statement still works."""
    try:
        if pool is not None:
            return [stack.enter_context(pool.connection(timeout=POOL_WAIT_S))
                    for _ in range(n)]
        extra = extra_connections(conn, n)
    except (ServiceError, PoolTimeout) as exc:
        log.warning("evaluating %s on one connection: %s", org_id, exc)
        return []
    for c in extra:
        stack.callback(c.close)
    return extra


def _split_rows(conns: list[psycopg.Connection[Any]], rule_set: RuleSet, org_id: str,
                start: datetime, end: datetime, units: list[str],
                lookback_hours: int) -> list[Row]:
    workers = len(conns)
    size = -(-len(units) // workers)
    chunks = [units[i:i + size] for i in range(0, len(units), size)]

    def job(chunk: list[str]) -> Callable[[psycopg.Connection[Any]], list[Row]]:
        def run(c: psycopg.Connection[Any]) -> list[Row]:
            with db.tenant(c, org_id):
                # the connections are the parallelism: no parallel workers on top of them
                c.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                return evaluate_rows(c, rule_set, org_id, start, end, chunk, lookback_hours)
        return run

    parts = in_parallel(conns, [job(chunk) for chunk in chunks])
    return sorted((r for part in parts for r in part), key=_row_order)


__all__ = ["SPLIT_MIN_UNITS", "EvaluationResult", "LevelRule",
           "RateOfChangeRule", "Row", "Variant", "evaluate", "evaluate_rows", "fill_baselines",
           "history_start", "variants_of"]
