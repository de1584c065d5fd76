"""A retried quality stage records each check of its run once: checks the run already wrote
keep their first values, the ones it had not reached are added, and another run's checks are
its own (etl.quality.record_checks and the insert_quality_check query)."""

from __future__ import annotations

from typing import Any

import psycopg
import pyarrow as pa

from altaviz import db
from altaviz.fleet import Fleet
from etl.quality import record_checks


def _check(comp: str, kind: str, measured: float) -> dict[str, Any]:
    return {"compressor_id": comp, "check_type": kind, "measured": measured, "threshold": 1.0,
            "passed": measured <= 1.0, "details": '{"why": "a, \\"quoted\\" test"}'}


def _insert(conn: psycopg.Connection[Any], org: str, run_id: str,
            checks: list[dict[str, Any]]) -> int:
    return record_checks(conn, org, run_id, pa.Table.from_pylist(checks))


def _rows(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str], float]:
    with db.admin(conn):
        rows = conn.execute("SELECT run_id, compressor_id, check_type, measured "
                            "FROM data_quality_checks").fetchall()
    return {(r, c, k): m for r, c, k, m in rows}


def test_a_retried_run_adds_only_the_checks_it_had_not_recorded(
        conn: psycopg.Connection[Any], fleet: Fleet) -> None:
    first = [_check("COMP-0001", "accuracy", 0.5), _check("COMP-0001", "freshness", 3.0)]
    assert _insert(conn, "acme", "run-1", first) == 2
    retry = [_check("COMP-0001", "accuracy", 0.9), _check("COMP-0001", "freshness", 4.0),
             _check("COMP-0002", "accuracy", 0.1)]
    assert _insert(conn, "acme", "run-1", retry) == 1
    assert _insert(conn, "acme", "run-2", retry[:1]) == 1
    assert _rows(conn) == {
        ("run-1", "COMP-0001", "accuracy"): 0.5, ("run-1", "COMP-0001", "freshness"): 3.0,
        ("run-1", "COMP-0002", "accuracy"): 0.1, ("run-2", "COMP-0001", "accuracy"): 0.9}
    with db.admin(conn):
        details = [r[0] for r in conn.execute("SELECT details FROM data_quality_checks")]
    assert details == [{"why": 'a, "quoted" test'}] * 4, "the CSV lost the JSON's quoting"
