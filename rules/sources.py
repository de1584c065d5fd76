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
    daily_baselines,
    evaluate_grid,
    hourly,
    midnight,
    plan,
)
from rules.schema import RuleSet

_NAN = float("nan")
#: Bytes of COPY output parsed at a time (bounds the reader's buffer).
_CHUNK = 1 << 25


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
                 [float(r[3]) for r in rows])


def _binary_copy(conn: psycopg.Connection[Any], query: sql.Composed | str,
                 params: dict[str, Any], dtype: np.dtype[Any]) -> Iterator[np.ndarray]:
    """The rows of a binary ``COPY ... TO STDOUT`` whose every row has ``dtype``'s layout
    (field count, then each field's length and value), parsed in chunks."""
    size = dtype.itemsize
    pending = bytearray()
    header = 0           # bytes of the file header still to skip (0: not yet known)
    started = False
    with conn.cursor() as cur, cur.copy(query, params) as copy:
        for data in copy:
            pending += data
            if not started and len(pending) >= 19:
                header = 19 + int.from_bytes(pending[15:19], "big")
                started = True
            if started and len(pending) - header >= _CHUNK:
                whole = (len(pending) - header) // size * size
                yield np.frombuffer(bytes(pending[header:header + whole]), dtype)
                del pending[:header + whole]
                header = 0
    body = pending[header:]
    if body[-2:] != b"\xff\xff" or (len(body) - 2) % size:
        raise RuntimeError("unexpected COPY output (row layout)")
    if len(body) > 2:
        yield np.frombuffer(bytes(body[:-2]), dtype)


def _layout(ints: int, floats: int) -> np.dtype[Any]:
    """A binary COPY row of ``ints`` int4 then ``floats`` float8 fields, none NULL."""
    fields: list[tuple[str, str]] = [("nf", ">i2")]
    for i in range(ints):
        fields += [(f"li{i}", ">i4"), (f"i{i}", ">i4")]
    for i in range(floats):
        fields += [(f"lf{i}", ">i4"), (f"f{i}", ">f8")]
    return np.dtype(fields)


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
        ints: list[sql.Composable] = [sql.SQL("coalesce({}, -1)").format(_element("n", m))
                                      for m in counted]
        if None in needs.data:   # a reading of any metric
            ints.append(sql.SQL("coalesce((0 < ANY(a.n))::int4, 0)"))
        floats = [sql.SQL("coalesce({}, 'NaN')").format(_element(c, m)) for m, c in needs.values]
        query = sql.SQL("""
COPY (
    SELECT (u.idx - 1)::int4,
           (extract(epoch FROM a.hour - %(t0)s::timestamptz) / 3600)::int4{fields}
    FROM agg_compressor_hours a
    JOIN unnest(%(units)s::text[]) WITH ORDINALITY AS u(compressor_id, idx)
      ON u.compressor_id = a.compressor_id
    WHERE a.org_id = %(org_id)s AND a.hour >= %(t0)s AND a.hour <= %(end)s
) TO STDOUT (FORMAT binary)""").format(fields=sql.SQL("").join(
            sql.SQL(", ") + f for f in [*ints, *floats]))
        cells = hours * units.n
        n_counts = [np.full(cells, -1, dtype=np.int32) for _ in counted]
        anydata = np.zeros(cells, dtype=bool)
        values = [np.full(cells, _NAN) for _ in needs.values]
        dtype = _layout(2 + len(ints), len(floats))
        params = {"t0": t0, "end": end, "units": units.ids, "org_id": units.org_id}
        if units.n:
            for part in _binary_copy(self.conn, query, params, dtype):
                cell = part["i1"].astype(np.int64) * units.n + part["i0"]
                for i in range(len(counted)):
                    n_counts[i][cell] = part[f"i{2 + i}"]
                if None in needs.data:
                    anydata[cell] = part[f"i{2 + len(counted)}"] > 0
                for i in range(len(floats)):
                    values[i][cell] = part[f"f{i}"]
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
        of the metric's needed columns (at most two); numpy scatters whole batches at once.
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
        if max((len(c) for c in cols_of.values()), default=0) > 2:
            raise ValueError("a metric needs more than two aggregate columns")  # (none does)
        slots = max((len(c) for c in cols_of.values()), default=0)
        n, cells = units.n, units.n * hours
        present = np.zeros(len(metrics) * cells, dtype=bool)
        data = np.zeros(len(metrics) * cells, dtype=bool)
        first = np.full(len(metrics) * cells, _NAN)
        second_of = np.full(len(metrics), -1, dtype=np.int64)
        seconds = [i for i, m in enumerate(metrics) if len(cols_of[m]) > 1]
        second_of[seconds] = np.arange(len(seconds))
        second = np.full(len(seconds) * cells, _NAN) if seconds else None
        columns = sorted({c for _, c in needs.values})
        mrows = ", ".join(
            "(" + ", ".join([_quote(m), str(i), "true" if m in watched else "false"] + [
                str(columns.index(cols_of[m][s])) if s < len(cols_of[m]) else "NULL"
                for s in range(2)]) + ")" for i, m in enumerate(metrics))
        self.duck.register("units_arrow", pa.table({
            "compressor_id": pa.array(units.ids, pa.string()),
            "idx": pa.array(range(n), pa.int64())}))
        # One hash join of every row with the (unit, metric) table gives its cell base.
        self.duck.execute(f"""
CREATE OR REPLACE TEMP TABLE um AS
SELECT u.compressor_id, mt.metric, mt.mi * {cells} + u.idx AS base, mt.nd, mt.c0, mt.c1
FROM units_arrow u CROSS JOIN (VALUES {mrows}) AS mt(metric, mi, nd, c0, c1)""")
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
                first[cell] = batch.column("v0").to_numpy()
            if second is not None:
                mi = cell // cells
                k = second_of[mi]
                ok = k >= 0
                second[k[ok] * cells + (cell[ok] - mi[ok] * cells)] = (
                    batch.column("v1").to_numpy()[ok])
        shape = (hours, n)
        for i, m in enumerate(metrics):
            grid.present[m] = present[i * cells:(i + 1) * cells].reshape(shape)
            grid.data[m] = data[i * cells:(i + 1) * cells].reshape(shape)
            for s, c in enumerate(cols_of[m]):
                block, j = (first, i) if s == 0 else (second, int(second_of[i]))
                assert block is not None
                grid.values[(m, c)] = block[j * cells:(j + 1) * cells].reshape(shape)
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
    for metric, days in p.baselines:
        med, _ = daily_baselines(grid, metric, days, p.lo.date(), p.end.date())
        out[(metric, days)] = hourly(med, p.lo.date(), grid)
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
        med, found = self._read(p, grid.units, first, last)
        missing = ~found
        if missing.any():
            self._fill(p, grid.units, first, med, missing)
        return {need: hourly(med[i], first, grid) for i, need in enumerate(p.baselines)}

    def _read(self, p: Plan, units: Units, first: date,
              last: date) -> tuple[np.ndarray, np.ndarray]:
        """Stored medians (need x day x unit; NaN: none) and whether a row exists."""
        n_days = (last - first).days + 1
        med = np.full((len(p.baselines), n_days, units.n), _NAN)
        found = np.zeros(med.shape, dtype=bool)
        if units.n == 0:
            return med, found
        params = {"org_id": units.org_id, "units": units.ids, "first": first, "last": last,
                  "metrics": [m for m, _ in p.baselines], "days": [d for _, d in p.baselines]}
        for part in _binary_copy(self.conn, db.queries("rules")["stored_baselines"], params,
                                 _layout(3, 1)):
            k, d, u = (part[f"i{i}"].astype(np.int64) for i in range(3))
            med[k, d, u] = part["f0"]
            found[k, d, u] = True
        return med, found

    def _fill(self, p: Plan, units: Units, first: date, med: np.ndarray,
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
        for k, (metric, days) in enumerate(p.baselines):
            m, n = daily_baselines(history, metric, days, lo_day, hi_day)
            off = (lo_day - first).days
            for d in range(m.shape[0]):
                gap = missing[k, off + d, cols]
                if not gap.any():
                    continue
                med[k, off + d, cols[gap]] = m[d, gap]
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
    grid = source.grid(units, t0, p.end, needs)
    if not p.baselines:
        bases: dict[tuple[str, int], np.ndarray] = {}
    elif stored:
        assert isinstance(source, PostgresSource)
        bases = BaselineStore(source.conn, source).baselines(p, grid)
    else:
        bases = computed_baselines(p, grid)
    return evaluate_grid(p, grid, bases, threads)


__all__ = ["BaselineStore", "GoldSource", "PostgresSource", "Source", "computed_baselines",
           "connect_duckdb", "evaluation_rows", "read_units"]
