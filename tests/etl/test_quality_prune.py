"""``altaviz dq prune``: data-quality checks older than the retention are deleted, except each
compressor's latest check of each kind (a silent compressor keeps its last results)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from altaviz.core.errors import InputError
from altaviz.core.fleet import Fleet
from etl import quality

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ROWS = [  # (org, compressor, check, age in days)
    ("acme", "COMP-0001", "accuracy", 40), ("acme", "COMP-0001", "accuracy", 35),
    ("acme", "COMP-0001", "accuracy", 1),
    ("acme", "COMP-0002", "completeness", 50), ("acme", "COMP-0002", "completeness", 45),
    ("bravo", "COMP-0003", "freshness", 31), ("bravo", "COMP-0003", "freshness", 2),
    ("bravo", "COMP-0003", "consistency", 10),
]


def _seed(conn: psycopg.Connection[Any]) -> None:
    with db.admin(conn):
        for i, (org, comp, kind, age) in enumerate(ROWS):
            conn.execute("""
                INSERT INTO data_quality_checks (org_id, compressor_id, run_id, check_type,
                                                 measured, threshold, passed, checked_at)
                VALUES (%s, %s, %s, %s, 0, 1, true, %s)""",
                [org, comp, f"run-{i}", kind, NOW - timedelta(days=age)])


def _left(conn: psycopg.Connection[Any]) -> set[tuple[str, str, str, int]]:
    with db.admin(conn):
        rows = conn.execute("SELECT org_id, compressor_id, check_type, checked_at "
                            "FROM data_quality_checks").fetchall()
    return {(o, c, k, (NOW - t).days) for o, c, k, t in rows}


@pytest.mark.parametrize("batch", [50_000, 1])   # 1: every row its own transaction
def test_old_checks_go_and_each_latest_stays(conn: psycopg.Connection[Any], fleet: Fleet,
                                             batch: int) -> None:
    _seed(conn)
    assert quality.prune_quality_checks(conn, keep_days=30, now=NOW, batch=batch) == 4
    assert _left(conn) == {
        ("acme", "COMP-0001", "accuracy", 1),
        ("acme", "COMP-0002", "completeness", 45),    # silent unit: its latest is kept
        ("bravo", "COMP-0003", "freshness", 2),
        ("bravo", "COMP-0003", "consistency", 10),
    }
    assert quality.prune_quality_checks(conn, keep_days=30, now=NOW, batch=batch) == 0


def test_a_retention_under_a_day_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InputError, match="--keep-days must be at least 1, got 0"):
        quality.prune_quality_checks(conn, keep_days=0)
