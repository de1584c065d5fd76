"""Tenant identity from the landing prefix: a file under ``LANDING/<org_id>/`` speaks for that
organization only. Real files, real lake, real PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet import Compressor, Fleet
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.ledger import discover
from etl.pipeline import run_pipeline
from rules.evaluate import evaluate
from rules.loader import load_rule_set
from tests.etl.landing import CARRIED, T0, series, write_landing
from tests.etl.test_hot import _assert_cache_equals_gold


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


OIL_HIGH = """
rules:
  - id: oil_temp_high
    kind: threshold
    metric: oil_temp_f
    comparison: above
    warning: 180
    critical: 190
    clear: 175
    persistence: {hours: 2, of: 3}
    clear_after_hours: 2
    escalation_delay_hours: 4
    diagnosis: "Oil temperature high: check the cooler and the oil level."
    checks: [the cooler, the oil level]
    basis: the manufacturer's limit
"""


def _share_comp_0001(conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    """bravo registers a compressor of the id acme's COMP-0001 has."""
    shared = Compressor(org_id="bravo", compressor_id="COMP-0001", site_id="EF-01",
                        model="Ariel JGK/4", driver=None, rated_hp=1380, rated_rpm=1400,
                        stages=2, installed_on=date(2020, 1, 1), channels=CARRIED)
    load_fleet(conn, fleet.model_copy(update={"compressors": (*fleet.compressors, shared)}))


def _means(conn: psycopg.Connection[Any], org: str, metric: str) -> dict[Any, float]:
    with db.admin(conn):
        return {r[0]: r[1] for r in conn.execute(
            "SELECT hour, mean FROM sensor_readings_agg WHERE org_id = %s AND compressor_id = "
            "'COMP-0001' AND metric = %s ORDER BY hour", [org, metric]).fetchall()}


def test_two_organizations_with_the_same_compressor_id_both_get_aggregates_and_alerts(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    _share_comp_0001(conn, fleet)
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(landing / "acme", series("COMP-0001", T0, 3, wobble=True, oil_temp_f=195.0),
                  arrive, org="acme")
    write_landing(landing / "bravo", series("COMP-0001", T0, 3, wobble=True, oil_temp_f=185.0,
                                            speed_rpm=900.0), arrive, org="bravo")
    summary = run_pipeline(settings, db_url)
    assert summary.quarantined == {}
    assert {(c.org_id, c.compressor_id) for c in summary.changed} == {
        ("acme", "COMP-0001"), ("bravo", "COMP-0001")}
    hours = [T0 + timedelta(hours=i) for i in range(3)]
    assert _means(conn, "acme", "oil_temp_f") == dict.fromkeys(hours, 195.0)
    assert _means(conn, "bravo", "oil_temp_f") == dict.fromkeys(hours, 185.0)
    assert _means(conn, "acme", "speed_rpm") == dict.fromkeys(hours, 1200.0)
    assert _means(conn, "bravo", "speed_rpm") == dict.fromkeys(hours, 900.0)
    with db.admin(conn):
        n = dict(conn.execute(
            "SELECT org_id, n[1] FROM agg_compressor_hours WHERE compressor_id = 'COMP-0001' "
            "AND hour = %s", [T0]).fetchall())
    assert n == {"acme": 6, "bravo": 6}          # each hour's own six readings, not twelve

    # the next hour, through the hourly path (hot cache, silver's partials handed to gold)
    arrive = T0 + timedelta(hours=4, minutes=5)
    write_landing(landing / "acme", series("COMP-0001", T0 + timedelta(hours=3), 1, wobble=True,
                                           oil_temp_f=196.0), arrive, org="acme")
    write_landing(landing / "bravo", series("COMP-0001", T0 + timedelta(hours=3), 1, wobble=True,
                                            oil_temp_f=186.0, speed_rpm=900.0), arrive,
                  org="bravo")
    run_pipeline(settings, db_url)
    h3 = T0 + timedelta(hours=3)
    assert _means(conn, "acme", "oil_temp_f")[h3] == 196.0
    assert _means(conn, "bravo", "oil_temp_f")[h3] == 186.0
    with db.admin(conn):
        windows = dict(conn.execute(
            "SELECT org_id, mean_24h FROM sensor_readings_agg WHERE compressor_id = 'COMP-0001' "
            "AND metric = 'oil_temp_f' AND hour = %s", [h3]).fetchall())
    assert windows == {"acme": pytest.approx((3 * 195 + 196) / 4),
                       "bravo": pytest.approx((3 * 185 + 186) / 4)}

    rules = load_rule_set("oil.yaml", text=OIL_HIGH)
    acme = evaluate(conn, rules, "acme", (T0, h3))
    bravo = evaluate(conn, rules, "bravo", (T0, h3))
    assert {(b.compressor_id, b.hour, b.severity, b.value) for b in acme.breaches} == {
        ("COMP-0001", T0 + timedelta(hours=i), "critical", v)
        for i, v in ((1, 195.0), (2, 195.0), (3, 196.0))}
    assert {(b.compressor_id, b.hour, b.severity, b.value) for b in bravo.breaches} == {
        ("COMP-0001", T0 + timedelta(hours=i), "warning", v)
        for i, v in ((1, 185.0), (2, 185.0), (3, 186.0))}


def test_a_late_reading_of_one_organization_leaves_the_other_as_it_was(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        tmp_path: Path) -> None:
    """A late batch for an hour gold already holds (the merge path) rewrites that
    organization's compressor-hour only, in gold and in the hot cache; a duplicate ts in the
    other organization is no duplicate."""
    _share_comp_0001(conn, fleet)
    landing = settings.landing_path
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(landing / "acme", series("COMP-0001", T0, 2, oil_temp_f=170.0), arrive,
                  org="acme")
    write_landing(landing / "bravo", series("COMP-0001", T0, 2, oil_temp_f=160.0)[:-1],
                  arrive, org="bravo")
    run_pipeline(settings, db_url)
    late = series("COMP-0001", T0, 2, oil_temp_f=172.0)[-1:]   # bravo's missing reading
    write_landing(landing / "bravo", late, arrive + timedelta(hours=1), org="bravo")
    summary = run_pipeline(settings, db_url)
    assert summary.duplicates == 0 and summary.quarantined == {}
    h1 = T0 + timedelta(hours=1)
    assert _means(conn, "acme", "oil_temp_f") == {T0: 170.0, h1: 170.0}
    assert _means(conn, "bravo", "oil_temp_f") == {T0: 160.0,
                                                   h1: pytest.approx((5 * 160 + 172) / 6)}
    assert {(c.org_id, c.compressor_id) for c in summary.changed} == {("bravo", "COMP-0001")}
    _assert_cache_equals_gold(settings.lake_path, tmp_path / "cache")


def test_an_id_two_organizations_share_in_a_flat_file_is_held_back(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any]) -> None:
    """The flat (legacy) layout has no tenant identity: a shared id cannot be attributed."""
    _share_comp_0001(conn, fleet)
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(settings.landing_path, series("COMP-0001", T0, 1), arrive, org="acme")
    write_landing(settings.landing_path, series("COMP-0002", T0, 1), arrive, org="acme")
    summary = run_pipeline(settings, db_url)
    assert summary.quarantined == {"ambiguous_compressor": 6}
    assert {(r[0], r[1], r[2]) for r in _quarantine(settings)} == {
        ("ambiguous_compressor", "COMP-0001", None)}
    assert _hours(conn, "acme", "COMP-0001") == [] and _hours(conn, "bravo", "COMP-0001") == []
    assert _hours(conn, "acme", "COMP-0002") == [T0]
