"""The epoch-arithmetic time expressions of etl.metrics agree with DuckDB's own calendar
functions (which go through ICU on TIMESTAMPTZ and are several times slower)."""

from __future__ import annotations

from altaviz.core.duck import connect
from etl.metrics import hour_of, more_than_minutes_after, utc_date_of


def test_hour_date_and_delay_match_duckdbs_calendar() -> None:
    con = connect()
    try:
        con.execute("""
            CREATE TABLE t AS
            SELECT ts, ts + to_microseconds(d) AS arrived
            FROM (SELECT unnest([
                    TIMESTAMPTZ '2000-01-01 00:00:00+00',
                    TIMESTAMPTZ '2024-02-29 23:59:59.999999+00',
                    TIMESTAMPTZ '2025-12-31 23:00:00+00', TIMESTAMPTZ '2026-03-08 02:30:00+00',
                    TIMESTAMPTZ '2026-11-01 06:59:59.999999+00',
                    TIMESTAMPTZ '2038-01-19 03:14:08+00'
                  ]) AS base) b,
                 (SELECT unnest(generate_series(0, 172800000000, 599999999)) AS step) s,
                 (SELECT unnest([0, 1, 5399999999, 5400000000, 5400000001, 90061000000]) AS d) e,
                 LATERAL (SELECT base + to_microseconds(step) AS ts)
        """)
        wrong = con.execute(f"""
            SELECT count(*) FILTER (WHERE {hour_of('ts')} IS DISTINCT FROM date_trunc('hour', ts)),
                   count(*) FILTER (WHERE {utc_date_of('ts')} <> strftime(ts, '%Y-%m-%d')),
                   count(*) FILTER (WHERE ({more_than_minutes_after('arrived', 'ts', 90)})
                                    <> (arrived - ts > INTERVAL 90 MINUTES)),
                   count(*) FILTER (WHERE arrived - ts > INTERVAL 90 MINUTES),
                   count(*)
            FROM t
        """).fetchone()
        types = con.execute(f"SELECT typeof({hour_of('ts')}) FROM t LIMIT 1").fetchone()
    finally:
        con.close()
    assert wrong is not None and wrong[:3] == (0, 0, 0)
    assert 0 < wrong[3] < wrong[4]            # both sides of the delay were exercised
    assert types == ("TIMESTAMP WITH TIME ZONE",)
