"""The engine's two sources: the gold Delta table (backtests) and PostgreSQL under RLS.

The randomized comparison of both sources with the SQL oracle is in test_equivalence.py;
here: episodes from either source are the same, another organization's rows never change an
organization's result (the gold table holds every tenant; PostgreSQL's row-level security
and filters), the CLI picks the source, and baselines interpolate as PostgreSQL's median.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from altaviz.core import db
from rules.backtest import episode_rows, episodes
from rules.evaluate import evaluate_rows
from tests.rules import reference_evaluate
from tests.rules.helpers import gold_from_postgres, h
from tests.rules.test_equivalence import HOURS, _fill, _rule_set


def test_episodes_equal_from_either_source_and_tenants_are_isolated(
        conn, fleet, tmp_path: Path) -> None:
    rng = random.Random(11)
    rs = _rule_set(rng)
    _fill(conn, rng)
    conn.commit()
    gold = gold_from_postgres(conn, tmp_path / "gold")
    want = episodes(conn, rs, "acme", h(50), h(HOURS - 1))
    assert episodes(conn, rs, "acme", h(50), h(HOURS - 1), gold_uri=gold) == want
    assert len(want) > 5
    # Another organization's rows, extreme and even claiming acme's unit ids, in the same
    # gold table: only the org_id filter keeps them out, and acme's episodes must not move.
    poisoned = _poison(gold, tmp_path / "poisoned")
    assert episodes(conn, rs, "acme", h(50), h(HOURS - 1), gold_uri=poisoned) == want
    # (the poison is real: read as bravo's, the extreme rows do fire)
    assert episodes(conn, rs, "bravo", h(50), h(HOURS - 1), gold_uri=poisoned) != episodes(
        conn, rs, "bravo", h(50), h(HOURS - 1), gold_uri=gold)


def test_postgres_source_sees_only_its_tenant(conn, fleet) -> None:
    """bravo gets a unit with acme's id and extreme aggregates at the same hours: acme's rows
    (read under row-level security) do not move, bravo's do fire."""
    rng = random.Random(3)
    rs = _rule_set(rng)
    _fill(conn, rng)
    with db.tenant(conn, "acme"):
        want = evaluate_rows(conn, rs, "acme", h(50), h(HOURS - 1))
    with db.admin(conn):
        conn.execute("INSERT INTO compressors (org_id, compressor_id, site_id, model, rated_hp,"
                     " rated_rpm, stages) VALUES ('bravo', 'COMP-0001', 'EF-01', 'Ariel JGK/4',"
                     " 1380, 1400, 4)")
        conn.execute("INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n,"
                     " mean, mean_4h, rate_of_change) SELECT 'bravo', 'COMP-0001', metric,"
                     " hour, 6, 1e6, 1e6, 1e6 FROM sensor_readings_agg WHERE org_id = 'acme'"
                     " AND compressor_id = 'COMP-0001' AND metric <> 'speed_rpm'")
        conn.execute("INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n,"
                     " mean, min, min_4h) SELECT 'bravo', 'COMP-0001', metric, hour, n, mean,"
                     " min, min_4h FROM sensor_readings_agg WHERE org_id = 'acme'"
                     " AND compressor_id = 'COMP-0001' AND metric = 'speed_rpm'")
    with db.tenant(conn, "acme"):
        assert evaluate_rows(conn, rs, "acme", h(50), h(HOURS - 1)) == want
    with db.tenant(conn, "bravo"):
        assert any(r.compressor_id == "COMP-0001" and r.firing
                   for r in episode_rows(conn, rs, "bravo", h(50), h(HOURS - 1)))


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


def test_cli_backtest_and_diff_pick_the_source(conn, fleet, db_url, tmp_path, monkeypatch,
                                               capsys) -> None:
    """`altaviz rules backtest/diff` read gold when the lake has a gold table (the same report
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
    the last bit from ``(lo + hi) / 2`` for these two values: thresholds must be bit-equal,
    stored by the hourly evaluation, computed by a backtest from either source, and as the
    SQL oracle's baseline fill stores them."""
    from tests.rules.helpers import COMMON, one_rule, put

    lo, hi = -995.7878932977786, 524.5601649158839
    assert lo + (hi - lo) * 0.5 != (lo + hi) / 2
    rs = one_rule("""
- id: oil_over_baseline
  kind: threshold
  metric: oil_temp_f
  comparison: above
  baseline: {days: 1, min_hours: 24}
  warning: {delta: 1}
""" + COMMON)
    day: list[float | None] = [*([lo] * 12), *([hi] * 12)]
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, day)
    put(conn, "acme", "COMP-0001", "oil_temp_f", 48, [1e6] * 3)
    gold = gold_from_postgres(conn, tmp_path / "gold")
    with db.tenant(conn, "acme"):
        want = evaluate_rows(conn, rs, "acme", h(48), h(50))
        query = "SELECT median, n FROM rule_baselines WHERE day = %s AND n > 0"
        stored = conn.execute(query, [h(48).date()]).fetchall()
        conn.execute("DELETE FROM rule_baselines")
        reference_evaluate.fill_baselines(conn, rs, "acme", h(48).date(), h(48).date())
        assert conn.execute(query, [h(48).date()]).fetchall() == stored
        assert stored == [(lo + (hi - lo) * 0.5, 24)]
    assert episode_rows(conn, rs, "acme", h(48), h(50), gold_uri=gold) == want
    assert episode_rows(conn, rs, "acme", h(48), h(50)) == want
    assert len(want) == 3
    assert want[0].threshold == lo + (hi - lo) * 0.5 + 1.0


def test_expected_value_rows_equal_stored_computed_and_from_gold(conn, fleet,
                                                                  tmp_path: Path) -> None:
    """A rule judged against its fitted expectation gives the same rows with the fit stored
    by the hourly evaluation (as baselines), computed from PostgreSQL, and computed from gold;
    a frozen input (4-hour standard deviation zero) silences it in all three."""
    from tests.rules.helpers import COMMON, one_rule, put

    rs = one_rule("""
- id: flow_vs_expected
  kind: threshold
  metric: flow_mmscfd
  window: 4h
  comparison: below
  baseline: {days: 3, min_hours: 24, expected: {inputs: [speed_rpm, stage1_ratio], log: true}}
  warning: {percent: 7}
  clear: {percent: 4}
  persistence: {hours: 2, of: 3}
""" + COMMON)
    hours = 6 * 24
    speed: list[float | None] = [900.0 + 80 * ((i // 7) % 3) for i in range(hours)]
    ratio: list[float | None] = [3.0 * (1 + 0.05 * ((i // 11) % 4 - 1.5) / 1.5)
                                 for i in range(hours)]
    flow: list[float | None] = [
        6.0 * (s / 900) * (3.0 / r) ** 1.4 * (1 + 0.002 * ((i * 7) % 5 - 2))
        * (0.88 if i >= 4 * 24 + 5 else 1.0)     # a leak from day 5, hour 5: 12% less flow
        for i, (s, r) in enumerate(zip(speed, ratio, strict=True)) if s and r]
    live: list[float | None] = [0.5] * hours
    stuck: list[float | None] = [0.5 if not 4 * 24 <= i < 4 * 24 + 12 else 0.0
                                 for i in range(hours)]
    for comp in ("COMP-0001", "COMP-0002"):
        for column in ("mean", "mean_4h", "min_4h"):
            put(conn, "acme", comp, "speed_rpm", 0, speed, column=column)
        for column in ("mean", "mean_4h"):
            put(conn, "acme", comp, "flow_mmscfd", 0, flow, column=column)
            put(conn, "acme", comp, "stage1_ratio", 0, ratio, column=column)
        put(conn, "acme", comp, "flow_mmscfd", 0, live, column="stddev_4h")
        put(conn, "acme", comp, "speed_rpm", 0, live, column="stddev_4h")
        put(conn, "acme", comp, "stage1_ratio", 0, stuck if comp == "COMP-0002" else live,
            column="stddev_4h")
    conn.commit()
    gold = gold_from_postgres(conn, tmp_path / "gold")
    with db.tenant(conn, "acme"):
        want = evaluate_rows(conn, rs, "acme", h(4 * 24), h(hours - 1))
    assert episode_rows(conn, rs, "acme", h(4 * 24), h(hours - 1), gold_uri=gold) == want
    assert episode_rows(conn, rs, "acme", h(4 * 24), h(hours - 1)) == want
    first = {c: min((r.hour for r in want if r.firing and r.compressor_id == c), default=None)
             for c in ("COMP-0001", "COMP-0002")}
    assert first["COMP-0001"] is not None and h(4 * 24 + 5) < first["COMP-0001"] < h(4 * 24 + 9)
    # stage 1's ratio frozen for the first 12 hours of day 5: no judgement until it moves
    assert first["COMP-0002"] is not None and first["COMP-0002"] >= h(4 * 24 + 12)
    with db.tenant(conn, "acme"):
        stored = conn.execute("SELECT DISTINCT metric FROM rule_baselines").fetchall()
    assert {m for (m,) in stored} == {f"flow_mmscfd~speed_rpm+stage1_ratio~log#{i}"
                                      for i in range(3)}
