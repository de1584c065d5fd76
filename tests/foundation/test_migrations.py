"""Migrations: apply to an empty database, re-apply is a no-op, the schema is what the code
expects, a broken migration rolls back and names its file and line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.errors import MigrationError
from altaviz.core.telemetry import METRICS

EXPECTED_TABLES = {
    "organizations", "sites", "compressors", "agg_compressor_hours", "alert_rule_sets",
    "alert_rules", "alert_history", "alert_events", "contacts", "notifications",
    "data_quality_checks", "etl_runs", "etl_watermarks", "maintenance_windows",
    "schema_migrations",
}
PREPARABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES"}
EXPECTED_VIEWS = {"open_alerts", "fleet_health_by_site", "data_quality_summary",
                  "sensor_readings_agg"}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _schema_fingerprint(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()


def test_apply_to_empty_database_then_reapply_is_noop(empty_db_url: str) -> None:
    applied = db.migrate(empty_db_url)
    assert [m.version for m in applied] == [m.version for m in db.migration_files()]
    assert EXPECTED_TABLES <= _tables(empty_db_url)
    before = _schema_fingerprint(empty_db_url)
    assert db.migrate(empty_db_url) == []
    assert _schema_fingerprint(empty_db_url) == before
    status = db.migration_status(empty_db_url)
    assert status.pending == [] and status.changed == []


def test_schema_matches_what_the_code_expects(db_url: str) -> None:
    with psycopg.connect(db_url) as c:
        views = {r[0] for r in c.execute(
            "SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
        assert EXPECTED_VIEWS <= views
        # agg_compressor_hours is partitioned by month and keyed for idempotent upserts, one
        # row per compressor-hour (070); its arrays follow the metrics' order in the code.
        kind = c.execute("SELECT relkind FROM pg_class WHERE relname = 'agg_compressor_hours'"
                         ).fetchone()
        assert kind == ("p",)
        names = c.execute("SELECT agg_metric_names()").fetchone()
        assert names == ([m.name for m in METRICS],)
        pk = c.execute("""
            SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_constraint con
            CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
            WHERE con.conrelid = 'agg_compressor_hours'::regclass AND con.contype = 'p'
        """).fetchone()
        assert pk == (["org_id", "hour", "compressor_id"],)  # hour-major (021)
        part = c.execute("SELECT ensure_agg_partition('2026-03-15T12:00Z')").fetchone()
        assert part == ("agg_compressor_hours_2026_03",)
        # Every named query parses against the schema (PREPARE checks tables and columns).
        for area_file in sorted(db.QUERIES_DIR.glob("*.sql")):
            for name, text in db.queries(area_file.stem).items():
                verb = text.lstrip().split(None, 1)[0].upper()
                if "%(" in text or "%s" in text or verb not in PREPARABLE:
                    continue
                c.execute(f"PREPARE q_{area_file.stem}_{name} AS {text}")


def test_broken_migration_rolls_back_and_names_file_and_line(
    empty_db_url: str, tmp_path: Path
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migrations)
    (migrations / "900_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "ALTER TABLE no_such_table ADD COLUMN x int;\n"
    )
    with pytest.raises(MigrationError) as err:
        db.migrate(empty_db_url, migrations)
    message = str(err.value)
    assert "900_broken.sql" in message
    assert "line 3" in message
    assert "no_such_table" in message
    # Earlier files applied, the broken one left nothing behind.
    assert "half_done" not in _tables(empty_db_url)
    status = db.migration_status(empty_db_url, migrations)
    assert [m.name for m in status.pending] == ["broken"]


def test_edited_applied_migration_is_reported(empty_db_url: str, tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, migrations)
    db.migrate(empty_db_url, migrations)
    first = sorted(migrations.glob("001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    status = db.migration_status(empty_db_url, migrations)
    assert [m.version for m in status.changed] == [1]


def test_migrations_apply_on_postgresql_15(pg15_url: str) -> None:
    db.migrate(pg15_url)
    assert EXPECTED_TABLES <= _tables(pg15_url)
    assert db.migrate(pg15_url) == []
