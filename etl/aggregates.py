"""Hourly aggregates in PostgreSQL: gold rows written into ``agg_compressor_hours``.

PostgreSQL keeps one row per organization, compressor and hour, each statistic an array over
the metrics (migration 070; ``sensor_readings_agg`` is the long view of it that readers use).
Gold is long (one row per metric), so each compressor-hour is pivoted here: element ``i`` of
every array is metric ``i`` of :data:`altaviz.core.telemetry.METRICS`, NULL where the hour has no
reading of it. A batch that changed some metrics of a compressor-hour rewrites the whole row,
so the row is assembled from all of that hour's gold rows, not only the batch's.

The compressor-hours of the gold rows written since the last run of this stage (gold
``batch_id`` above this stage's mark in ``etl_stage_progress``) take one of two paths, decided
per ``(org_id, hour)`` by one existence query:

* **new hours** (first load, the next hour of the hourly run): binary COPY (encoded by
  :mod:`etl.pgcopy`) straight into the monthly partition. A month that has no
  partition yet (a first load, a backfill) is copied into a plain table without the key,
  which is then attached as the partition: one index build by sort instead of a B-tree
  insertion per row (migration 061). A crash before the attach leaves that table invisible;
  the re-run drops it and copies the month again.
  Nothing can conflict, so the staging table and ``ON CONFLICT`` are skipped; the ownership
  check (migration 060: once per statement, on every partition; 062: once at attach) still
  refuses a compressor the organization does not own.
* **hours that already have rows** (late data, re-computed windows, re-runs): binary COPY
  into the unlogged ``etl_agg_staging`` table, then moved one organization at a time in a
  tenant transaction (the ETL's tenant role ``altaviz_etl_tenant``, RLS) with
  ``INSERT ... ON CONFLICT DO UPDATE`` guarded by ``IS DISTINCT FROM``: the database itself
  refuses a row of another organization (RLS WITH CHECK) or of a compressor the organization
  does not own (the ownership check).

Only rows inserted or really changed are reported; they become the
:class:`~etl.models.ChangedRange` list that rule evaluation targets (``rows`` counts
(metric, hour) aggregates, as the long view shows them). The mark advances after every write
succeeded, so a crash in the middle repeats the stage: hours copied before the crash then
exist and take the guarded path, which finds them identical and writes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from altaviz.core.db import ETL_ROLE, admin, connect, queries, tenant
from altaviz.core.duck import table_from_arrow
from etl.carry import Carry
from etl.lake import Lake
from etl.ledger import sql_dates
from etl.metrics import HOUR_US
from etl.models import AggregatesResult, ChangedRange
from etl.pgcopy import copy_rows
from etl.pivot import METRIC_NAMES, STATISTICS, Pivoted, pivot_dense

Progress = Callable[[str, float], None]


def compressor_orgs(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """compressor_id -> org_id of every compressor that belongs to exactly one organization."""
    with admin(conn):
        return dict(conn.execute(queries("etl")["compressor_orgs"]).fetchall())


def fleet_compressors(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """``(org_id, compressor_id)`` of every compressor of every organization."""
    with admin(conn):
        return [(r[0], r[1]) for r in conn.execute(queries("etl")["fleet_compressors"])]


def stage_mark(conn: psycopg.Connection[Any], stage: str) -> int:
    """The last bronze batch a PostgreSQL stage (``aggregates`` or ``quality``) completed."""
    with admin(conn):
        row = conn.execute(queries("etl")["get_stage_mark"], {"stage": stage}).fetchone()
    return int(row[0]) if row else 0


def set_stage_mark(conn: psycopg.Connection[Any], stage: str, batch_id: int, run_id: str
                   ) -> None:
    """Advance a PostgreSQL stage's mark (never moves backwards)."""
    with admin(conn):
        conn.execute(queries("etl")["set_stage_mark"],
                     {"stage": stage, "batch_id": batch_id, "run_id": run_id})


def upsert_aggregates(con: duckdb.DuckDBPyConnection, lake: Lake, conn: psycopg.Connection[Any],
                      db_url: str, run_id: str, progress: Progress | None = None,
                      carry: Carry | None = None, *, copy_streams: int) -> AggregatesResult:
    """Upsert the gold rows PostgreSQL has not seen; idempotent.

    Two paths, chosen per ``(org_id, hour)`` with one existence query per run:

    * hours with no row yet (a first load, a new hour): plain binary COPY straight into the
      monthly partition, in primary-key order. No row of such an hour can conflict, so
      ``ON CONFLICT`` and the staging table would only cost time (bench/bench_etl.py, full
      phase, times the stage). The
      ownership check still runs after the COPY, so a row cannot claim a compressor of
      another organization. A conflicting row written meanwhile by someone else makes the COPY
      fail as a whole (unique violation): the stage is retried and then takes the other path.
    * hours that already have rows (late data, re-runs): the guarded upsert through the
      staging table, per organization in a tenant transaction (RLS).

    Args:
        con: a DuckDB connection from :func:`altaviz.core.duck.connect`.
        lake: the lake.
        conn: a PostgreSQL connection as the ETL login (or the owner); tenant work switches
            to the ETL's tenant role per organization.
        db_url: the same database, for the COPY streams' own connections.
        run_id: recorded with the mark.
        carry: gold's rows and silver's latest readings of the same run (:mod:`etl.carry`),
            used instead of reading them back when they are exactly this stage's batches.
        copy_streams: parallel COPY connections of new hours (``settings.etl_copy_streams``):
            PostgreSQL's COPY is CPU-bound in one backend, so each stream is one more core.
    """
    lo, hi = stage_mark(conn, "aggregates"), lake.batch_mark("gold")
    if hi <= lo:
        return AggregatesResult()
    carried = carry.take_gold(lake.root, lo, hi) if carry is not None else None
    latest = carry.take_latest(lake.root, lo, hi) if carry is not None else None
    if carried is None:
        return _upsert(con, lake, conn, db_url, run_id, lo, hi, progress, None, latest,
                       copy_streams)
    con.register(CARRIED, carried)
    try:
        return _upsert(con, lake, conn, db_url, run_id, lo, hi, progress, carried, latest,
                       copy_streams)
    finally:
        con.unregister(CARRIED)


#: The DuckDB name of gold's carried rows (:mod:`etl.carry`) during the stage.
CARRIED = "agg_carried"


def _upsert(con: duckdb.DuckDBPyConnection, lake: Lake, conn: psycopg.Connection[Any],
            db_url: str, run_id: str, lo: int, hi: int, progress: Progress | None,
            carried: pa.Table | None, latest: pa.Table | None, copy_streams: int
            ) -> AggregatesResult:
    """:func:`upsert_aggregates` of gold batches ``lo < batch <= hi``. ``carried``: gold's
    rows of exactly those batches, all rows of their compressor-hours (registered in ``con``
    as :data:`CARRIED`); ``latest``: silver's latest reading per compressor of them."""
    q = queries("etl")
    if carried is not None:
        dates = {str(d) for d in pc.unique(carried.column("date")).to_pylist()}
        gold, batch_rows = CARRIED, CARRIED
    else:
        dates = lake.partitions_for_batches("gold", lo, hi)
        gold = f"delta_scan('{lake.uri('gold')}')"
        batch_rows = (f"{gold} WHERE date IN ({sql_dates(dates)}) AND batch_id > {lo} "
                      f"AND batch_id <= {hi}")
    # one scan for every decision: the compressor-hours the batches wrote, with their number
    # of (metric) rows. Plain tables, not TEMP: the parallel COPY connections read them.
    con.execute(f"""
        CREATE OR REPLACE TABLE agg_keys AS
        SELECT org_id, compressor_id, hour, count(*) AS rows FROM {batch_rows}
        GROUP BY ALL
    """)
    pairs = con.execute("SELECT DISTINCT org_id, hour FROM agg_keys").fetchall()
    months = sorted({datetime(h.year, h.month, 1, tzinfo=UTC) for _, h in pairs})
    with admin(conn):
        _empty_staging(conn)
        # a month with no partition yet is loaded as a plain table and attached afterwards
        loading = {m: str(name) for m in months
                   if (name := _one(conn, q["begin_agg_month_load"], {"ts": m})) is not None}
        partitions = {m: loading[m] if m in loading else
                      str(_one(conn, q["ensure_agg_partition"], {"ts": m})) for m in months}
        existing = conn.execute(q["existing_agg_hours"], {
            "orgs": [o for o, _ in pairs], "hours": [h for _, h in pairs]}).fetchall()
    _register(con, "agg_existing", existing)
    # every row the pivot reads is one of the compressor-hours to write (a first load, a
    # backfill of new days, gold's carried rows): no row needs matching against the keys
    all_rows = not existing and (carried is not None or _only_batch_rows(con, lake, dates, lo, hi))
    coding = _coding(con, [h for _, h in pairs], all_rows)
    con.execute("""
        CREATE OR REPLACE TABLE agg_fresh_keys AS
        SELECT * FROM agg_keys ANTI JOIN agg_existing USING (org_id, hour)""")
    con.execute("""
        CREATE OR REPLACE TABLE agg_stale_keys AS
        SELECT * FROM agg_keys SEMI JOIN agg_existing USING (org_id, hour)""")
    # rows of new (org, hour) pairs: changed by definition (inserted)
    fresh = con.execute("""
        SELECT org_id, compressor_id, min(hour), max(hour), sum(rows)::BIGINT
        FROM agg_fresh_keys GROUP BY ALL
    """).fetchall()
    copied = sum(r[4] for r in fresh)
    staged = 0
    # new hours: COPY streams in parallel (PostgreSQL's COPY is CPU-bound in one backend),
    # each a contiguous slice of a day's pivoted rows in key order. Each stream is its own
    # transaction (see the module docstring for why a crash between them is harmless).
    if copied:
        _copy_days(con, gold, dates, "agg_fresh_keys", coding, db_url,
                   lambda day: partitions.get(_month_of(day)), copy_streams, carried)
    if progress:
        progress("aggregates", 0.5)
    if existing:
        _copy_days(con, gold, dates, "agg_stale_keys", coding, db_url,
                   lambda _: "etl_agg_staging", 1, carried)
    with admin(conn):
        for month in sorted(loading):
            conn.execute(q["finish_agg_month_load"], {"ts": month})
    if progress:
        progress("aggregates", 0.6)
    with admin(conn):
        staged_orgs = [r[0] for r in conn.execute(q["staged_orgs"]).fetchall()]
        if staged_orgs:
            row = conn.execute(q["staged_rows"]).fetchone()
            staged = int(row[0]) if row else 0
    watermarks = _by_org(_watermarks(con, lake, lo, hi) if latest is None else latest)
    ranges: dict[tuple[str, str], tuple[datetime, datetime, int]] = {
        (org, comp): (first, last, int(rows)) for org, comp, first, last, rows in fresh}
    loaded_at = datetime.now(UTC)
    orgs = sorted(set(staged_orgs) | set(watermarks))
    for i, org_id in enumerate(orgs):
        with tenant(conn, org_id, role=ETL_ROLE):
            if org_id in staged_orgs:
                for comp, first, last, rows in conn.execute(q["upsert_aggregates"]).fetchall():
                    ranges[(org_id, comp)] = _merge(ranges.get((org_id, comp)),
                                                    (first, last, int(rows)))
            comps, micros = watermarks.get(org_id, ([], []))
            if comps:
                conn.execute(q["upsert_watermark"], {
                    "compressor_ids": comps, "last_reading_us": micros,
                    "last_loaded_at": loaded_at})
        if progress:
            progress("aggregates", 0.6 + 0.4 * (i + 1) / len(orgs))
    with admin(conn):
        _empty_staging(conn)
    # Each organization's changed hours come from the gold rows of these batches (gold writes
    # only new or changed rows), not from what PostgreSQL reports as changed: after a crash
    # between the writes and the mark, the re-run finds the rows already there and changes
    # nothing, yet those hours were never handed to the rules.
    spans = con.execute("SELECT org_id, min(hour), max(hour) FROM agg_keys GROUP BY ALL "
                        "ORDER BY org_id").fetchall()
    with admin(conn):
        conn.execute(q["record_unevaluated_hours"], {
            "run_id": run_id, "orgs": [r[0] for r in spans], "firsts": [r[1] for r in spans],
            "lasts": [r[2] for r in spans]})
        conn.execute(q["set_stage_mark"],
                     {"stage": "aggregates", "batch_id": hi, "run_id": run_id})
    changed = [ChangedRange(org_id=org, compressor_id=comp, first_hour=first, last_hour=last,
                            rows=rows)
               for (org, comp), (first, last, rows) in sorted(ranges.items())]
    return AggregatesResult(batches=list(range(lo + 1, hi + 1)), rows_staged=copied + staged,
                            rows_upserted=sum(c.rows for c in changed), changed=changed)


def _empty_staging(conn: psycopg.Connection[Any]) -> None:
    """Empty ``etl_agg_staging`` (rows left by a crashed run, or this run's), truncating it
    only when it holds rows (see ``staging_has_rows``)."""
    q = queries("etl")
    if _one(conn, q["staging_has_rows"], {}):
        conn.execute(q["truncate_staging"])


def _one(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _month_of(day: str) -> datetime:
    """The first instant of a date partition's month (``YYYY-MM-DD``)."""
    return datetime(int(day[:4]), int(day[5:7]), 1, tzinfo=UTC)


@dataclass(frozen=True)
class _Coding:
    """What :func:`_coded_rows` needs: the sorted organizations and compressors behind the
    codes, whether every gold row of the run's dates is one of the compressor-hours to write
    (then no row needs matching against the keys), and the keys' span of hours."""

    orgs: pa.Array
    compressors: pa.Array
    all_rows: bool
    first: datetime  # the earliest and latest hour of the keys
    last: datetime


def _coding(con: duckdb.DuckDBPyConnection, hours: list[datetime], all_rows: bool) -> _Coding:
    """DuckDB tables of integer codes for the pivot (:func:`etl.pivot.pivot_dense`): the run's
    sorted organizations and compressors (from ``agg_keys``) and the metrics' places in the
    arrays; and what else :func:`_coded_rows` needs to know (``all_rows``: see
    :class:`_Coding`)."""
    orgs = con.execute("SELECT DISTINCT org_id FROM agg_keys ORDER BY 1").to_arrow_table()
    comps = con.execute("SELECT DISTINCT compressor_id FROM agg_keys ORDER BY 1"
                        ).to_arrow_table()
    for name, values in (("agg_org_codes", orgs.column(0)), ("agg_comp_codes", comps.column(0)),
                         ("agg_metric_codes", METRIC_NAMES)):
        table_from_arrow(con, name, pa.table({"name": values.cast(pa.string()),
                                              "code": pa.array(range(len(values)), pa.int32())}),
                         temp=False)
    span = hours or [datetime(1970, 1, 1, tzinfo=UTC)]  # (an empty batch: nothing to read)
    return _Coding(orgs.column(0).combine_chunks(), comps.column(0).combine_chunks(),
                   all_rows, min(span), max(span))


def _only_batch_rows(con: duckdb.DuckDBPyConnection, lake: Lake, dates: set[str] | list[str],
                     lo: int, hi: int) -> bool:
    """True when the run's gold date partitions hold no row of an earlier batch (a first load,
    a backfill of new days): every row there then belongs to a compressor-hour to write."""
    row = con.execute(f"""
        SELECT count(*) FROM delta_scan('{lake.uri("gold")}')
        WHERE date IN ({sql_dates(dates)}) AND NOT (batch_id > {lo} AND batch_id <= {hi})
    """).fetchone()
    return row is not None and row[0] == 0


def _coded_rows(con: duckdb.DuckDBPyConnection, gold: str, day: str, keys: str,
                coding: _Coding) -> pa.Table:
    """The gold rows (relation ``gold``: the Delta table's scan, or the carried rows) of date
    partition ``day`` whose compressor-hour is in the DuckDB table ``keys`` (all metrics of
    each, not only the ones the batches rewrote), coded as
    :func:`etl.pivot.pivot_dense` takes them. LEFT JOINs: a row whose code is missing fails
    the pivot instead of vanishing."""
    # the keys' hours as literals too: they let the delta extension skip the files of other
    # hours (the hourly run's date partition holds the day's earlier batches)
    span = "" if coding.all_rows else (
        f"AND g.hour >= '{coding.first.isoformat()}'::TIMESTAMPTZ "
        f"AND g.hour <= '{coding.last.isoformat()}'::TIMESTAMPTZ")
    match = "" if coding.all_rows else f"""
        SEMI JOIN {keys} k ON k.org_id = g.org_id AND k.compressor_id = g.compressor_id
          AND k.hour = g.hour"""
    return con.execute(f"""
        SELECT o.code AS org, c.code AS comp, epoch_us(g.hour) // {HOUR_US} AS hour,
               m.code AS pos, {", ".join(f"g.{s}" for s in STATISTICS)}
        FROM {gold} g
        LEFT JOIN agg_org_codes o ON o.name = g.org_id
        LEFT JOIN agg_comp_codes c ON c.name = g.compressor_id
        LEFT JOIN agg_metric_codes m ON m.name = g.metric{match}
        WHERE g.date IN ({sql_dates([day])}) {span}
    """).to_arrow_table()


def _carried_codes(carried: pa.Table, day: str | None, coding: _Coding) -> pa.Table:
    """:func:`_coded_rows` of gold's carried rows (of date partition ``day``; None: all of
    them), when every one of them is to be written (``coding.all_rows``).

    Coded in Arrow: the rows are in memory already, and hashing them here is far cheaper
    than DuckDB's scan of them with its three joins to the code tables (bench/bench_etl.py,
    hour phase). A name the codes lack gets a null code, which fails the pivot, as the
    joins' do."""
    rows = carried if day is None else carried.filter(pc.equal(carried.column("date"), day))
    hour_us = rows.column("hour").cast(pa.int64()).to_numpy()
    return pa.table({
        "org": pc.index_in(rows.column("org_id"), value_set=coding.orgs),
        "comp": pc.index_in(rows.column("compressor_id"), value_set=coding.compressors),
        "hour": pa.array(hour_us // HOUR_US),
        "pos": pc.index_in(rows.column("metric"), value_set=METRIC_NAMES),
        **{stat: rows.column(stat) for stat in STATISTICS}})


def _copy_days(con: duckdb.DuckDBPyConnection, gold: str, dates: set[str] | list[str],
               keys: str, coding: _Coding, db_url: str, target: Callable[[str], str | None],
               streams: int, carried: pa.Table | None = None) -> None:
    """COPY the compressor-hours in ``keys``, pivoted (:func:`etl.pivot.pivot_dense`) from
    relation ``gold``, one date partition at a time into the PostgreSQL table ``target(day)``
    (None: skip the day). ``carried``: gold's carried rows, which ``gold`` names in ``con``.

    Each day's rows are cut into ``streams`` contiguous slices, encoded by
    :mod:`etl.pgcopy` and COPYed at once on connections of their own (each slice a
    transaction: PostgreSQL's COPY is CPU-bound in one backend), while the next day is read
    and pivoted on another thread. One day at a time bounds the memory: a day of the
    4,500-unit fleet is 2.26 M long rows, 108,000 rows here.
    """
    from concurrent.futures import ThreadPoolExecutor

    days = [d for d in sorted(dates) if target(d) is not None]

    def coded(day: str) -> pa.Table:
        if carried is not None and coding.all_rows:
            return _carried_codes(carried, day if len(dates) > 1 else None, coding)
        # a cursor's own connection cannot see the carried rows (registered in ``con``),
        # and the calling thread leaves ``con`` alone meanwhile
        cur = con.cursor() if carried is None else con
        try:
            return _coded_rows(cur, gold, day, keys, coding)
        finally:
            if carried is None:
                cur.close()

    def prepare(day: str) -> Pivoted:
        return pivot_dense(coded(day), coding.orgs, coding.compressors)

    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as reader, \
            ThreadPoolExecutor(max_workers=streams) as writers:
        links: list[psycopg.Connection[Any]] = []
        upcoming = reader.submit(prepare, days[0]) if days else None
        for i, day in enumerate(days):
            assert upcoming is not None
            table = upcoming.result()
            upcoming = reader.submit(prepare, days[i + 1]) if i + 1 < len(days) else None
            if table.rows == 0:
                continue
            name = target(day)
            assert name is not None
            step = -(-table.rows // streams)
            slices = [table.select(slice(j, j + step)) for j in range(0, table.rows, step)]
            while len(links) < len(slices):  # slice j always goes through connection j
                links.append(stack.enter_context(connect(db_url)))
            for future in [writers.submit(copy_rows, link, name, part)
                           for link, part in zip(links, slices, strict=False)]:
                future.result()


def _merge(a: tuple[datetime, datetime, int] | None, b: tuple[datetime, datetime, int]
           ) -> tuple[datetime, datetime, int]:
    """One compressor's changed range over both paths (copied and upserted rows)."""
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]


def _register(con: duckdb.DuckDBPyConnection, name: str,
              rows: list[tuple[str, datetime]]) -> None:
    """A DuckDB table ``name(org_id, hour)`` holding ``rows`` (not TEMP: the parallel COPY
    connections must see it)."""
    table_from_arrow(con, name, pa.table({
        "org_id": pa.array([r[0] for r in rows], pa.string()),
        "hour": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC"))}), temp=False)


def _watermarks(con: duckdb.DuckDBPyConnection, lake: Lake, lo: int, hi: int) -> pa.Table:
    """``org_id, compressor_id, ts``: the latest reading per compressor among the silver
    batches being upserted."""
    dates = lake.partitions_for_batches("silver", lo, hi)
    return con.execute(f"""
        SELECT org_id, compressor_id, max(ts) AS ts FROM delta_scan('{lake.uri("silver")}')
        WHERE date IN ({sql_dates(dates)}) AND batch_id > {lo} AND batch_id <= {hi}
        GROUP BY ALL
    """).to_arrow_table()


def _by_org(latest: pa.Table) -> dict[str, tuple[list[str], list[int]]]:
    """``org_id, compressor_id, ts`` rows as org_id -> (compressor ids, their latest readings
    in microseconds since the epoch).

    Not as ``datetime``s: pyarrow builds a time-zone-aware ``datetime`` in Python code, one
    at a time, and in the hourly run this stage shares the GIL with quality's thread, which
    stretches such Python work several times. Integers and strings are built in C;
    PostgreSQL adds the microseconds to the epoch exactly (``upsert_watermark``)."""
    out: dict[str, tuple[list[str], list[int]]] = {}
    micros = pc.cast(pc.cast(latest.column("ts"), pa.timestamp("us", tz="UTC")), pa.int64())
    for org_id in pc.unique(latest.column("org_id")).to_pylist():
        mine = pc.equal(latest.column("org_id"), org_id)
        out[org_id] = (latest.column("compressor_id").filter(mine).to_pylist(),
                       micros.filter(mine).to_numpy().tolist())
    return out
