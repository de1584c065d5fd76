"""Upgrading a lake whose silver and gold rows have no ``org_id`` (etl/migrate.py): the rows
get their organization from the fleet, the stages carry on from their marks, and the results
are those of a lake that always had the column. Real Delta tables, real PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import psycopg
import pytest
from deltalake import DeltaTable, write_deltalake

from altaviz.app.cli import main
from altaviz.core.fleet import Compressor, Fleet
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from etl.lake import PARTITIONS, Lake, commit
from etl.migrate import tables_to_migrate
from etl.pipeline import run_pipeline
from tests.etl.landing import CARRIED, T0, series, write_landing


def _rows(lake: Lake, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table``, as sorted tuples of its columns in name order (the column
    order of a rewritten table may differ)."""
    data = DeltaTable(lake.uri(table)).to_pyarrow_table()
    names = sorted(data.column_names)
    return sorted((tuple(r[n] for n in names) for r in data.to_pylist()), key=repr)


def _drop_org_id(lake: Lake) -> None:
    """Make silver and gold look like tables written without ``org_id`` (same rows, same
    batch marks)."""
    for name in ("silver", "gold"):
        mark = lake.batch_mark(name)
        data = DeltaTable(lake.uri(name)).to_pyarrow_table().drop_columns(["org_id"])
        write_deltalake(lake.uri(name), data, mode="overwrite", schema_mode="overwrite",
                        partition_by=PARTITIONS[name], commit_properties=commit(name, mark))
    assert tables_to_migrate(lake) == ["silver", "gold"]


def _hours(conn: psycopg.Connection[Any], org: str, comp: str) -> list[Any]:
    with conn.transaction():
        return [r[0] for r in conn.execute(
            "SELECT DISTINCT hour FROM sensor_readings_agg WHERE org_id = %s AND "
            "compressor_id = %s ORDER BY 1", [org, comp]).fetchall()]


def _first_load(settings: Settings) -> None:
    arrive = T0 + timedelta(hours=3, minutes=5)
    write_landing(settings.landing_path / "acme", series("COMP-0001", T0, 3), arrive,
                  org="acme")
    write_landing(settings.landing_path, series("COMP-0003", T0, 3, oil_temp_f=160.0),
                  arrive, org="bravo")      # flat layout


def _next_hour(settings: Settings) -> None:
    arrive = T0 + timedelta(hours=4, minutes=5)
    h3 = T0 + timedelta(hours=3)
    write_landing(settings.landing_path / "acme", series("COMP-0001", h3, 1), arrive,
                  org="acme")
    write_landing(settings.landing_path / "bravo", series("COMP-0003", h3, 1,
                                                          oil_temp_f=160.0), arrive, org="bravo")


def test_the_first_run_gives_an_old_lake_its_org_ids_and_carries_on(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        tmp_path: Any) -> None:
    _first_load(settings)
    run_pipeline(settings, db_url)
    lake = Lake(settings.lake_path)
    before = {t: _rows(lake, t) for t in ("silver", "gold")}
    marks = {t: lake.batch_mark(t) for t in ("silver", "gold")}
    _drop_org_id(lake)

    _next_hour(settings)
    summary = run_pipeline(settings, db_url)
    assert tables_to_migrate(lake) == []
    assert summary.quarantined == {}
    for table in ("silver", "gold"):
        old = DeltaTable(lake.uri(table)).to_pyarrow_table()
        kept = old.filter(old.column("batch_id").to_numpy() <= marks[table])
        names = sorted(kept.column_names)
        assert sorted((tuple(r[n] for n in names) for r in kept.to_pylist()),
                      key=repr) == before[table], table
    assert _hours(conn, "acme", "COMP-0001") == [T0 + timedelta(hours=i) for i in range(4)]
    assert _hours(conn, "bravo", "COMP-0003") == [T0 + timedelta(hours=i) for i in range(4)]

    # the same landing files into a lake that never lost the column: the same gold
    fresh = settings.model_copy(update={"lake_dir": tmp_path / "lake2"})
    with conn.transaction():
        conn.execute("TRUNCATE etl_stage_progress")
    run_pipeline(fresh, db_url)
    ref = DeltaTable(str(fresh.lake_path / "gold")).to_pyarrow_table(
        columns=["org_id", "compressor_id", "metric", "hour", "n", "mean", "mean_24h"])
    got = DeltaTable(lake.uri("gold")).to_pyarrow_table(
        columns=["org_id", "compressor_id", "metric", "hour", "n", "mean", "mean_24h"])

    def keyed(t: Any) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        return {(r["org_id"], r["compressor_id"], r["metric"], r["hour"]):
                (r["n"], r["mean"], r["mean_24h"]) for r in t.to_pylist()}
    ours, theirs = keyed(got), keyed(ref)
    assert ours.keys() == theirs.keys()
    for key, (n, mean, mean_24h) in theirs.items():
        assert ours[key][0] == n
        assert ours[key][1] == pytest.approx(mean, rel=1e-9)
        assert ours[key][2] == pytest.approx(mean_24h, rel=1e-9)


def test_the_command_names_ids_the_fleet_cannot_place_and_takes_assignments(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    _first_load(settings)
    run_pipeline(settings, db_url)
    lake = Lake(settings.lake_path)
    before = {t: _rows(lake, t) for t in ("silver", "gold")}
    _drop_org_id(lake)
    # since the old lake was written, bravo registered a compressor of acme's id
    shared = Compressor(org_id="bravo", compressor_id="COMP-0001", site_id="EF-01",
                        model="Ariel JGK/4", driver=None, rated_hp=1380, rated_rpm=1400,
                        stages=2, installed_on=date(2020, 1, 1), channels=CARRIED)
    load_fleet(conn, fleet.model_copy(update={"compressors": (*fleet.compressors, shared)}))
    app_settings = settings.model_copy(update={"database_url": db_url})

    def run(argv: list[str]) -> int:
        return main(argv, settings=app_settings)

    assert run(["etl", "migrate"]) == 1
    err = capsys.readouterr().err
    assert "COMP-0001" in err and "COMP-0003" not in err and "--assign" in err
    assert tables_to_migrate(lake) == ["silver", "gold"]     # nothing rewritten
    assert run(["etl", "migrate", "--assign", "COMP-0001=acme"]) == 0
    out = capsys.readouterr().out
    assert "silver  rewritten with org_id" in out and "gold    rewritten with org_id" in out
    assert {t: _rows(lake, t) for t in ("silver", "gold")} == before
    assert run(["etl", "migrate"]) == 0
    assert "nothing to do" in capsys.readouterr().out
