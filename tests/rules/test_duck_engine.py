"""The DuckDB backtest engine (rules/duck_engine.py) against the PostgreSQL engine.

The same randomized hand-made aggregates as test_equivalence.py (values around every
threshold, missing hours and values, stopped hours, silent stretches, per-model values, scopes,
relative baselines with caps, 'either' deviations, rate of change, no-data rules) are written
into PostgreSQL and into a real Delta table on disk in the gold schema; both engines must give
the same firing/clear rows (values and thresholds included) and the same episodes. Another
organization's rows in the same gold table must never change an organization's result.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from rules import duck_engine
from rules.backtest import episodes
from rules.evaluate import evaluate_rows
from tests.rules.helpers import gold_from_postgres, h
from tests.rules.test_equivalence import HOURS, _fill, _rule_set


def _pg_rows(conn: psycopg.Connection[Any], rs: Any, org: str, first: int, last: int,
             compressors: list[str] | None = None) -> list[Any]:
    with db.tenant(conn, org):
        rows = evaluate_rows(conn, rs, org, h(first), h(last), compressors)
    with db.admin(conn):
        conn.execute("DELETE FROM rule_baselines")   # each engine computes its own
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_duckdb_rows_equal_postgres_rows(conn, fleet, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rs = _rule_set(rng)
    _fill(conn, rng)
    gold = gold_from_postgres(conn, tmp_path / "gold")
    con = duck_engine.connect(threads=1)
    seen: set[str] = set()
    for org, first, last, comps in (("acme", 50, HOURS - 1, None), ("bravo", 50, HOURS - 1, None),
                                    ("acme", 75, 100, ["COMP-0002"]), ("acme", 30, 60, None)):
        want = _pg_rows(conn, rs, org, first, last, comps)
        got = duck_engine.episode_rows(conn, rs, org, h(first), h(last), gold,
                                       compressors=comps, con=con)
        assert got == want, (org, first, last)
        seen |= {r.rule_id for r in want}
    assert seen == {r.id for r in rs.rules}, seen   # the data crosses every rule


def test_duckdb_episodes_equal_and_tenants_are_isolated(conn, fleet, tmp_path: Path) -> None:
    rng = random.Random(11)
    rs = _rule_set(rng)
    _fill(conn, rng)
    conn.commit()
    gold = gold_from_postgres(conn, tmp_path / "gold")
    want = episodes(conn, rs, "acme", h(50), h(HOURS - 1), workers=1)
    assert episodes(conn, rs, "acme", h(50), h(HOURS - 1), gold_uri=gold) == want
    assert len(want) > 5
    # Another organization's rows, extreme and even claiming acme's unit ids, in the same
    # gold table: only the org_id filter keeps them out, and acme's episodes must not move.
    poisoned = _poison(gold, tmp_path / "poisoned")
    assert episodes(conn, rs, "acme", h(50), h(HOURS - 1), gold_uri=poisoned) == want
    # (the poison is real: read as bravo's, the extreme rows do fire)
    assert episodes(conn, rs, "bravo", h(50), h(HOURS - 1), gold_uri=poisoned) != episodes(
        conn, rs, "bravo", h(50), h(HOURS - 1), gold_uri=gold)


def _poison(src: str, dst: Path) -> str:
    """A copy of a gold table where bravo's rows are extreme and bravo also has rows with
    acme's unit ids (extreme too, and speed rows showing the unit stopped)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import DeltaTable, write_deltalake

    from etl.lake import PARTITIONS

    t = DeltaTable(src).to_pyarrow_table()
    acme = t.filter(pc.equal(t["org_id"], "acme"))
    bravo = t.filter(pc.equal(t["org_id"], "bravo"))

    def extreme(x: pa.Table, org: str) -> pa.Table:
        for col in ("mean", "mean_4h", "rate_of_change"):
            i = x.schema.get_field_index(col)
            x = x.set_column(i, x.schema.field(col), pa.array([1e6] * len(x), pa.float64()))
        i = x.schema.get_field_index("org_id")
        return x.set_column(i, x.schema.field("org_id"),
                            pa.array([org] * len(x), x.schema.field("org_id").type))

    out = pa.concat_tables([acme, extreme(bravo, "bravo"), extreme(acme, "bravo")])
    write_deltalake(str(dst), out, mode="overwrite", partition_by=PARTITIONS["gold"])
    return str(dst)


def test_cli_backtest_and_diff_pick_the_engine(conn, fleet, db_url, tmp_path, monkeypatch,
                                               capsys) -> None:
    """`altaviz rules backtest/diff` use DuckDB when the lake has a gold table (the same report
    as --engine postgres), PostgreSQL otherwise; --engine duckdb without gold is an error."""
    import json

    from altaviz.app.cli import main
    from rules.loader import DEFAULT_RULES

    rng = random.Random(5)
    _fill(conn, rng)
    conn.commit()
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
    monkeypatch.setenv("ALTAVIZ_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALTAVIZ_LAKE_DIR", str(tmp_path / "lake"))
    window = ["--from", h(50).isoformat(), "--to", h(HOURS - 1).isoformat(), "--org", "acme"]
    rules_file = str(DEFAULT_RULES)

    def run(*extra: str) -> Any:
        assert main(["rules", "backtest", rules_file, *window, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    no_lake = run()
    assert main(["rules", "backtest", rules_file, *window, "--engine", "duckdb"]) == 1
    capsys.readouterr()
    gold_from_postgres(conn, tmp_path / "lake" / "gold")
    assert main(["rules", "backtest", rules_file, *window]) == 0
    assert "duckdb over" in capsys.readouterr().out
    assert run() == run("--engine", "postgres") == no_lake
    assert no_lake["episodes"] > 0
    assert main(["rules", "diff", rules_file, rules_file, *window]) == 0
    assert "->" in capsys.readouterr().out


def test_baseline_median_interpolates_as_postgresql(conn, fleet, tmp_path: Path) -> None:
    """An even count's median is percentile_cont's ``lo + (hi - lo) * 0.5``, which differs in
    the last bit from ``(lo + hi) / 2`` for these two values: thresholds must be bit-equal."""
    from tests.rules.helpers import COMMON, one_rule, put

    lo, hi = -995.7878932977786, 524.5601649158839
    assert lo + (hi - lo) * 0.5 != (lo + hi) / 2
    rs = one_rule("""
- id: oil_over_baseline
  kind: threshold
  metric: oil_temp_f
  comparison: above
  baseline: {days: 1}
  warning: {delta: 1}
""" + COMMON)
    day: list[float | None] = [*([lo] * 12), *([hi] * 12)]
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, day)
    put(conn, "acme", "COMP-0001", "oil_temp_f", 48, [1e6] * 3)
    gold = gold_from_postgres(conn, tmp_path / "gold")
    want = _pg_rows(conn, rs, "acme", 48, 50)
    got = duck_engine.episode_rows(conn, rs, "acme", h(48), h(50), gold)
    assert got == want and len(want) == 3
    assert want[0].threshold == lo + (hi - lo) * 0.5 + 1.0
