"""Tenant identity from the landing prefix: a file under ``LANDING/<org_id>/`` speaks for that
organization only. Real files, real lake, real PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import psycopg

from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet import Compressor, Fleet
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.ledger import discover
from etl.pipeline import run_pipeline
from tests.etl.landing import CARRIED, T0, series, write_landing


def _hours(conn: psycopg.Connection[Any], org: str, compressor: str) -> list[Any]:
    with conn.transaction():
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT hour FROM sensor_readings_agg WHERE org_id = %s AND "
            "compressor_id = %s ORDER BY 1", [org, compressor]).fetchall()]


def _quarantine(settings: Settings) -> list[tuple[Any, ...]]:
    con = duck_connect()
    return con.execute(
        f"SELECT reason, detail, org_id, compressor_id, count(*) FROM delta_scan("
        f"'{Lake(settings.lake_path).uri('quarantine')}') GROUP BY ALL ORDER BY ALL").fetchall()


def test_a_file_under_one_organization_cannot_touch_another(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(landing / "bravo", series("COMP-0003", T0, 2), arrive, org="bravo")
    write_landing(landing / "acme", series("COMP-0001", T0, 2), arrive, org="acme")
    # acme's gateway sends readings carrying bravo's compressor id, for an hour bravo lacks
    write_landing(landing / "acme", series("COMP-0003", T0 + timedelta(hours=2), 1), arrive,
                  org="acme")
    assert {f.source_file.split("/")[0] for f in discover(landing)} == {"acme", "bravo"}
    summary = run_pipeline(settings, db_url)
    assert summary.files == 3
    assert summary.quarantined == {"other_organization": 6}
    assert _quarantine(settings) == [("other_organization", "acme: COMP-0003", None,
                                      "COMP-0003", 6)]
    assert _hours(conn, "bravo", "COMP-0003") == [T0, T0 + timedelta(hours=1)]
    assert _hours(conn, "acme", "COMP-0001") == [T0, T0 + timedelta(hours=1)]
    assert _hours(conn, "acme", "COMP-0003") == []


def test_flat_and_prefixed_layouts_load_side_by_side(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(landing, series("COMP-0002", T0, 1), arrive, org="acme")       # flat
    write_landing(landing / "bravo", series("COMP-0004", T0, 1), arrive, org="bravo")
    write_landing(landing / "bravo", series("COMP-9999", T0, 1), arrive, org="bravo")
    summary = run_pipeline(settings, db_url)
    assert summary.quarantined == {"unknown_compressor": 6}
    assert _quarantine(settings) == [("unknown_compressor", "bravo: COMP-9999", None,
                                      "COMP-9999", 6)]
    assert _hours(conn, "acme", "COMP-0002") == [T0]
    assert _hours(conn, "bravo", "COMP-0004") == [T0]
    assert run_pipeline(settings, db_url).files == 0      # the ledger knows both layouts


def test_an_id_two_organizations_share_is_never_mixed(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    shared = Compressor(org_id="bravo", compressor_id="COMP-0001", site_id="EF-01",
                        model="Ariel JGK/4", driver=None, rated_hp=1380, rated_rpm=1400,
                        stages=2, installed_on=date(2020, 1, 1), channels=CARRIED)
    load_fleet(conn, fleet.model_copy(update={"compressors": (*fleet.compressors, shared)}))
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(landing / "acme", series("COMP-0001", T0, 1), arrive, org="acme")
    write_landing(landing / "bravo", series("COMP-0001", T0, 1, speed_rpm=900.0), arrive,
                  org="bravo")
    summary = run_pipeline(settings, db_url)
    # silver keys readings by compressor id: a shared id is held back, never merged across
    # organizations (see docs/OPERATIONS.md, landing layout)
    assert summary.quarantined == {"ambiguous_compressor": 12}
    assert {(r[0], r[1]) for r in _quarantine(settings)} == {
        ("ambiguous_compressor", "acme: COMP-0001"), ("ambiguous_compressor", "bravo: COMP-0001")}
    assert _hours(conn, "acme", "COMP-0001") == [] and _hours(conn, "bravo", "COMP-0001") == []
