"""Hourly aggregates in PostgreSQL: gold rows upserted into ``sensor_readings_agg``.

The gold rows written since the last upsert (gold ``batch_id`` above this stage's mark in
``etl_stage_progress``) are pushed by DuckDB's postgres extension (binary COPY) into the
unlogged ``etl_agg_staging`` table, then moved one organization at a time in a tenant
transaction (role ``altaviz_app``, RLS) with ``INSERT ... ON CONFLICT DO UPDATE`` guarded by
``IS DISTINCT FROM``: the database itself refuses a row of another organization (RLS WITH
CHECK) or of a compressor the organization does not own (composite FK). Only rows that really
changed are returned; they become the :class:`~etl.models.ChangedRange` list that rule
evaluation targets. The mark advances after every organization succeeded, so a crash in the
middle repeats the whole (idempotent) upsert.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import duckdb
import psycopg

from altaviz.db import admin, queries, tenant
from etl.lake import Lake
from etl.ledger import sql_dates
from etl.models import AggregatesResult, ChangedRange

Progress = Callable[[str, float], None]
_COLUMNS = ("org_id, compressor_id, metric, hour, n, mean, min, max, stddev, mean_4h, min_4h, "
            "max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, "
            "outliers, late")


def compressor_orgs(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """compressor_id -> org_id of every compressor that belongs to exactly one organization."""
    with admin(conn):
        return dict(conn.execute(queries("etl")["compressor_orgs"]).fetchall())


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
                      db_url: str, run_id: str, progress: Progress | None = None
                      ) -> AggregatesResult:
    """Upsert the gold rows PostgreSQL has not seen; idempotent.

    Args:
        con: a DuckDB connection from :func:`etl.duck.connect` with ``postgres=True``.
        lake: the lake.
        conn: a PostgreSQL connection as the owner (tenant work switches role per org).
        db_url: the same database, for DuckDB's binary COPY into the staging table.
        run_id: recorded with the mark.
    """
    q = queries("etl")
    lo, hi = stage_mark(conn, "aggregates"), lake.batch_mark("gold")
    if hi <= lo:
        return AggregatesResult()
    dates = lake.partitions_for_batches("gold", lo, hi)
    with admin(conn):
        conn.execute(q["truncate_staging"])
    con.execute(f"ATTACH '{_dsn(db_url)}' AS pg (TYPE postgres)")
    try:
        con.execute(f"""
            INSERT INTO pg.public.etl_agg_staging ({_COLUMNS})
            SELECT {_COLUMNS} FROM delta_scan('{lake.uri("gold")}')
            WHERE date IN ({sql_dates(dates)}) AND batch_id > {lo} AND batch_id <= {hi}
        """)
    finally:
        con.execute("DETACH pg")
    if progress:
        progress("aggregates", 0.4)
    with admin(conn):
        staged = conn.execute("SELECT count(*) FROM etl_agg_staging").fetchone()
        for (month,) in conn.execute(q["staged_months"]).fetchall():
            conn.execute(q["ensure_agg_partition"], {"ts": month})
        orgs = [r[0] for r in conn.execute(q["staged_orgs"]).fetchall()]
    watermarks = _watermarks(con, lake, lo, hi)
    changed: list[ChangedRange] = []
    loaded_at = datetime.now(UTC)
    for i, org_id in enumerate(orgs):
        with tenant(conn, org_id):
            for comp, first, last, rows in conn.execute(q["upsert_aggregates"]).fetchall():
                changed.append(ChangedRange(org_id=org_id, compressor_id=comp, first_hour=first,
                                            last_hour=last, rows=rows))
            marks = [{"compressor_id": c, "last_reading_at": ts, "last_loaded_at": loaded_at}
                     for c, ts in watermarks.get(org_id, [])]
            if marks:
                with conn.cursor() as cur:
                    cur.executemany(q["upsert_watermark"], marks)
        if progress:
            progress("aggregates", 0.4 + 0.6 * (i + 1) / len(orgs))
    with admin(conn):
        conn.execute(q["truncate_staging"])
    set_stage_mark(conn, "aggregates", hi, run_id)
    return AggregatesResult(batches=list(range(lo + 1, hi + 1)),
                            rows_staged=int(staged[0]) if staged else 0,
                            rows_upserted=sum(c.rows for c in changed), changed=changed)


def _watermarks(con: duckdb.DuckDBPyConnection, lake: Lake, lo: int, hi: int
                ) -> dict[str, list[tuple[str, datetime]]]:
    """Latest reading per compressor among the silver batches being upserted."""
    dates = lake.partitions_for_batches("silver", lo, hi)
    rows = con.execute(f"""
        SELECT org_id, compressor_id, max(ts) FROM delta_scan('{lake.uri("silver")}')
        WHERE date IN ({sql_dates(dates)}) AND batch_id > {lo} AND batch_id <= {hi}
        GROUP BY ALL
    """).fetchall()
    out: dict[str, list[tuple[str, datetime]]] = {}
    for org_id, comp, ts in rows:
        out.setdefault(org_id, []).append((comp, ts))
    return out


def _dsn(url: str) -> str:
    """The URL quoted for a DuckDB string literal."""
    return url.replace("'", "''")
