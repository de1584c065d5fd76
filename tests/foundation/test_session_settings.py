"""Session settings every Altaviz connection carries, and parallel plans under row-level
security: JIT is off (it cost ~10 s per latest-hour evaluation on a PostgreSQL built with LLVM)
and a tenant query may use parallel workers, which still see only the tenant's rows."""

from __future__ import annotations

from typing import Any

import psycopg

from altaviz.core import db
from altaviz.core.fleet import Fleet


def _show(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def test_connections_run_without_jit(db_url: str) -> None:
    with db.connect(db_url) as conn:
        assert _show(conn, "jit") == "off"


def test_a_users_own_options_are_kept(db_url: str) -> None:
    sep = "&" if "?" in db_url else "?"
    url = f"{db_url}{sep}options=-c%20statement_timeout%3D4321"
    with db.connect(url) as conn:
        assert _show(conn, "statement_timeout") == "4321ms"
        assert _show(conn, "jit") == "off"


def test_pool_connections_run_without_jit(db_url: str) -> None:
    with db.connection_pool(db_url, max_size=1) as pool, pool.connection() as conn:
        assert _show(conn, "jit") == "off"


def test_tenant_query_runs_in_parallel_and_workers_see_only_the_tenant(
        conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    with db.admin(conn):
        for org, comp, n in (("acme", "COMP-0001", 3000), ("bravo", "COMP-0003", 5000)):
            conn.execute("""
                INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean)
                SELECT %s, %s, 'oil_temp_f', '2026-11-01T00:00Z'::timestamptz
                       + g * interval '1 hour', 6, 170.0
                FROM generate_series(1, %s) g""", [org, comp, n])
        conn.execute("ANALYZE sensor_readings_agg")
    query = "SELECT count(*) FROM sensor_readings_agg WHERE mean > 0"
    with db.tenant(conn, "acme"):
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                        "min_parallel_table_scan_size = 0", "enable_indexscan = off",
                        "enable_bitmapscan = off"):
            conn.execute(f"SET LOCAL {setting}")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + query).fetchall())
        row = conn.execute(query).fetchone()
    # current_org() in every policy must not force a serial plan ...
    assert "Workers Launched: " in plan and "Workers Launched: 0" not in plan, plan
    # ... and the workers apply acme's policy, not nobody's or everybody's
    assert row is not None and row[0] == 3000
