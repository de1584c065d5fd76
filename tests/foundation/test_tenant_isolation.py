"""Tenant isolation in the database, as the application role: organization A sees and changes
nothing of organization B, in every tenant table and view."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet

TENANT_VIEWS = [
    "open_alerts", "fleet_health_by_site", "data_quality_summary", "sensor_readings_agg"]
#: Tables with an org_id that no tenant role reads, isolated by privilege instead of row-level
#: security: the ETL's staging of late hours, which COPY fills (it cannot fill a table under
#: row-level security) and only the ETL reads (migration 200).
ETL_PRIVATE = ["etl_agg_staging"]


def _seed_every_table(conn: psycopg.Connection[Any]) -> None:
    """One row per organization in every tenant table (as the owner)."""
    with db.admin(conn):
        for org, comp, site in (("acme", "COMP-0001", "PB-01"), ("bravo", "COMP-0003", "EF-01")):
            conn.execute("""
                INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean)
                VALUES (%s, %s, 'oil_temp_f', '2026-11-01T00:00Z', 6, 170.0)""", [org, comp])
            rs = conn.execute("""
                INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content)
                VALUES (%s, 1, %s, 'test', '{}') RETURNING rule_set_id""",
                [org, f"hash-{org}"]).fetchone()
            assert rs is not None
            conn.execute("""
                INSERT INTO alert_rules (rule_set_id, rule_id, metric, kind, definition)
                VALUES (%s, 'oil_temp_high', 'oil_temp_f', 'threshold', '{}')""", [rs[0]])
            alert_id = f"alert/{org}/{comp}/oil_temp_high/1"
            conn.execute("""
                INSERT INTO alert_history (alert_id, org_id, compressor_id, rule_id, rule_set_id,
                    metric, value, threshold, severity, condition_state, ack_state, state,
                    breach_hour, opened_at, workflow_id)
                VALUES (%s, %s, %s, 'oil_temp_high', %s, 'oil_temp_f', 185, 180, 'warning',
                        'active', 'unacknowledged', 'open', now(), now(), %s)""",
                [alert_id, org, comp, rs[0], alert_id])
            conn.execute("""
                INSERT INTO alert_events (event_key, alert_id, org_id, event_type, occurred_at)
                VALUES (%s, %s, %s, 'opened', now())""", [alert_id + ":1", alert_id, org])
            conn.execute("""
                INSERT INTO contacts (org_id, contact_id, name, role, site_ids, apprise_urls)
                VALUES (%s, 'tech1', 'Tech One', 'technician', %s, '{json://127.0.0.1/x}')""",
                [org, [site]])
            conn.execute("""
                INSERT INTO notifications (org_id, alert_id, step, contact_id, channel, attempt,
                                           status)
                VALUES (%s, %s, 'opened', 'tech1', 'json', 1, 'sent')""", [org, alert_id])
            conn.execute("""
                INSERT INTO data_quality_checks (org_id, compressor_id, run_id, check_type,
                                                 measured, threshold, passed)
                VALUES (%s, %s, 'run1', 'freshness', 5, 15, true)""", [org, comp])
            conn.execute("""
                INSERT INTO etl_watermarks (org_id, compressor_id, last_reading_at, last_loaded_at)
                VALUES (%s, %s, now(), now())""", [org, comp])
            conn.execute("""
                INSERT INTO maintenance_windows (org_id, compressor_id, starts_at, ends_at,
                                                 reason, created_by)
                VALUES (%s, %s, now(), now() + interval '1 hour', 'valve job', 'sup')""",
                [org, comp])


def _tenant_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table with an org_id column (partitions and :data:`ETL_PRIVATE` excluded): all
    must isolate tenants."""
    with db.admin(conn):
        rows = conn.execute("""
            SELECT c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'org_id'
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND NOT c.relname = ANY(%s)
            ORDER BY 1""", [ETL_PRIVATE]).fetchall()
    return [r[0] for r in rows]


def test_no_tenant_role_reads_the_etl_private_tables(conn: psycopg.Connection[Any]) -> None:
    with db.admin(conn):
        for table in ETL_PRIVATE:
            for role in (db.APP_ROLE, db.ETL_ROLE):
                may = conn.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT, INSERT, UPDATE, DELETE')",
                    [role, table]).fetchone()
                assert may == (role == db.ETL_ROLE,), (table, role)
            # the ETL's tenant role reads it, and only the ETL login writes it
            assert conn.execute("SELECT has_table_privilege(%s, %s, 'INSERT, UPDATE, DELETE')",
                                [db.ETL_ROLE, table]).fetchone() == (False,)


def test_every_tenant_table_has_row_level_security(
    conn: psycopg.Connection[Any], fleet: Fleet
) -> None:
    tables = _tenant_tables(conn)
    assert "agg_compressor_hours" in tables and "alert_events" in tables
    with db.admin(conn):
        missing = [r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND NOT relrowsecurity",
            [tables])]
    assert missing == [], f"tables without row-level security: {missing}"


def test_org_a_reads_nothing_of_org_b(conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    _seed_every_table(conn)
    tables = _tenant_tables(conn)
    for relation in [*tables, *TENANT_VIEWS]:
        with db.admin(conn):
            total_b = conn.execute(
                f"SELECT count(*) FROM {relation} WHERE org_id = 'bravo'").fetchone()
        with db.tenant(conn, "acme"):
            seen_b = conn.execute(
                f"SELECT count(*) FROM {relation} WHERE org_id <> 'acme'").fetchone()
            seen_a = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()
        assert seen_b == (0,), f"{relation}: acme sees rows of another organization"
        if relation not in ("alert_rule_sets",) and total_b and total_b[0]:
            assert seen_a and seen_a[0] > 0, f"{relation}: acme sees none of its own rows"
    # The default rule set (org_id NULL) is readable by every tenant.
    with db.admin(conn):
        conn.execute("""INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content)
                        VALUES (NULL, 1, 'default', 'rules/thresholds.yaml', '{}')""")
    with db.tenant(conn, "acme"):
        visible = conn.execute("SELECT org_id FROM alert_rule_sets ORDER BY 1 NULLS LAST"
                               ).fetchall()
    assert visible == [("acme",), (None,)]


@pytest.mark.parametrize("statement", [
    "INSERT INTO sites (org_id, site_id, name, basin) VALUES ('bravo', 'X', 'x', 'Permian')",
    "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n)"
    " VALUES ('bravo', 'COMP-0003', 'oil_temp_f', '2026-11-02T00:00Z', 6)",
    "INSERT INTO contacts (org_id, contact_id, name, role, apprise_urls)"
    " VALUES ('bravo', 'spy', 'Spy', 'technician', '{json://x}')",
    "UPDATE compressors SET org_id = 'bravo' WHERE compressor_id = 'COMP-0001'",
    "UPDATE alert_history SET org_id = 'bravo'",
    "INSERT INTO alert_rule_sets (org_id, version, content_hash, source, content)"
    " VALUES (NULL, 9, 'x', 'x', '{}')",
])
def test_org_a_cannot_write_rows_of_org_b(
    conn: psycopg.Connection[Any], fleet: Fleet, statement: str
) -> None:
    _seed_every_table(conn)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(conn, "acme"):
        conn.execute(statement)


def test_org_a_updates_and_deletes_reach_no_row_of_org_b(
    conn: psycopg.Connection[Any], fleet: Fleet
) -> None:
    _seed_every_table(conn)
    with db.tenant(conn, "acme"):
        updated = conn.execute(
            "UPDATE alert_history SET acknowledged_by = 'intruder' WHERE org_id = 'bravo'")
        deleted = conn.execute("DELETE FROM contacts WHERE org_id = 'bravo'")
        assert updated.rowcount == 0 and deleted.rowcount == 0
    with db.admin(conn):
        assert conn.execute("SELECT count(*) FROM contacts WHERE org_id = 'bravo'"
                            ).fetchone() == (1,)


def test_without_tenant_setting_the_app_role_sees_nothing(
    conn: psycopg.Connection[Any], fleet: Fleet
) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE altaviz_app")
        assert conn.execute("SELECT count(*) FROM compressors").fetchone() == (0,)


def test_alert_events_refuses_update_and_delete(
    conn: psycopg.Connection[Any], fleet: Fleet
) -> None:
    _seed_every_table(conn)
    for statement in ("UPDATE alert_events SET actor = 'x'", "DELETE FROM alert_events",
                      "TRUNCATE alert_events CASCADE"):
        # Even the owner (who bypasses RLS) is refused by the trigger.
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"), \
                db.admin(conn):
            conn.execute(statement)
    with db.admin(conn):
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (2,)


def test_invalid_org_id_is_refused_before_any_sql(conn: psycopg.Connection[Any]) -> None:
    from altaviz.core.errors import TenantError

    with pytest.raises(TenantError), db.tenant(conn, "acme'; DROP TABLE sites; --"):
        pass


def test_isolation_holds_on_postgresql_15(pg15_url: str) -> None:
    from altaviz.core.fleet_store import load_fleet
    from tests.conftest import two_tenant_fleet

    db.migrate(pg15_url)
    with db.connect(pg15_url) as c:
        load_fleet(c, two_tenant_fleet())
        with db.tenant(c, "bravo"):
            orgs = {r[0] for r in c.execute("SELECT org_id FROM compressors")}
        assert orgs == {"bravo"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.tenant(c, "bravo"):
            c.execute("INSERT INTO sites (org_id, site_id, name, basin)"
                      " VALUES ('acme', 'Z', 'z', 'Permian')")
