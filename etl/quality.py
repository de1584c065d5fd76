"""Data quality per organization and compressor, recorded in ``data_quality_checks``.

For the batches this stage has not checked yet (mark in ``etl_stage_progress``):

* **completeness**: the compressor-hours the batches touched, filled in to a contiguous range
  per compressor so wholly silent hours count too, and only hours already over (``hour + 1 h
  <= as_of``). Missing share = 1 - readings/6 per hour; ``measured`` is the share over the
  range, failing above 5%, with the number of compressor-hours above 5% in ``details``.
* **consistency**: schema violations, i.e. quarantined rows / rows received for the
  compressor (rows whose compressor is unknown cannot be attributed to an organization and
  are only counted in the run summary). Fails above 1%.
* **accuracy**: readings with a 4-sigma outlier flag / readings. Fails above 1%.
* **freshness** (every compressor with a watermark, not only those in the batches, because a
  silent compressor is exactly what it must catch): minutes from its last reading to
  ``as_of`` (default: now), failing above ``freshness_sla_minutes``. The last reading is the
  later of its watermark and its latest reading in the batches checked here: the aggregates
  stage advances the watermarks, and this stage must not depend on having run after it (the
  pipeline runs it beside the aggregates stage, see :mod:`etl.pipeline`).

Rows are written per organization in a tenant transaction and keyed by run id (a retry of
the same run inserts nothing twice).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg
from psycopg.types.json import Jsonb

from altaviz.db import admin, queries, tenant
from altaviz.errors import InputError
from altaviz.telemetry import READINGS_PER_HOUR
from etl.aggregates import set_stage_mark, stage_mark
from etl.lake import Lake
from etl.ledger import sql_dates
from etl.metrics import hour_of
from etl.models import QualityResult

COMPLETENESS_MAX_MISSING = 0.05
CONSISTENCY_MAX_SHARE = 0.01
ACCURACY_MAX_SHARE = 0.01


def quality_checks(con: duckdb.DuckDBPyConnection, lake: Lake, conn: psycopg.Connection[Any],
                   run_id: str, freshness_sla_minutes: int, as_of: datetime | None = None
                   ) -> QualityResult:
    """Measure and record the four checks for the batches not yet checked; idempotent."""
    as_of = as_of or datetime.now(UTC)
    lo, hi = stage_mark(conn, "quality"), lake.batch_mark("silver")
    rows: dict[str, list[dict[str, Any]]] = {}
    #: org -> compressor -> latest reading in the batches checked here
    latest: dict[str, dict[str, datetime]] = {}

    def add(org: str, comp: str, kind: str, measured: float, threshold: float,
            details: dict[str, Any]) -> None:
        rows.setdefault(org, []).append({
            "compressor_id": comp, "check_type": kind,
            "measured": float(measured), "threshold": float(threshold),
            "passed": bool(measured <= threshold), "details": details})

    if hi > lo:
        silver, quarantine = lake.uri("silver"), lake.uri("quarantine")
        s_dates = lake.partitions_for_batches("silver", lo, hi)
        q_dates = lake.partitions_for_batches("quarantine", lo, hi)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dq_batch AS
            SELECT org_id, compressor_id, ts, len(outlier_metrics) > 0 AS outlier
            FROM delta_scan('{silver}')
            WHERE date IN ({sql_dates(s_dates)}) AND batch_id > {lo} AND batch_id <= {hi}
        """)
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dq_quarantine AS
            SELECT org_id, compressor_id, count(*) AS n FROM delta_scan('{quarantine}')
            WHERE arrival_date IN ({sql_dates(q_dates)}) AND batch_id > {lo}
              AND batch_id <= {hi} AND org_id IS NOT NULL
            GROUP BY ALL
        """)
        # contiguous hour ranges per compressor, closed hours only
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dq_hours AS
            WITH r AS (
                SELECT org_id, compressor_id, date_trunc('hour', min(ts)) AS h0,
                       least(date_trunc('hour', max(ts)),
                             '{as_of.isoformat()}'::TIMESTAMPTZ - INTERVAL 1 HOUR) AS h1
                FROM dq_batch GROUP BY ALL
            )
            SELECT org_id, compressor_id, unnest(generate_series(
                h0, date_trunc('hour', h1), INTERVAL 1 HOUR)) AS hour
            FROM r WHERE h1 >= h0
        """)
        first = con.execute("SELECT min(hour), max(hour) FROM dq_hours").fetchone()
        if first and first[0] is not None:
            h_dates = {d[0] for d in con.execute(
                "SELECT DISTINCT strftime(hour, '%Y-%m-%d') FROM dq_hours").fetchall()}
            h_end = first[1] + timedelta(hours=1)
            completeness = con.execute(f"""
                WITH counts AS (
                    SELECT compressor_id, {hour_of("ts")} AS hour,
                           count(DISTINCT ts) AS n
                    FROM delta_scan('{silver}')
                    WHERE date IN ({sql_dates(h_dates)})
                      AND ts >= '{first[0].isoformat()}'::TIMESTAMPTZ
                      AND ts < '{h_end.isoformat()}'::TIMESTAMPTZ
                      AND compressor_id IN (SELECT DISTINCT compressor_id FROM dq_hours)
                    GROUP BY ALL
                ), per_hour AS (
                    SELECT h.org_id, h.compressor_id, h.hour,
                           greatest(0, 1 - coalesce(c.n, 0) / {READINGS_PER_HOUR}) AS missing
                    FROM dq_hours h LEFT JOIN counts c USING (compressor_id, hour)
                )
                SELECT org_id, compressor_id, avg(missing), count(*),
                       count(*) FILTER (WHERE missing > {COMPLETENESS_MAX_MISSING}),
                       list(strftime(hour, '%Y-%m-%dT%H:00Z') ORDER BY hour)
                           FILTER (WHERE missing > {COMPLETENESS_MAX_MISSING})
                FROM per_hour GROUP BY ALL
            """).fetchall()
            for org, comp, share, hours, flagged, flagged_hours in completeness:
                add(org, comp, "completeness", share, COMPLETENESS_MAX_MISSING,
                    {"hours": hours, "hours_flagged": flagged,
                     "flagged_hours": (flagged_hours or [])[:24]})
        per_comp = con.execute("""
            WITH s AS (SELECT org_id, compressor_id, count(*) AS n,
                              count(*) FILTER (WHERE outlier) AS outliers, max(ts) AS last
                       FROM dq_batch GROUP BY ALL)
            SELECT coalesce(s.org_id, q.org_id), coalesce(s.compressor_id, q.compressor_id),
                   coalesce(s.n, 0), coalesce(s.outliers, 0), coalesce(q.n, 0), s.last
            FROM s FULL JOIN dq_quarantine q USING (org_id, compressor_id)
        """).fetchall()
        for org, comp, n, outliers, bad, last in per_comp:
            if last is not None:
                latest.setdefault(org, {})[comp] = last
            received = n + bad
            add(org, comp, "consistency", bad / received if received else 0.0,
                CONSISTENCY_MAX_SHARE, {"rows": received, "quarantined": bad})
            add(org, comp, "accuracy", outliers / n if n else 0.0, ACCURACY_MAX_SHARE,
                {"readings": n, "outliers": outliers})
    q = queries("etl")
    for org in sorted(set(_orgs(conn)) | set(latest)):
        with tenant(conn, org):
            marks = dict(conn.execute(q["watermarks_of_org"]).fetchall())
        for comp, seen in latest.get(org, {}).items():
            marks[comp] = max(marks.get(comp, seen), seen)
        for comp, last in sorted(marks.items()):
            minutes = max(0.0, (as_of - last).total_seconds() / 60)
            add(org, comp, "freshness", minutes, freshness_sla_minutes,
                {"last_reading_at": last.isoformat(), "as_of": as_of.isoformat()})
    checks = failed = 0
    for org, items in sorted(rows.items()):
        with tenant(conn, org):
            conn.execute(q["insert_quality_check"], {"run_id": run_id, "checks": Jsonb(items)})
        checks += len(items)
        failed += sum(1 for i in items if not i["passed"])
    if hi > lo:
        set_stage_mark(conn, "quality", hi, run_id)
    return QualityResult(checks=checks, failed=failed)


def _orgs(conn: psycopg.Connection[Any]) -> list[str]:
    with admin(conn):
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT org_id FROM etl_watermarks ORDER BY org_id").fetchall()]


#: Rows deleted per transaction by :func:`prune_quality_checks`.
PRUNE_BATCH = 50_000


def prune_quality_checks(conn: psycopg.Connection[Any], keep_days: int,
                         now: datetime | None = None) -> int:
    """Delete data-quality rows older than ``keep_days``, keeping each (organization,
    compressor, check type)'s latest; returns how many were deleted.

    Every hourly run records four checks per compressor (~18,000 rows at 4,500 units, about
    160 million a year), and nothing else ever removes them. ``altaviz dq prune`` calls this.
    """
    if keep_days < 1:
        raise InputError(f"--keep-days must be at least 1, got {keep_days}")
    before = (now or datetime.now(UTC)) - timedelta(days=keep_days)
    deleted = 0
    while True:
        with admin(conn):
            cur = conn.execute(queries("etl")["prune_quality_checks"],
                               {"before": before, "batch": PRUNE_BATCH})
            n = cur.rowcount
        deleted += n
        if n < PRUNE_BATCH:
            return deleted
