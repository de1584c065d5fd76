"""A retried quality stage records each check of its run once: checks the run already wrote
keep their first values, the ones it had not reached are added, and another run's checks are
its own (etl.quality.record_checks and the insert_quality_check query)."""

from __future__ import annotations

from typing import Any

import psycopg
import pyarrow as pa
import pytest

from altaviz.core import db
from altaviz.core.fleet import Fleet
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


def test_organizations_recorded_side_by_side_are_each_recorded_once(
        conn: psycopg.Connection[Any], db_url: str, fleet: Fleet) -> None:
    """The hourly run records organizations on two connections at once
    (etl.quality._record_side_by_side): every organization's checks land, each under its own
    organization, and a retry of the whole set adds nothing."""
    from etl.quality import _record_side_by_side

    tables = [("acme", pa.Table.from_pylist([_check("COMP-0001", "accuracy", 0.5),
                                             _check("COMP-0002", "accuracy", 2.0)])),
              ("bravo", pa.Table.from_pylist([_check("COMP-0003", "freshness", 0.25)])),
              ("acme", pa.Table.from_pylist([_check("COMP-0001", "freshness", 0.75)]))]
    _record_side_by_side(conn, db_url, "run-1", tables)
    _record_side_by_side(conn, db_url, "run-1", tables)
    assert _rows(conn) == {
        ("run-1", "COMP-0001", "accuracy"): 0.5, ("run-1", "COMP-0002", "accuracy"): 2.0,
        ("run-1", "COMP-0003", "freshness"): 0.25, ("run-1", "COMP-0001", "freshness"): 0.75}
    with db.admin(conn):
        owners = set(conn.execute("SELECT org_id, compressor_id FROM data_quality_checks"))
    assert owners == {("acme", "COMP-0001"), ("acme", "COMP-0002"), ("bravo", "COMP-0003")}


@pytest.mark.parametrize("bad_is_largest", [True, False])
def test_a_refused_organization_fails_the_recording(
        conn: psycopg.Connection[Any], db_url: str, fleet: Fleet, bad_is_largest: bool) -> None:
    """A check filed under the wrong organization is refused whichever connection takes it
    (the largest table is taken first), and the refusal reaches the caller: the stage fails
    and its mark does not move. The other organization's checks are their own transaction."""
    from etl.quality import _record_side_by_side

    wrong = [_check("COMP-0003", "accuracy", 0.5)]          # bravo's compressor, under acme
    right = [_check("COMP-0004", "accuracy", 0.5)]
    if bad_is_largest:
        wrong.append(_check("COMP-0003", "freshness", 0.5))
    else:
        right.append(_check("COMP-0004", "freshness", 0.5))
    tables = [("acme", pa.Table.from_pylist(wrong)), ("bravo", pa.Table.from_pylist(right))]
    with pytest.raises(psycopg.Error, match="COMP-0003"):
        _record_side_by_side(conn, db_url, "run-1", tables)
    assert {c for _, c, _ in _rows(conn)} <= {"COMP-0004"}
