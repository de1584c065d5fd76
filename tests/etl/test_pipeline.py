"""End to end over hand-made landing files: defects land where they should, nothing valid is
lost, re-runs change nothing, and each organization's aggregates stay its own."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from altaviz.app.cli import main
from altaviz.core.duck import connect as duck_connect
from altaviz.core.fleet import Fleet
from altaviz.core.settings import Settings
from etl.lake import Lake
from etl.models import BronzeResult
from etl.pipeline import run_pipeline
from tests.etl.landing import T0, reading, series, write_landing


def scenario(landing: Path) -> dict[str, int]:
    """Landing files with one of each defect; returns the expected counts."""
    arrive = T0 + timedelta(hours=3, minutes=5)
    acme = series("COMP-0001", T0, 3)
    write_landing(landing, [
        *acme,
        reading("COMP-0001", T0 + timedelta(hours=3), oil_temp_f=None),       # channel missing
        reading("COMP-0001", T0 + timedelta(hours=3, minutes=10), speed_rpm=9999.0),  # range
        reading("COMP-9999", T0),                                                # unknown
        reading("COMP-0001", T0 + timedelta(days=2)),                            # bad ts
        reading(None, T0),                                   # null compressor_id: null_required
    ], arrive, org="acme")
    bravo = series("COMP-0003", T0, 3)
    bravo_rows = [*bravo,
                  reading("COMP-0003", T0 + timedelta(hours=3), flow_mmscfd="abc")]  # not a number
    write_landing(landing, bravo_rows, arrive, org="bravo", text=True)
    # a re-sent copy of two acme rows (exact duplicates) and one conflicting reading
    write_landing(landing, [acme[0], acme[1], reading("COMP-0001", acme[2]["ts"],
                                                       oil_temp_f=171.0)],
                  arrive + timedelta(minutes=10), org="acme")
    # COMP-0002: its first hour arrives 5 hours late
    write_landing(landing, series("COMP-0002", T0 + timedelta(hours=1), 2), arrive, org="acme")
    write_landing(landing, series("COMP-0002", T0, 1), T0 + timedelta(hours=6), org="acme")
    # the null, out-of-range and unparseable channels are those channels missing: their
    # readings are kept
    return {"valid": 18 * 3 + 3, "null_required": 1, "unknown_compressor": 1,
            "bad_timestamp": 1, "conflicting_duplicate": 1, "duplicates": 2,
            "late": 6, "files": 5}


def agg_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(
            "SELECT org_id, compressor_id, metric, hour, n, mean, min, max, stddev, mean_4h, "
            "min_4h, max_4h, stddev_4h, mean_24h, min_24h, max_24h, stddev_24h, rate_of_change, "
            "outliers, late, updated_at FROM sensor_readings_agg "
            "ORDER BY org_id, compressor_id, metric, hour").fetchall()


def lake_con(settings: Settings) -> tuple[duckdb.DuckDBPyConnection, Lake]:
    return duck_connect(), Lake(settings.lake_path)


def test_defects_land_where_they_should(settings: Settings, db_url: str, fleet: Fleet,
                                        conn: psycopg.Connection[Any]) -> None:
    expected = scenario(settings.landing_path)
    summary = run_pipeline(settings, db_url)
    assert summary.files == expected["files"]
    assert summary.quarantined == {k: expected[k] for k in (
        "null_required", "unknown_compressor", "bad_timestamp", "conflicting_duplicate")}
    assert summary.duplicates == expected["duplicates"]
    assert summary.rows_late == expected["late"]
    con, lake = lake_con(settings)
    silver = con.execute(
        f"SELECT count(*), count(DISTINCT (compressor_id, ts)), count(*) FILTER (WHERE late) "
        f"FROM delta_scan('{lake.uri('silver')}')").fetchone()
    assert silver == (expected["valid"], expected["valid"], expected["late"])
    # every row of every landing file is accounted for: silver + quarantine + duplicates
    bronze = con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri('bronze')}')").fetchone()
    quarantined = sum(summary.quarantined.values())
    assert bronze == (expected["valid"] + quarantined + expected["duplicates"],)
    # the text file's unparseable value is kept verbatim in bronze; in silver the channel is
    # missing and the rest of the reading kept, as for a null or out-of-range value
    raw = con.execute(f"SELECT invalid_values FROM delta_scan('{lake.uri('bronze')}') "
                      "WHERE invalid_values IS NOT NULL").fetchall()
    assert raw == [('{"flow_mmscfd":"abc"}',)]
    kept = con.execute(
        f"SELECT compressor_id, ts, flow_mmscfd, oil_temp_f, speed_rpm "
        f"FROM delta_scan('{lake.uri('silver')}') WHERE ts >= ? ORDER BY 1, 2",
        [T0 + timedelta(hours=3)]).fetchall()
    assert kept == [("COMP-0001", T0 + timedelta(hours=3), 6.0, None, 1200.0),
                    ("COMP-0001", T0 + timedelta(hours=3, minutes=10), 6.0, 170.0, None),
                    ("COMP-0003", T0 + timedelta(hours=3), None, 170.0, 1200.0)]
    rows = agg_rows(conn)
    by_comp = {(r[1], r[2], r[3]): r for r in rows}
    key = ("COMP-0001", "oil_temp_f", T0)
    assert by_comp[key][0] == "acme" and by_comp[key][4] == 6
    assert {r[0] for r in rows if r[1] == "COMP-0003"} == {"bravo"}
    # COMP-0002's late hour counts its late readings
    assert by_comp[("COMP-0002", "speed_rpm", T0)][19] == 6
    with conn.transaction():
        run = conn.execute("SELECT status, files, rows_in, rows_quarantined, rows_late, "
                           "hours_upserted FROM etl_runs").fetchone()
        marks = conn.execute("SELECT compressor_id, last_reading_at FROM etl_watermarks "
                             "ORDER BY 1").fetchall()
        dq = conn.execute("SELECT org_id, compressor_id, check_type, passed FROM "
                          "data_quality_checks ORDER BY 1, 2, 3").fetchall()
    assert run == ("succeeded", 5, summary.rows_in, quarantined, 6, summary.hours_upserted)
    assert marks[0] == ("COMP-0001", T0 + timedelta(hours=3, minutes=10))
    assert ("acme", "COMP-0001", "consistency", False) in dq
    # the unparseable flow value is not a schema violation of the reading; its hour 3 holds
    # one reading of six
    assert ("bravo", "COMP-0003", "consistency", True) in dq
    assert ("bravo", "COMP-0003", "completeness", False) in dq


def test_rerun_changes_nothing(settings: Settings, db_url: str, fleet: Fleet,
                               conn: psycopg.Connection[Any]) -> None:
    scenario(settings.landing_path)
    run_pipeline(settings, db_url)
    before = agg_rows(conn)
    _, lake = lake_con(settings)
    versions = {t: lake.table(t).version() for t in ("bronze", "silver", "gold", "quarantine")}
    again = run_pipeline(settings, db_url)
    assert again.files == 0 and again.rows_in == 0 and again.hours_upserted == 0
    assert agg_rows(conn) == before
    assert {t: lake.table(t).version() for t in versions} == versions


@pytest.mark.parametrize("crash_after", ["bronze", "silver", "gold", "aggregates"])
def test_crash_between_stages_then_rerun(settings: Settings, db_url: str, fleet: Fleet,
                                         conn: psycopg.Connection[Any], tmp_path: Path,
                                         crash_after: str, pg_server: Any) -> None:
    scenario(settings.landing_path)

    def crash(stage: str) -> None:
        if stage == crash_after:
            raise RuntimeError(f"simulated crash after {stage}")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pipeline(settings, db_url, after_stage=crash)
    recovered = run_pipeline(settings, db_url)
    assert recovered.files == (5 if crash_after == "never" else 0)
    crashed_rows = [r[:-1] for r in agg_rows(conn)]
    # one clean run over the same landing files in a fresh lake and database
    from tests.conftest import _fresh_database
    clean_url = _fresh_database(pg_server, "altaviz_test_template")
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import two_tenant_fleet
    with psycopg.connect(clean_url) as clean_conn:
        load_fleet(clean_conn, two_tenant_fleet())
        clean_settings = settings.model_copy(update={"lake_dir": tmp_path / "clean_lake"})
        run_pipeline(clean_settings, clean_url)
        assert [r[:-1] for r in agg_rows(clean_conn)] == crashed_rows
    with conn.transaction():
        statuses = [r[0] for r in conn.execute("SELECT status FROM etl_runs ORDER BY started_at")]
    assert statuses == ["failed", "succeeded"]
    con, lake = lake_con(settings)
    assert con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri('quarantine')}')"
                       ).fetchone() == (4,)


def test_cli_run_maintain_and_dq_report(settings: Settings, db_url: str, fleet: Fleet,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    scenario(settings.landing_path)
    app_settings = settings.model_copy(update={"database_url": db_url})

    def run(argv: list[str]) -> int:
        """The real CLI, on these settings (instead of the environment)."""
        return main(argv, settings=app_settings)

    assert run(["etl", "run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "5 files, 63 rows in, 4 quarantined, 2 duplicates, 6 late" in out
    assert run(["etl", "maintain", "--retention-hours", "0"]) == 1  # below table retention
    assert "vacuum of bronze refused" in capsys.readouterr().err
    assert run(["etl", "maintain"]) == 0
    assert "compacted" in capsys.readouterr().out
    assert run(["dq", "report", "--org", "bravo", "--all"]) == 0
    out = capsys.readouterr().out
    assert "COMP-0003" in out and "COMP-0001" not in out
    assert out.splitlines()[0].startswith("data quality: ")       # the summary comes first
    assert run(["dq", "report", "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert {c["compressor_id"] for c in checks} >= {"COMP-0001", "COMP-0003"}
    failing = [c for c in checks if not c["passed"]]
    assert all(c["reason"] for c in checks)
    assert run(["dq", "report"]) == 0
    out = capsys.readouterr().out
    for c in failing:                 # every failing unit is listed with its reason
        assert any(c["compressor_id"] in line and c["reason"] in line
                   for line in out.splitlines()), c
    assert f"{len(checks)} checks of " in out and f"{len(failing)} failed" in out
    assert run(["dq", "report", "--org", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert "unknown organization 'nosuch'" in err and "Error:" not in err
    assert run(["dq", "prune", "--keep-days", "30"]) == 0   # every check is this run's
    assert "deleted 0 data-quality checks older than 30 days" in capsys.readouterr().out
    assert run(["dq", "prune", "--keep-days", "0"]) != 0
    assert "--keep-days must be at least 1, got 0" in capsys.readouterr().err


def test_crash_between_quarantine_and_silver_commits_then_new_files(
        settings: Settings, db_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """Silver commits quarantine first and silver last. A run that dies between the two and is
    re-run only after new files arrived spans the old batches and the new ones: the old
    batches' quarantined rows must not be written a second time (found by the ETL kill
    loop, which failed with one quarantine row too many)."""
    expected = scenario(settings.landing_path)
    real_append = Lake.append

    def dies_before_silver(self: Lake, table: str, data: Any, batch_id: int) -> None:
        if table == "silver":
            raise RuntimeError("simulated crash before the silver commit")
        real_append(self, table, data, batch_id)

    monkeypatch.setattr(Lake, "append", dies_before_silver)
    with pytest.raises(RuntimeError, match="before the silver commit"):
        run_pipeline(settings, db_url)
    monkeypatch.setattr(Lake, "append", real_append)
    con, lake = lake_con(settings)
    quarantined = sum(v for k, v in expected.items()
                      if k not in ("valid", "duplicates", "late", "files"))
    assert con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri('quarantine')}')"
                       ).fetchone() == (quarantined,)
    # a new file with one reading of an unknown compressor arrives before the re-run
    write_landing(settings.landing_path,
                  [reading("COMP-9998", T0 + timedelta(hours=4))],
                  T0 + timedelta(hours=4, minutes=5), org="acme")
    summary = run_pipeline(settings, db_url)
    assert summary.files == 1
    rows = con.execute(f"SELECT reason, source_file, source_row, count(*) "
                       f"FROM delta_scan('{lake.uri('quarantine')}') GROUP BY ALL").fetchall()
    assert all(r[3] == 1 for r in rows), rows
    assert len(rows) == quarantined + 1
    assert con.execute(f"SELECT count(*) FROM delta_scan('{lake.uri('silver')}')"
                       ).fetchone() == (expected["valid"],)


def test_a_run_cut_off_earlier_is_marked_interrupted(settings: Settings, db_url: str,
                                                     fleet: Fleet,
                                                     conn: psycopg.Connection[Any]) -> None:
    """A run whose process died (or whose database went away) stays 'running' in etl_runs;
    the next run, holding the lake's writer lock, marks it failed as interrupted."""
    with conn.transaction():
        conn.execute("INSERT INTO etl_runs (run_id, status) VALUES ('killed-run', 'running')")
    scenario(settings.landing_path)
    summary = run_pipeline(settings, db_url)
    with conn.transaction():
        rows = dict(conn.execute("SELECT run_id, status FROM etl_runs").fetchall())
        error = conn.execute("SELECT error FROM etl_runs WHERE run_id = 'killed-run'"
                             ).fetchone()
    assert rows == {"killed-run": "failed", summary.run_id: "succeeded"}
    assert error is not None and error[0].startswith("interrupted:")
    assert summary.run_id in error[0]


def test_hours_changed_outside_the_schedule_reach_the_next_scheduled_run(
        settings: Settings, db_url: str, fleet: Fleet) -> None:
    """A late batch loaded by `altaviz etl run` (not by the scheduled pipeline) leaves its
    changed hours in etl_unevaluated_hours; the next scheduled ETL activity finds nothing new
    to load, yet reports those hours for the rules, once."""
    from worker import etl_runner

    rows = [reading("COMP-0001", T0 + timedelta(hours=k, minutes=10 * i))
            for k in range(30) if k != 10 for i in range(6)]
    write_landing(settings.landing_path, rows, T0 + timedelta(hours=30, minutes=5))
    scheduled = etl_runner(settings, db_url)
    first = scheduled(T0 + timedelta(hours=29))
    # every hour loaded, however old (no re-evaluation window cuts the first 5 off)
    assert first.changed_hours == [T0, T0 + timedelta(hours=29)]
    # hour 10 arrives late and is loaded by hand
    write_landing(settings.landing_path,
                  [reading("COMP-0001", T0 + timedelta(hours=10, minutes=10 * i),
                           oil_temp_f=190.0) for i in range(6)],
                  T0 + timedelta(hours=30, minutes=20))
    assert run_pipeline(settings, db_url).files == 1
    second = scheduled(T0 + timedelta(hours=30))
    # hour 10 and the later hours whose windows hold it (up to the last one stored, 29)
    assert second.changed_hours == [T0 + timedelta(hours=10), T0 + timedelta(hours=29)]
    assert scheduled(T0 + timedelta(hours=30)).changed_hours == []


def test_stages_one_call_each_match_one_run(
        settings: Settings, db_url: str, fleet: Fleet, conn: psycopg.Connection[Any],
        tmp_path: Path, pg_server: Any) -> None:
    """The stages run one call each, as the ETL worker's activities run them (a runner of
    their own, the writer lock per stage), leave the same PostgreSQL rows as one
    ``run_pipeline``; the stages' progress reaches the caller."""
    from etl.pipeline import STAGES, StageRunner

    expected = scenario(settings.landing_path)
    seen: list[tuple[str, float]] = []
    runner = StageRunner(settings, db_url)
    try:
        results = {stage: runner.run(stage, "stages-run",
                                     progress=lambda s, f: seen.append((s, f)))
                   for stage in STAGES}
    finally:
        runner.close()
    assert {s for s, f in seen if 0 < f < 1} >= {"bronze", "silver", "gold", "aggregates"}
    bronze = results["bronze"]
    assert isinstance(bronze, BronzeResult) and bronze.files == expected["files"]
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import _fresh_database, two_tenant_fleet
    clean_url = _fresh_database(pg_server, "altaviz_test_template")
    with psycopg.connect(clean_url) as clean_conn:
        load_fleet(clean_conn, two_tenant_fleet())
        one = run_pipeline(settings.model_copy(update={"lake_dir": tmp_path / "clean_lake"}),
                           clean_url)
        assert one.files == expected["files"] and one.rows_late == expected["late"]
        assert [r[:-1] for r in agg_rows(clean_conn)] == [r[:-1] for r in agg_rows(conn)]
    with conn.transaction():
        dq = conn.execute("SELECT count(*) FROM data_quality_checks WHERE run_id = "
                          "'stages-run'").fetchone()
    assert dq is not None and dq[0] > 0


def test_silver_and_quarantine_files_carry_batch_statistics(
        settings: Settings, db_url: str, fleet: Fleet) -> None:
    """A lake made before the statistics columns existed gets them; its next batch's files
    can then be told apart, so the hourly stages read one date partition of silver."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from etl.lake import PARTITIONS, SCHEMAS, TABLE_CONFIG
    lake = Lake(settings.lake_path)
    for table in ("silver", "quarantine"):  # as an older version created them
        write_deltalake(lake.uri(table), SCHEMAS[table].empty_table(), mode="append",
                        partition_by=PARTITIONS[table], configuration=TABLE_CONFIG)
    scenario(settings.landing_path)
    run_pipeline(settings, db_url)
    write_landing(settings.landing_path, [
        *series("COMP-0001", T0 + timedelta(days=3), 1),
        reading("COMP-9999", T0 + timedelta(days=3, minutes=5))],
        T0 + timedelta(days=3, hours=1), org="acme")
    run_pipeline(settings, db_url)
    mark = lake.batch_mark("silver")
    day = (T0 + timedelta(days=3)).date().isoformat()
    assert lake.partitions_for_batches("silver", mark - 1, mark) == {day}
    assert lake.rows_for_batches("silver", mark - 1, mark) == 6
    assert lake.rows_for_batches("quarantine", mark - 1, mark) == 1
    actions = pa.table(lake.table("silver").get_add_actions(flatten=True))
    assert {"min.batch_id", "max.ts", "min.compressor_id"} <= set(actions.column_names)


def test_compaction_keeps_golds_writer_properties(settings: Settings, db_url: str,
                                                  fleet: Fleet) -> None:
    """Gold's files are written without dictionaries on floating-point columns and with LZ4
    (etl.lake.GOLD_WRITER_PROPERTIES); `altaviz etl maintain` rewrites them the same way
    instead of with the defaults of delta-rs's optimize (dictionaries, ZSTD)."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from etl.maintenance import maintain

    for k in range(2):   # two runs: two gold files in the day's partition, to compact
        write_landing(settings.landing_path,
                      [reading("COMP-0001", T0 + timedelta(hours=k, minutes=10 * i))
                       for i in range(6)], T0 + timedelta(hours=k + 1, minutes=5))
        run_pipeline(settings, db_url)
    done = {m.table: m for m in maintain(settings.lake_path)}
    assert done["gold"].files_added >= 1 and done["gold"].files_removed >= 2
    gold = DeltaTable(str(settings.lake_path / "gold"))
    for uri in gold.file_uris():
        meta = pq.ParquetFile(uri.removeprefix("file://")).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        mean = meta.row_group(0).column(names.index("mean"))
        assert mean.compression == "LZ4"   # pyarrow names the LZ4_RAW codec "LZ4"
        assert not mean.has_dictionary_page
