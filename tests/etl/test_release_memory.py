"""Between stages the pipeline drops the finished stage's DuckDB temp tables (and trims the
allocators), so a week's first load does not stack every stage's leftovers."""

from __future__ import annotations

from etl import duck
from etl.pipeline import release_memory


def test_temp_tables_are_dropped_and_the_connection_stays_usable() -> None:
    con = duck.connect()
    try:
        con.execute("CREATE TEMP TABLE classified AS SELECT range AS x FROM range(100000)")
        con.execute('CREATE TEMP TABLE "odd ""name""" AS SELECT 1 AS y')
        con.execute("CREATE TABLE agg_existing AS SELECT 1 AS z")   # not temp: kept
        release_memory(con)
        temp = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()
        kept = con.execute("SELECT count(*) FROM agg_existing").fetchone()
        assert temp == (0,) and kept == (1,)
        # the next stage recreates what it needs
        con.execute("CREATE OR REPLACE TEMP TABLE classified AS SELECT 2 AS x")
        assert con.execute("SELECT x FROM classified").fetchall() == [(2,)]
    finally:
        con.close()
