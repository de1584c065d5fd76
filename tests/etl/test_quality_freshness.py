"""Quality's freshness does not depend on the aggregates stage having moved the watermarks
first: quality may run right after silver."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.pipeline import run_stage
from tests.etl.landing import T0, series, write_landing


def _freshness(conn: psycopg.Connection[Any], run_id: str) -> dict[str, tuple[float, bool]]:
    with conn.transaction():
        rows = conn.execute("SELECT compressor_id, measured, passed FROM data_quality_checks "
                            "WHERE check_type = 'freshness' AND run_id = %s", [run_id]
                            ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_freshness_counts_the_batch_before_the_watermarks_move(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """Quality right after silver (aggregates not yet run, no watermark exists) still measures
    every compressor of the batch from its latest reading."""
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5), org="acme")
    write_landing(settings.landing_path, series("COMP-0003", T0, 1),
                  T0 + timedelta(hours=2, minutes=5), org="bravo")
    for stage in ("bronze", "silver"):
        run_stage(stage, settings, db_url)
    with conn.transaction():   # bravo's gateways upload every 15 minutes
        conn.execute("UPDATE organizations SET upload_cadence_minutes = 15 "
                     "WHERE org_id = 'bravo'")
    as_of = T0 + timedelta(hours=2)
    run_stage("quality", settings, db_url, run_id="q1", as_of=as_of)
    with conn.transaction():
        assert conn.execute("SELECT count(*) FROM etl_watermarks").fetchone() == (0,)
    # last readings: 01:50 (10 minutes before as_of) and 00:50 (70 minutes, over bravo's
    # 15-minute cadence plus the 30-minute grace)
    assert _freshness(conn, "q1") == {"COMP-0001": (10.0, True), "COMP-0003": (70.0, False)}


def test_freshness_is_judged_against_each_organizations_upload_cadence(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """A healthy unit between two hourly uploads is fresh; a unit silent for longer than its
    organization's cadence plus the grace is not, and the check says what it was judged
    against."""
    write_landing(settings.landing_path, series("COMP-0001", T0, 2),
                  T0 + timedelta(hours=2, minutes=5), org="acme")
    write_landing(settings.landing_path, series("COMP-0003", T0, 2),
                  T0 + timedelta(hours=2, minutes=5), org="bravo")
    for stage in ("bronze", "silver"):
        run_stage(stage, settings, db_url)
    # 75 minutes after the last readings (01:50): within acme's default hourly cadence plus
    # 30 minutes, over bravo's 30-minute cadence plus 30 minutes
    with conn.transaction():
        conn.execute("UPDATE organizations SET upload_cadence_minutes = 30 "
                     "WHERE org_id = 'bravo'")
    run_stage("quality", settings, db_url, run_id="q2",
              as_of=T0 + timedelta(hours=3, minutes=5))
    assert _freshness(conn, "q2") == {"COMP-0001": (75.0, True), "COMP-0003": (75.0, False)}
    with conn.transaction():
        rows = dict(conn.execute(
            "SELECT compressor_id, threshold FROM data_quality_checks "
            "WHERE check_type = 'freshness' AND run_id = 'q2'").fetchall())
        details = conn.execute(
            "SELECT details FROM data_quality_checks WHERE check_type = 'freshness' "
            "AND run_id = 'q2' AND compressor_id = 'COMP-0001'").fetchone()
    assert rows == {"COMP-0001": 90.0, "COMP-0003": 60.0}
    assert details is not None and details[0]["grace_minutes"] == 30
