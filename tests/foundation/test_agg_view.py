"""Writes through the long view ``sensor_readings_agg`` (migration 070) land in the right
element of ``agg_compressor_hours``' arrays, even in a row whose array columns are NULL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet

T = "2026-11-01T00:00Z"


def test_view_writes_keep_each_metric_in_its_element(conn: psycopg.Connection[Any],
                                                     fleet: Fleet) -> None:
    with db.admin(conn):
        # a row written to the base table without most of its arrays (NULL columns)
        conn.execute("INSERT INTO agg_compressor_hours (org_id, compressor_id, hour, n, "
                     "outliers, late) VALUES ('acme', 'COMP-0001', %s, '{6}', '{0}', '{0}')",
                     [T])
        conn.execute("INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, "
                     "n, mean, stddev_4h) VALUES ('acme', 'COMP-0001', 'oil_temp_f', %s, 5, "
                     "170.5, 1.25)", [T])
        conn.execute("UPDATE sensor_readings_agg SET max = 171.0 WHERE metric = 'oil_temp_f'")
        rows = conn.execute("SELECT metric, n, mean, max, stddev_4h FROM sensor_readings_agg "
                            "ORDER BY metric").fetchall()
        bounds = conn.execute("SELECT array_lower(stddev_4h, 1), array_lower(mean, 1) "
                              "FROM agg_compressor_hours").fetchall()
    assert rows == [("oil_temp_f", 5, 170.5, 171.0, 1.25),
                    ("vibration_frame_mm_s", 6, None, None, None)]
    assert bounds == [(1, 1)]
    with pytest.raises(psycopg.errors.UniqueViolation), db.admin(conn):
        conn.execute("INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n) "
                     "VALUES ('acme', 'COMP-0001', 'oil_temp_f', %s, 6)", [T])
    with db.admin(conn):
        conn.execute("DELETE FROM sensor_readings_agg WHERE metric = 'oil_temp_f'")
        assert conn.execute("SELECT metric FROM sensor_readings_agg").fetchall() == [
            ("vibration_frame_mm_s",)]
        conn.execute("DELETE FROM sensor_readings_agg")
        assert conn.execute("SELECT count(*) FROM agg_compressor_hours").fetchone() == (0,)
