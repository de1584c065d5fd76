"""Backtests evaluated over the gold Delta table: the fleet-scale engine.

A 30-day backtest of 4,500 units reads ~78 million (unit, metric, hour) rows. Read out of
PostgreSQL's long, row-wise ``sensor_readings_agg`` (and with the baselines filled first)
that takes far longer than the rules themselves (bench/bench_rules.py, backtest part, times
both engines); this engine reads the same aggregates column-wise from the ETL's gold table
(which holds exactly the rows and columns of ``sensor_readings_agg``, partitioned by date; see
``etl/gold.py``) with DuckDB, in one streaming scan filtered to the organization and the date
partitions, and scatters them into dense (unit x hour) arrays.

On the dense grid every "last N hours" count of the PostgreSQL engine's range path
(:func:`rules.evaluate._range_branch`: ``cum - lag(cum, N)`` over each unit's hour rows) is a
difference of cumulative sums along the hour axis, so each rule is a few dozen whole-array numpy
operations instead of window passes (a DuckDB port of the same window SQL is an order of
magnitude slower). The flags are the same IEEE-754 operations in the same order as the generated
SQL (``least``/``greatest`` ignore a missing baseline as PostgreSQL's ignore NULL:
``fmin``/``fmax``), so values and thresholds are bit-identical;
``tests/rules/test_duck_engine.py`` holds both engines to the same rows on randomized data
covering every rule shape.

* Units (model, site, rated speed) come from PostgreSQL's ``compressors`` in a tenant
  transaction; every gold read filters on ``org_id`` (tenant scoping).
* Baselines are computed here with the ``fill_baselines`` definition (median of the running
  hours' 1h means over the window days, NULL under 24 hours; PostgreSQL's ``percentile_cont``
  interpolation ``lo + (hi - lo) * 0.5``) and are not stored: a backtest writes nothing.
  Baselines stored before late data arrived can differ from these; on the same data both
  engines agree.
* No-data rules run on the same grid (the PostgreSQL engine's ``no_data_sql`` on arrays).
* Gold values are read with NULL as NaN: gold never holds NaN (the ETL drops non-finite
  readings), so the two cannot be confused.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa

from altaviz.core import db
from altaviz.core.duck import connect as duck_connect
from altaviz.core.errors import InputError
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.evaluate import (
    DEFAULT_LOOKBACK_HOURS,
    Row,
    Variant,
    history_start,
    variants_of,
)
from rules.evaluate import _hour as hour_of
from rules.schema import RUNNING_SHARE, Level, NoDataRule, RuleSet, ThresholdRule


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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


_NAN = float("nan")

def _prefetched(reader: pa.RecordBatchReader, depth: int = 3) -> Iterator[pa.RecordBatch]:
    """The reader's batches, pulled by a thread so DuckDB computes the next ones while numpy
    scatters the current one (DuckDB releases the GIL while it works)."""
    q: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(depth)

    def pull() -> None:
        try:
            for batch in reader:
                q.put(batch)
            q.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(exc)

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    while (item := q.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


class _Grid:
    """The organization's aggregates as dense arrays: unit ``u`` (``units`` order) and hour
    ``j`` (``t0 + j`` hours) of each needed (metric, column), NaN where no value, plus a
    presence mask per metric (a row exists, even with a NULL value)."""

    def __init__(self, units: pa.Table, t0: datetime, hours: int) -> None:
        self.t0, self.hours = t0, hours
        self.n = units.num_rows
        self.comp: list[str] = units.column("compressor_id").to_pylist()
        self.site: list[str] = units.column("site_id").to_pylist()
        self.model = np.array(units.column("model").to_pylist(), dtype=object)
        self.sites = np.array(self.site, dtype=object)
        self.orgs = np.array(units.column("org_id").to_pylist(), dtype=object)
        self.rated = np.asarray(units.column("rated_rpm").to_numpy(), dtype=np.float64)
        self.values: dict[tuple[str, str], np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self.data: dict[str, np.ndarray] = {}

    def load(self, con: duckdb.DuckDBPyConnection, gold: str, org_id: str,
             pairs: list[tuple[str, str]], more_metrics: set[str]) -> None:
        """One streaming scan of gold (the org's rows of the grid's date partitions).

        DuckDB (all cores) gives each row its cell number (metric, hour, unit) and the values
        of the metric's needed columns (at most two); numpy scatters whole batches at once.
        Hour-major cells (hour x units) keep the scatter cache-friendly: gold is in hour order.
        ``more_metrics`` are scanned for presence only (no-data rules). ``data[m]``: rows
        with readings (``n > 0``), what no-data rules count.
        """
        metrics = sorted({m for m, _ in pairs} | more_metrics)
        cols_of = {m: [c for mm, c in pairs if mm == m] for m in metrics}
        slots = max((len(c) for c in cols_of.values()), default=0)
        n, cells = self.n, self.n * self.hours
        # metric-major blocks: presence, readings (n > 0, only for ``more_metrics``), the
        # value of each metric's first column at the presence cell, and the second column of
        # the few metrics that need two in a compact block of its own
        present = np.zeros(len(metrics) * cells, dtype=bool)
        data = np.zeros(len(metrics) * cells, dtype=bool)
        first = np.full(len(metrics) * cells, _NAN)
        second_of = np.full(len(metrics), -1, dtype=np.int64)
        seconds = [i for i, m in enumerate(metrics) if len(cols_of[m]) > 1]
        second_of[seconds] = np.arange(len(seconds))
        second = np.full(len(seconds) * cells, _NAN) if seconds else None
        if slots > 2:
            raise InputError("a metric needs more than two aggregate columns")  # (none does)
        columns = sorted({c for _, c in pairs})
        mrows = ", ".join(
            "(" + ", ".join([_quote(m), str(i), "true" if m in more_metrics else "false"] + [
                str(columns.index(cols_of[m][s_])) if s_ < len(cols_of[m]) else "NULL"
                for s_ in range(2)]) + ")" for i, m in enumerate(metrics))
        # One hash join of every row with the (unit, metric) table gives its cell base.
        con.execute(f"""
CREATE OR REPLACE TEMP TABLE um AS
SELECT u.compressor_id, mt.metric, mt.mi * {cells} + u.idx AS base, mt.nd, mt.c0, mt.c1
FROM units u CROSS JOIN (VALUES {mrows}) AS mt(metric, mi, nd, c0, c1)""")
        vcols = "".join(
            f", coalesce(CASE um.c{s_} "
            + " ".join(f"WHEN {j} THEN a.{c}" for j, c in enumerate(columns))
            + f" END, 'NaN'::DOUBLE) AS v{s_}" for s_ in range(slots))
        hi = self.t0 + timedelta(hours=self.hours - 1)
        cur = _run(con, f"""
SELECT (um.base + CAST((epoch(a.hour) - epoch($t0)) // 3600 AS BIGINT) * {n}) * 2
       + CASE WHEN um.nd AND a.n > 0 THEN 1 ELSE 0 END AS code{vcols}
FROM {gold} a JOIN um ON um.compressor_id = a.compressor_id AND um.metric = a.metric
WHERE a.org_id = $org AND {_date_filter('a', self.t0, hi)}
  AND a.hour >= $t0 AND a.hour <= $hi""",
                   {"org": org_id, "t0": self.t0, "hi": hi})
        for batch in _prefetched(cur.to_arrow_reader(1 << 20)):
            code = batch.column("code").to_numpy()
            cell = code >> 1
            present[cell] = True
            if more_metrics:
                data[cell[(code & 1).astype(bool)]] = True
            if slots:
                first[cell] = batch.column("v0").to_numpy()
            if second is not None:
                mi = cell // cells
                k = second_of[mi]
                ok = k >= 0
                second[k[ok] * cells + (cell[ok] - mi[ok] * cells)] = (
                    batch.column("v1").to_numpy()[ok])
        shape = (self.hours, n)
        for i, m in enumerate(metrics):
            self.present[m] = present[i * cells:(i + 1) * cells].reshape(shape)
            self.data[m] = data[i * cells:(i + 1) * cells].reshape(shape)
            for s_, c in enumerate(cols_of[m]):
                block, j = (first, i) if s_ == 0 else (second, int(second_of[i]))
                assert block is not None
                self.values[(m, c)] = block[j * cells:(j + 1) * cells].reshape(shape)

    def running(self) -> np.ndarray:
        """Hours each unit ran the last 4 hours (the running gate)."""
        speed = self.values[("speed_rpm", "min_4h")]
        with np.errstate(invalid="ignore"):
            return np.asarray(speed >= RUNNING_SHARE * self.rated[None, :])

    def scope(self, v: Variant) -> np.ndarray:
        """Units a variant applies to (as rules.evaluate._scope)."""
        keep = np.ones(self.n, dtype=bool)
        if v.model is not None:
            keep &= self.model == v.model
        else:
            if v.models is not None:
                keep &= np.isin(self.model, list(v.models))
            if v.except_models:
                keep &= ~np.isin(self.model, list(v.except_models))
        scope = v.rule.applies_to
        if scope.sites is not None:
            keep &= np.isin(self.sites, list(scope.sites))
        if scope.orgs is not None:
            keep &= np.isin(self.orgs, list(scope.orgs))
        return keep


def _baselines(grid: _Grid, running: np.ndarray, metric: str, days: int, first_day: date,
               last_day: date) -> np.ndarray:
    """(units x hours) baseline of each hour's UTC day, as the ``fill_baselines`` query: day
    D's median over the running hours' 1h means of days D-(days+1) .. D-2 (NaN: none, or
    under 24 hours). The grid starts at a midnight at least days+1 days before first_day."""
    day0 = grid.t0.date()
    n_days = -(-grid.hours // 24)
    x = np.full((n_days * 24, grid.n), _NAN)
    x[:grid.hours] = np.where(running, grid.values[(metric, "mean")], _NAN)
    # (unit, day, hour), each day's hours sorted (NaN last): windows are then runs of sorted
    # days, which the stable (merging) sort exploits.
    daily = np.sort(np.ascontiguousarray(x.T).reshape(grid.n, n_days, 24), axis=2)
    out = np.full((grid.n, n_days), _NAN)
    for d in range((first_day - day0).days, (last_day - day0).days + 1):
        a = d - (days + 1)
        window = np.sort(daily[:, a:d - 1, :].reshape(grid.n, -1), axis=1, kind="stable")
        n = np.count_nonzero(~np.isnan(window), axis=1)
        lo = np.take_along_axis(window, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
        hi = np.take_along_axis(window, (n // 2)[:, None].clip(max=window.shape[1] - 1),
                                axis=1)[:, 0]
        med = np.where(n % 2 == 1, lo, lo + (hi - lo) * 0.5)
        out[:, d] = np.where(n >= 24, med, _NAN)
    hour_day = np.arange(grid.hours) // 24
    return np.ascontiguousarray(out.T[hour_day])


def _offset(level: Level, base: np.ndarray | None) -> np.ndarray | float | None:
    parts: list[np.ndarray | float] = []
    if level.delta is not None:
        parts.append(float(level.delta))
    if level.percent is not None:
        assert base is not None
        parts.append(float(level.percent) / 100.0 * np.abs(base))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.fmin(parts[0], parts[1])


def _limit(level: Level, cmp: str, base: np.ndarray | None) -> np.ndarray | float:
    off = _offset(level, base)
    rel = None
    if off is not None:
        assert base is not None
        rel = base + off if cmp == "above" else base - off
    if level.absolute is None:
        assert rel is not None
        return rel
    if rel is None:
        return float(level.absolute)
    return (np.fmin if cmp == "above" else np.fmax)(float(level.absolute), rel)


def _beyond(level: Level, cmp: str, v: np.ndarray, base: np.ndarray | None,
            normal: bool = False) -> np.ndarray:
    """As rules.evaluate._beyond_lit: NaN (NULL) compares False, i.e. coalesce(.., false)."""
    if cmp == "either":
        off = _offset(level, base)
        assert off is not None and base is not None
        dev = np.abs(v - base)
        return np.asarray(dev < off if normal else dev >= off)
    lim = _limit(level, cmp, base)
    if cmp == "above":
        return np.asarray(v < lim if normal else v >= lim)
    return np.asarray(v > lim if normal else v <= lim)


def _threshold(level: Level | None, cmp: str, v: np.ndarray,
               base: np.ndarray | None) -> np.ndarray | float:
    if level is None:
        return _NAN
    if cmp != "either":
        return _limit(level, cmp, base)
    off = _offset(level, base)
    assert off is not None and base is not None
    with np.errstate(invalid="ignore"):
        return np.where(v >= base, base + off, base - off)


def _lag(c: np.ndarray, n: int) -> np.ndarray:
    """lag(c, n, 0) along the hour axis (axis 0)."""
    out = np.zeros_like(c)
    if n < c.shape[0]:
        out[n:] = c[:c.shape[0] - n]
    return out


def _variant_rows(v: Variant, grid: _Grid, running: np.ndarray,
                  bases: dict[tuple[str, int], np.ndarray], lo_j: int, start_j: int,
                  wl_hours: int, hours: list[datetime]) -> list[Row]:
    """The firing/clear rows of one variant over the grid hours ``lo_j..``: the PostgreSQL
    engine's range branch, on arrays (one row per unit in scope, one column per hour)."""
    units = np.nonzero(grid.scope(v))[0]
    if units.size == 0:
        return []
    rule, cmp = v.rule, v.rule.comparison
    every = units.size == grid.n
    cols = slice(None) if every else units
    pres = grid.present[rule.metric][lo_j:, cols]
    v_all = grid.values[(rule.metric, rule.column)][lo_j:, cols]
    if rule.running_only:
        v_all = np.where(running[lo_j:, cols], v_all, _NAN)
    days = rule.baseline.days if isinstance(rule, ThresholdRule) and rule.baseline else None
    base = bases[(rule.metric, days)][lo_j:, cols] if days is not None else None
    with np.errstate(invalid="ignore"):
        has_v = ~np.isnan(v_all)
        bf = _beyond(v.first, cmp, v_all, base)
        bc = (_beyond(v.critical, cmp, v_all, base) if v.critical is not None
              else np.zeros_like(bf))
        normal = _beyond(v.clear, cmp, v_all, base, normal=True)
        nr, band = has_v & normal, has_v & ~normal
        f_thr = _threshold(v.first, cmp, v_all, base)
        c_thr = _threshold(v.critical, cmp, v_all, base)
    cbf, cbc = np.cumsum(bf, axis=0, dtype=np.int32), np.cumsum(bc, axis=0, dtype=np.int32)
    cnr, cband = np.cumsum(nr, axis=0, dtype=np.int32), np.cumsum(band, axis=0, dtype=np.int32)
    m, n, k = v.m, v.n, v.k
    fire_cnt, crit_cnt = cbf - _lag(cbf, m), cbc - _lag(cbc, m)
    norm_cnt = cnr - _lag(cnr, k)
    recent_bf = cbf - _lag(cbf, wl_hours)
    band_cnt = cband - _lag(cband, k + 1)
    prev_pres = np.zeros_like(pres)
    prev_pres[1:] = pres[:-1]
    prev_cleared = prev_pres & (_lag(cnr, 1) - _lag(cnr, k + 1) >= k)
    firing = (fire_cnt >= n) & (norm_cnt < k)
    crit = crit_cnt >= n
    clear = (norm_cnt >= k) & ~prev_cleared & ((recent_bf > 0) | (band_cnt > 0))
    out = pres & (firing | clear)
    out[:start_j - lo_j] = False
    tj, ui = np.nonzero(out)
    if ui.size == 0:
        return []
    if cmp == "either":
        worst_at = v_all[tj, ui]
    else:
        fill = -np.inf if cmp == "above" else np.inf
        bfv = np.where(bf, v_all, fill)
        pick = np.maximum if cmp == "above" else np.minimum
        worst_at = bfv[tj, ui]
        for s_ in range(1, m):
            ok = tj >= s_
            worst_at = np.where(ok, pick(worst_at, bfv[np.maximum(tj - s_, 0), ui]), worst_at)
        worst_at = np.where(np.isinf(worst_at), _NAN, worst_at)
    fi, cr, cl = firing[tj, ui], crit[tj, ui], clear[tj, ui]
    value = np.where(fi, worst_at, v_all[tj, ui])
    f_at = np.broadcast_to(f_thr, v_all.shape)[tj, ui]
    c_at = np.broadcast_to(c_thr, v_all.shape)[tj, ui]
    thr = np.where(cr, c_at, f_at)
    comps, sites = grid.comp, grid.site
    gu = units[ui].tolist()
    return [Row(rule.id, rule.metric, comps[u], sites[u], hours[t], val if val == val else None,
                f, c, th if th == th else None, e)
            for u, t, val, f, c, th, e in zip(gu, (tj + lo_j).tolist(), value.tolist(),
                                              fi.tolist(), cr.tolist(), thr.tolist(),
                                              cl.tolist(), strict=True)]


def _no_data_rows(r: NoDataRule, grid: _Grid, lo_j: int, start_j: int, end_j: int,
                  hours: list[datetime]) -> list[Row]:
    """One no-data rule over the grid hours ``lo_j..end_j``: the PostgreSQL engine's
    ``no_data_sql`` (hours since the last aggregate with readings, counted from ``lo - 1h``
    when there is none; a Clear at the first hour data is back after a silence)."""
    keep = np.ones(grid.n, dtype=bool)
    for values, have in ((r.applies_to.models, grid.model), (r.applies_to.sites, grid.sites),
                         (r.applies_to.orgs, grid.orgs)):
        if values is not None:
            keep &= np.isin(have, list(values))
    units = np.nonzero(keep)[0]
    if units.size == 0:
        return []
    watched = [r.metric] if r.metric is not None else sorted(METRIC_BY_NAME)
    has = np.zeros((end_j - lo_j + 1, units.size), dtype=bool)
    for m in watched:
        if m in grid.data:
            has |= grid.data[m][lo_j:end_j + 1, units]
    idx = np.arange(has.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(has, idx, -1), axis=0)    # -1: none yet
    prev = np.full_like(last, -1)
    prev[1:] = last[:-1]
    gap = idx - last
    prev_gap = idx - prev - 1
    warn, crit = r.warning_after_hours, r.critical_after_hours
    firing = gap >= warn
    is_crit = gap >= crit if crit is not None else np.zeros_like(firing)
    clear = has & (prev_gap >= warn)
    out = firing | clear
    out[:start_j - lo_j] = False
    tj, ui = np.nonzero(out)
    metric = r.metric or "*"
    comps, sites = grid.comp, grid.site
    return [Row(r.id, metric, comps[u], sites[u], hours[t], float(g), f, c,
                float(crit if c and crit is not None else warn), e)
            for u, t, g, f, c, e in zip(units[ui].tolist(), (tj + lo_j).tolist(),
                                        gap[tj, ui].tolist(), firing[tj, ui].tolist(),
                                        is_crit[tj, ui].tolist(), clear[tj, ui].tolist(),
                                        strict=True)]


def _rows(con: duckdb.DuckDBPyConnection, gold: str, units: pa.Table, rule_set: RuleSet,
          org_id: str, start: datetime, end: datetime, lookback_hours: int,
          threads: int) -> list[Row]:
    """Every firing/clear row: one scan into the grid, then each rule on arrays, on
    ``threads`` threads (numpy releases the GIL in sorts and ufuncs)."""
    variants = variants_of(rule_set)
    nd = [r for r in rule_set.rules if isinstance(r, NoDataRule) and r.enabled]
    firsts: list[datetime] = []
    needs: list[tuple[str, int]] = []
    lo = nd_lo = start
    if variants:
        lo = history_start(variants, start, lookback_hours)
        needs = sorted({(v.rule.metric, v.rule.baseline.days) for v in variants
                        if isinstance(v.rule, ThresholdRule) and v.rule.baseline is not None})
        back = max((d for _, d in needs), default=0) + 1
        firsts.append(datetime.combine(lo.date() - timedelta(days=back), datetime.min.time(),
                                       tzinfo=UTC))
    if nd:
        span = max(r.critical_after_hours or r.warning_after_hours for r in nd) + lookback_hours
        nd_lo = start - timedelta(hours=span)
        firsts.append(datetime.combine(nd_lo.date(), datetime.min.time(), tzinfo=UTC))
    if not firsts:
        return []
    t0 = min(firsts)
    n_hours = int((end - t0).total_seconds() // 3600) + 1
    grid = _Grid(units, t0, n_hours)
    pairs = {(v.rule.metric, v.rule.column) for v in variants}
    pairs |= {("speed_rpm", "min_4h")} | {(m, "mean") for m, _ in needs}
    more: set[str] = set()
    for r in nd:
        more |= {r.metric} if r.metric is not None else set(METRIC_BY_NAME)
    grid.load(con, gold, org_id, sorted(pairs), more)

    def j(t: datetime) -> int:
        return int((t - t0).total_seconds() // 3600)

    hours = [t0 + timedelta(hours=i) for i in range(n_hours)]
    out: list[Row] = []
    if variants:
        running = grid.running()
        with ThreadPoolExecutor(threads) as pool:
            bases = dict(zip(needs, pool.map(
                lambda md: _baselines(grid, running, md[0], md[1], lo.date(), end.date()),
                needs), strict=True))
            wl_hours = lookback_hours + max(v.k for v in variants) + 1
            for part in pool.map(lambda v: _variant_rows(v, grid, running, bases, j(lo),
                                                         j(start), wl_hours, hours), variants):
                out += part
    for r in nd:
        out += _no_data_rows(r, grid, j(nd_lo), j(start), j(end), hours)
    return out


def connect(threads: int | None = None, memory_limit: str = "4GB") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for backtests (delta extension loaded offline, UTC)."""
    return duck_connect(memory_limit=memory_limit, threads=threads)


def episode_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                 start: datetime, end: datetime, gold_uri: str,
                 lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
                 compressors: list[str] | None = None,
                 con: duckdb.DuckDBPyConnection | None = None, *,
                 threads: int = 1) -> list[Row]:
    """Firing/clear rows of ``[start, end]`` for one organization, evaluated in DuckDB.

    The same rows as :func:`rules.evaluate.evaluate_rows` on the same aggregates (ordered by
    hour, compressor, rule), read from the gold Delta table at ``gold_uri`` instead of
    PostgreSQL; ``conn`` only supplies the organization's compressors. Writes nothing.
    ``threads``: threads of the array work (``settings.rules_threads``); DuckDB's scan uses
    its own.
    """
    start, end = hour_of(start), hour_of(end)
    if end < start:
        raise InputError(f"end {end.isoformat()} is before start {start.isoformat()}")
    own = con is None
    duck = con if con is not None else connect()
    try:
        units = _units(conn, org_id, compressors)
        duck.register("units_arrow", units)
        duck.execute("CREATE OR REPLACE TEMP TABLE units AS "
                     "SELECT *, (row_number() OVER (ORDER BY compressor_id) - 1)::BIGINT AS idx "
                     "FROM units_arrow")
        duck.unregister("units_arrow")
        units = duck.execute("SELECT * FROM units ORDER BY idx").to_arrow_table()
        out = _rows(duck, _gold(gold_uri), units, rule_set, org_id, start, end,
                    lookback_hours, threads)
        out.sort(key=lambda r: (r.hour, r.compressor_id, r.rule_id))
        return out
    finally:
        if own:
            duck.close()


__all__ = ["connect", "episode_rows"]
