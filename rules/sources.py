"""Where the rule engine's aggregates come from: PostgreSQL or the lake's gold table.

Both sources fill the same :class:`rules.engine.Grid`, so the hourly evaluation and a backtest
run the same rule code on the same numbers:

* :class:`PostgresSource` reads ``agg_compressor_hours`` inside the caller's tenant
  transaction, so row-level security confines it to the organization. The elements the rules
  need come back as one binary ``COPY`` whose rows all have the same width (NULL travels as
  NaN or -1), which numpy reads whole instead of building a Python object per value.
* :class:`GoldSource` reads the gold Delta table (the same rows and columns, partitioned by
  date) with DuckDB in one streaming scan filtered to the organization and the date
  partitions: a fleet's month is ~78 million (unit, metric, hour) rows, which PostgreSQL's
  row store returns far more slowly (bench/bench_rules.py, backtest part). Units still come
  from PostgreSQL through row-level security.

Baselines: a backtest computes them from the history it reads (nothing is written). The
hourly evaluation reads them from ``rule_baselines`` (:class:`BaselineStore`), where each
day's are stored once by the first evaluation that needs them, computed by the same
:func:`rules.engine.daily_baselines` from the window's aggregates.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from altaviz.core import db
from altaviz.core.duck import connect as duck_connect
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.engine import (
    DEFAULT_LOOKBACK_HOURS,
    Grid,
    Needs,
    Plan,
    Row,
    Units,
    baseline_values,
    count_key,
    evaluate_grid,
    history_dependent,
    hourly,
    midnight,
    plan,
)
from rules.schema import RuleSet

_NAN = float("nan")


class Source(Protocol):
    """Hourly aggregates of one organization as a :class:`Grid`."""

    def units(self, org_id: str, compressors: list[str] | None) -> Units:
        """The organization's compressors (all, or those listed), in id order."""
        ...

    def grid(self, units: Units, t0: datetime, end: datetime, needs: Needs) -> Grid:
        """The hours ``t0 .. end`` of ``units``."""
        ...


def read_units(conn: psycopg.Connection[Any], org_id: str,
               compressors: list[str] | None) -> Units:
    """The organization's compressors; ``conn`` is in a tenant transaction for ``org_id``."""
    rows = conn.execute(db.queries("rules")["units"],
                        {"org_id": org_id, "compressors": compressors}).fetchall()
    rows.sort(key=lambda r: r[0])
    return Units(org_id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                 [float(r[3]) for r in rows],
                 [None if r[4] is None else frozenset(r[4]) for r in rows])


#: Element types of the arrays a rule query returns: PostgreSQL type oid -> numpy dtype.
_ELEMENTS = {23: ">i4", 20: ">i8", 701: ">f8"}


def _array(buf: bytes | bytearray, pos: int, length: int) -> np.ndarray:
    """A one-dimensional binary array without NULL elements, as a native numpy array."""
    if length == -1:
        return np.empty(0)
    ndim, hasnull, oid = (int.from_bytes(buf[pos + i:pos + i + 4], "big", signed=True)
                          for i in (0, 4, 8))
    if ndim == 0:
        return np.empty(0)
    if ndim != 1 or hasnull or oid not in _ELEMENTS:
        raise RuntimeError(f"unexpected array in COPY output (ndim {ndim}, type {oid})")
    size = int.from_bytes(buf[pos + 12:pos + 16], "big")
    layout = np.dtype([("len", ">i4"), ("v", _ELEMENTS[oid])])
    elements = np.frombuffer(bytes(buf[pos + 20:pos + 20 + size * layout.itemsize]), layout)
    return elements["v"].astype(elements["v"].dtype.newbyteorder("="))


def _arrays(conn: psycopg.Connection[Any], query: sql.Composed | str,
            params: dict[str, Any]) -> Iterator[list[np.ndarray]]:
    """The rows of a binary ``COPY ... TO STDOUT`` whose every field is an array (int4, int8
    or float8, no NULL element), each row as numpy arrays.

    The rules' queries aggregate their values into a few rows of long arrays (one per hour,
    say): each row of a COPY costs the client a protocol message, and the arrays are read by
    numpy whole, without a Python object per value.
    """
    buf = bytearray()
    pos: int | None = None     # where the next row starts (None: the header is not read yet)
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        for data in copy:
            buf += data
            if pos is None:
                if len(buf) < 19:
                    continue
                pos = 19 + int.from_bytes(buf[15:19], "big")
            while len(buf) >= pos + 2:
                fields = int.from_bytes(buf[pos:pos + 2], "big", signed=True)
                if fields == -1:       # the trailer (the loop reads on to the end of COPY)
                    break
                at, row = pos + 2, []
                for _ in range(fields):
                    if len(buf) < at + 4:
                        break
                    length = int.from_bytes(buf[at:at + 4], "big", signed=True)
                    if len(buf) < at + 4 + max(length, 0):
                        break
                    row.append(_array(buf, at + 4, length))
                    at += 4 + max(length, 0)
                if len(row) < fields:  # the rest of the row is in the next message
                    break
                yield row
                pos = at
            if pos:
                del buf[:pos]
                pos = 0


def _element(column: str, metric: str) -> sql.Composable:
    """A metric's element of an ``agg_compressor_hours`` array (the position folds to a
    constant when the statement is planned: ``agg_metric_names()`` is immutable)."""
    return sql.SQL("a.{}[array_position(agg_metric_names(), {})]").format(
        sql.Identifier(column), sql.Literal(metric))


class PostgresSource:
    """``agg_compressor_hours`` of the organization whose tenant transaction ``conn`` is in."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def units(self, org_id: str, compressors: list[str] | None) -> Units:
        return read_units(self.conn, org_id, compressors)

    def grid(self, units: Units, t0: datetime, end: datetime, needs: Needs) -> Grid:
        hours = int((end - t0).total_seconds() // 3600) + 1
        grid = Grid(units, t0, hours)
        counted = sorted(set(needs.present) | {m for m in needs.data if m is not None})
        fields: list[sql.Composable] = [sql.SQL("coalesce({}, -1)").format(_element("n", m))
                                        for m in counted]
        if None in needs.data:   # a reading of any metric
            fields.append(sql.SQL("coalesce((0 < ANY(a.n))::int4, 0)"))
        fields += [sql.SQL("coalesce({}, 'NaN')").format(_element(c, m))
                   for m, c in needs.values]
        # The elements are taken from each row first (MATERIALIZED: the planner otherwise
        # joined and sorted the whole ~1 kB rows, spilling to disk), then the narrow rows get
        # their unit's column by a hash join and are gathered into one row per hour.
        query = sql.SQL("""
COPY (
    WITH a AS MATERIALIZED (
        SELECT a.hour, a.compressor_id{fields}
        FROM agg_compressor_hours a
        WHERE a.org_id = %(org_id)s AND a.hour >= %(t0)s AND a.hour <= %(end)s
    )
    SELECT array_agg(((extract(epoch FROM a.hour - %(t0)s::timestamptz) / 3600)::int8
                      * %(n)s + u.idx - 1)){aggs}
    FROM a JOIN unnest(%(units)s::text[]) WITH ORDINALITY AS u(compressor_id, idx)
      ON u.compressor_id = a.compressor_id
    GROUP BY a.hour
) TO STDOUT (FORMAT binary)""").format(
            fields=sql.SQL("").join(sql.SQL(", {} AS {}").format(f, sql.Identifier(f"f{i}"))
                                    for i, f in enumerate(fields)),
            aggs=sql.SQL("").join(sql.SQL(", array_agg(a.{})").format(sql.Identifier(f"f{i}"))
                                  for i in range(len(fields))))
        cells = hours * units.n
        n_counts = [np.full(cells, -1, dtype=np.int32) for _ in counted]
        anydata = np.zeros(cells, dtype=bool)
        values = [np.full(cells, _NAN) for _ in needs.values]
        params = {"t0": t0, "end": end, "n": units.n, "units": units.ids,
                  "org_id": units.org_id}
        if units.n:
            # (transaction-local: the hourly evaluation's tenant transaction, or a backtest's)
            self.conn.execute("SET LOCAL work_mem = '64MB'")
            for row in _arrays(self.conn, query, params):
                cell, rest = row[0], row[1:]
                for i in range(len(counted)):
                    n_counts[i][cell] = rest[i]
                if None in needs.data:
                    anydata[cell] = rest[len(counted)] > 0
                for i, v in enumerate(rest[len(fields) - len(values):]):
                    values[i][cell] = v
        shape = (hours, units.n)
        for m, n in zip(counted, n_counts, strict=True):
            grid.present[m] = (n >= 0).reshape(shape)
            grid.data[m] = (n > 0).reshape(shape)
        if None in needs.data:
            grid.data[None] = anydata.reshape(shape)
        for pair, v in zip(needs.values, values, strict=True):
            grid.values[pair] = v.reshape(shape)
        return grid


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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


def connect_duckdb(threads: int | None = None,
                   memory_limit: str = "4GB") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection for reading gold (delta extension loaded offline, UTC)."""
    return duck_connect(memory_limit=memory_limit, threads=threads)


class GoldSource:
    """The gold Delta table at ``gold_uri``; units from PostgreSQL (``conn``, through RLS)."""

    def __init__(self, conn: psycopg.Connection[Any], duck: duckdb.DuckDBPyConnection,
                 gold_uri: str) -> None:
        self.conn, self.duck, self.gold = conn, duck, f"delta_scan({_quote(gold_uri)})"

    def units(self, org_id: str, compressors: list[str] | None) -> Units:
        with db.tenant(self.conn, org_id):
            return read_units(self.conn, org_id, compressors)

    def grid(self, units: Units, t0: datetime, end: datetime, needs: Needs) -> Grid:
        """One streaming scan of the organization's rows in the grid's date partitions.

        DuckDB (all cores) gives each row its cell number (metric, hour, unit) and the values
        of the metric's needed columns; numpy scatters whole batches at once.
        Hour-major cells keep the scatter cache-friendly: gold is in hour order.
        """
        hours = int((end - t0).total_seconds() // 3600) + 1
        grid = Grid(units, t0, hours)
        watched = {m for m in needs.data if m is not None}
        if None in needs.data:
            watched |= set(METRIC_BY_NAME)
        metrics = sorted({m for m, _ in needs.values} | set(needs.present) | watched)
        if not metrics or units.n == 0:
            return grid
        cols_of = {m: [c for mm, c in needs.values if mm == m] for m in metrics}
        slots = max((len(c) for c in cols_of.values()), default=0)
        n, cells = units.n, units.n * hours
        present = np.zeros(len(metrics) * cells, dtype=bool)
        data = np.zeros(len(metrics) * cells, dtype=bool)
        # Slot s holds the s-th needed column of every metric that needs more than s columns
        # (slot 0 is dense over all metrics, most need one; later slots only over those).
        slot_of = np.full((slots, len(metrics)), -1, dtype=np.int64)
        blocks: list[np.ndarray] = []
        for s in range(slots):
            takers = [i for i, m in enumerate(metrics) if s == 0 or len(cols_of[m]) > s]
            slot_of[s, takers] = np.arange(len(takers))
            blocks.append(np.full(len(takers) * cells, _NAN))
        columns = sorted({c for _, c in needs.values})
        mrows = ", ".join(
            "(" + ", ".join([_quote(m), str(i), "true" if m in watched else "false"] + [
                str(columns.index(cols_of[m][s])) if s < len(cols_of[m]) else "NULL"
                for s in range(max(slots, 1))]) + ")" for i, m in enumerate(metrics))
        cnames = ", ".join(f"c{s}" for s in range(max(slots, 1)))
        self.duck.register("units_arrow", pa.table({
            "compressor_id": pa.array(units.ids, pa.string()),
            "idx": pa.array(range(n), pa.int64())}))
        # One hash join of every row with the (unit, metric) table gives its cell base.
        self.duck.execute(f"""
CREATE OR REPLACE TEMP TABLE um AS
SELECT u.compressor_id, mt.metric, mt.mi * {cells} + u.idx AS base, mt.nd, {cnames}
FROM units_arrow u CROSS JOIN (VALUES {mrows}) AS mt(metric, mi, nd, {cnames})""")
        self.duck.unregister("units_arrow")
        vcols = "".join(
            f", coalesce(CASE um.c{s} "
            + " ".join(f"WHEN {j} THEN a.{c}" for j, c in enumerate(columns))
            + f" END, 'NaN'::DOUBLE) AS v{s}" for s in range(slots))
        cur = self.duck.execute(f"""
SELECT (um.base + CAST((epoch(a.hour) - epoch($t0)) // 3600 AS BIGINT) * {n}) * 2
       + CASE WHEN um.nd AND a.n > 0 THEN 1 ELSE 0 END AS code{vcols}
FROM {self.gold} a JOIN um ON um.compressor_id = a.compressor_id AND um.metric = a.metric
WHERE a.org_id = $org AND a.date >= $dlo AND a.date <= $dhi
  AND a.hour >= $t0 AND a.hour <= $hi""", {
            "org": units.org_id, "t0": t0, "hi": end, "dlo": t0.date().isoformat(),
            "dhi": end.date().isoformat()})
        for batch in _prefetched(cur.to_arrow_reader(1 << 20)):
            code = batch.column("code").to_numpy()
            cell = code >> 1
            present[cell] = True
            if watched:
                data[cell[(code & 1).astype(bool)]] = True
            if slots:
                blocks[0][cell] = batch.column("v0").to_numpy()
            if slots > 1:
                mi = cell // cells
                within = cell - mi * cells
                for s in range(1, slots):
                    k = slot_of[s, mi]
                    ok = k >= 0
                    blocks[s][k[ok] * cells + within[ok]] = batch.column(f"v{s}").to_numpy()[ok]
        shape = (hours, n)
        for i, m in enumerate(metrics):
            grid.present[m] = present[i * cells:(i + 1) * cells].reshape(shape)
            grid.data[m] = data[i * cells:(i + 1) * cells].reshape(shape)
            for s, c in enumerate(cols_of[m]):
                j = int(slot_of[s, i])
                grid.values[(m, c)] = blocks[s][j * cells:(j + 1) * cells].reshape(shape)
        if None in needs.data:
            anydata = np.zeros(shape, dtype=bool)
            for m in METRIC_BY_NAME:
                anydata |= grid.data[m]
            grid.data[None] = anydata
        return grid


def computed_baselines(p: Plan, grid: Grid) -> dict[tuple[str, int], np.ndarray]:
    """The plan's baselines computed from the grid (which starts at
    :meth:`Plan.baseline_history_start`), per hour of the grid."""
    out: dict[tuple[str, int], np.ndarray] = {}
    fits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key, days in p.baselines:
        med, n = baseline_values(grid, key, days, p.lo.date(), p.end.date(), fits)
        out[(key, days)] = hourly(med, p.lo.date(), grid)
        out[(count_key(key), days)] = hourly(n.astype(np.float64), p.lo.date(), grid)
    return out


class BaselineStore:
    """Baselines kept in ``rule_baselines``: each (unit, metric, length, day) computed once,
    by the first evaluation that needs it, then looked up (``conn`` is in the tenant
    transaction of the organization evaluated).

    A baseline is stored even when its window held no running hour (``n = 0``, no median: a
    metric the unit does not have, a unit shut in all week), so the next evaluation does not
    read the window again for it.
    """

    def __init__(self, conn: psycopg.Connection[Any], source: Source) -> None:
        self.conn, self.source = conn, source

    def baselines(self, p: Plan, grid: Grid) -> dict[tuple[str, int], np.ndarray]:
        """The plan's baselines per hour of ``grid``, computing and storing missing ones."""
        if not p.baselines:
            return {}
        first, last = p.lo.date(), p.end.date()
        med, count, found = self._read(p, grid.units, first, last)
        missing = ~found
        if missing.any():
            self._fill(p, grid.units, first, med, count, missing)
        out = {need: hourly(med[i], first, grid) for i, need in enumerate(p.baselines)}
        for i, (key, days) in enumerate(p.baselines):
            out[(count_key(key), days)] = hourly(count[i], first, grid)
        return out

    def _read(self, p: Plan, units: Units, first: date,
              last: date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored values (need x day x unit; NaN: none), their running hours and whether a
        row exists."""
        n_days = (last - first).days + 1
        med = np.full((len(p.baselines), n_days, units.n), _NAN)
        count = np.zeros(med.shape)
        found = np.zeros(med.shape, dtype=bool)
        if units.n == 0:
            return med, count, found
        params = {"org_id": units.org_id, "units": units.ids, "first": first, "last": last,
                  "metrics": [m for m, _ in p.baselines], "days": [d for _, d in p.baselines]}
        for k, d, u, m, n in _arrays(self.conn, db.queries("rules")["stored_baselines"],
                                     params):
            med[k, d, u] = m
            count[k, d, u] = n
            found[k, d, u] = True
        return med, count, found

    def _fill(self, p: Plan, units: Units, first: date, med: np.ndarray, count: np.ndarray,
              missing: np.ndarray) -> None:
        """Compute the missing baselines (into ``med``) and store them."""
        days_missing = np.nonzero(missing.any(axis=(0, 2)))[0]
        lo_day = first + timedelta(days=int(days_missing[0]))
        hi_day = first + timedelta(days=int(days_missing[-1]))
        which = np.asarray(missing.any(axis=(0, 1)))
        subset = units.subset(which)
        back = max(d for _, d in p.baselines) + 1
        t0 = midnight(lo_day - timedelta(days=back))
        end = midnight(hi_day - timedelta(days=1)) - timedelta(hours=1)
        history = self.source.grid(subset, t0, end, p.baseline_needs())
        cols = np.nonzero(which)[0]
        rows: dict[str, list[Any]] = {k: [] for k in ("ids", "metrics", "days", "day",
                                                        "median", "n")}
        fits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for k, (metric, days) in enumerate(p.baselines):
            m, n = baseline_values(history, metric, days, lo_day, hi_day, fits)
            off = (lo_day - first).days
            for d in range(m.shape[0]):
                gap = missing[k, off + d, cols]
                if not gap.any():
                    continue
                med[k, off + d, cols[gap]] = m[d, gap]
                count[k, off + d, cols[gap]] = n[d, gap]
                rows["ids"] += [subset.ids[i] for i in np.nonzero(gap)[0].tolist()]
                rows["metrics"] += [metric] * int(gap.sum())
                rows["days"] += [days] * int(gap.sum())
                rows["day"] += [lo_day + timedelta(days=d)] * int(gap.sum())
                rows["median"] += [x if x == x else None for x in m[d, gap].tolist()]
                rows["n"] += n[d, gap].tolist()
        self.conn.execute(db.queries("rules")["store_baselines"],
                          {"org_id": units.org_id, **rows})


def evaluation_rows(source: Source, rule_set: RuleSet, org_id: str, start: datetime,
                    end: datetime, compressors: list[str] | None = None,
                    lookback_hours: int = DEFAULT_LOOKBACK_HOURS, *, stored: bool = False,
                    threads: int = 1) -> list[Row]:
    """Firing and clearing rows of ``rule_set`` for ``[start, end]`` from ``source``.

    ``stored``: baselines from ``rule_baselines`` (the source is a :class:`PostgresSource`,
    in the organization's tenant transaction), computing and storing missing ones; otherwise
    computed from the history read, writing nothing.

    One fast path, for a single hour with stored (or no) baselines, the hourly evaluation:
    the recent hours of every unit are read first, the older ones only for the units whose
    rows depend on them (:func:`rules.engine.history_dependent`: a unit clearing without a
    recent breach, a unit without readings now or an hour ago). Its rows equal those of the
    whole grid (tests/rules/test_equivalence.py evaluates single hours through it); it reads
    :attr:`Plan.recent_hours` (5 with the default rules) instead of the 19 hours of the
    no-data rules' history for nearly every unit (bench/bench_rules.py, latest part).
    """
    p = plan(rule_set, start, end, lookback_hours)
    if not p.variants and not p.no_data:
        return []
    units = source.units(org_id, compressors)
    needs, t0 = p.needs(), p.first_hour
    if p.baselines and not stored:
        extra = p.baseline_needs()
        needs = Needs(tuple(sorted(set(needs.values) | set(extra.values))), needs.present,
                      needs.data)
        t0 = min(t0, p.baseline_history_start())
    recent = p.end - timedelta(hours=p.recent_hours - 1)
    one_hour = p.start == p.end and t0 == p.first_hour and recent > t0
    grid = source.grid(units, recent if one_hour else t0, p.end, needs)
    if one_hour:
        grid = grid.widened(t0)
    if not p.baselines:
        bases: dict[tuple[str, int], np.ndarray] = {}
    elif stored:
        assert isinstance(source, PostgresSource)
        bases = BaselineStore(source.conn, source).baselines(p, grid)
    else:
        bases = computed_baselines(p, grid)
    if one_hour:
        deep = history_dependent(p, grid, bases)
        if deep.any():
            older = source.grid(units.subset(deep), t0, recent - timedelta(hours=1), needs)
            grid.put(older, np.nonzero(deep)[0])
    return evaluate_grid(p, grid, bases, threads)


__all__ = ["BaselineStore", "GoldSource", "PostgresSource", "Source", "computed_baselines",
           "connect_duckdb", "evaluation_rows", "read_units"]
