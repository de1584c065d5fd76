"""The rule engine (rules/engine.py) against the SQL evaluation it replaced, on randomized data.

``tests/rules/reference_evaluate.py`` is the SQL evaluation kept as the oracle (one statement
over a JSON parameter table; its hourly path, its range path and its baseline fill; the later
per-rule SQL and the DuckDB engine over gold were held to it row for row before the engine
replaced them). Both run on the same randomized hand-made aggregates (values scattered around
every threshold, missing hours, missing values, rows without readings, stopped hours, silent
stretches; four units in two tenants) with rule sets that exercise persistence, hysteresis,
relative baselines with an absolute cap, 'either' deviations, per-model values, scopes, rate
of change, the running gate and no-data rules, with randomized persistence and clear windows.

Single hours (the hourly run, through the engine's one fast path) and the stored baselines
must be identical bit for bit; so must the engine's rows from PostgreSQL with stored or
computed baselines and from gold. Ranges (backtests) are identical except for Clears the
SQL range path missed: it looked for the episode's breach one hour less far back than its
hourly path, so the same hour cleared in the hourly run but not in a backtest; each extra
Clear is asserted to be exactly what the SQL hourly path emits at that hour.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.core import db
from rules import evaluate as new
from rules.engine import variants_of
from rules.loader import load_rule_set
from rules.schema import RuleSet
from rules.sources import GoldSource, PostgresSource, connect_duckdb, evaluation_rows
from tests.rules import reference_evaluate as old
from tests.rules.helpers import gold_from_postgres, h, put

RULES = """
rules:
  - id: oil_temp_high
    kind: threshold
    metric: oil_temp_f
    comparison: above
    warning: 180
    critical: 190
    clear: 175
    persistence: {{hours: {n1}, of: {m1}}}
    clear_after_hours: {k1}
    models:
      Ajax DPC-360: {{warning: 170, clear: 166}}
    diagnosis: d
    checks: [c]
    basis: b
  - id: oil_pressure_low
    kind: threshold
    metric: oil_pressure_psig
    comparison: below
    warning: 50
    critical: 45
    persistence: {{hours: {n2}, of: {m2}}}
    clear_after_hours: {k2}
    running_only: false
    diagnosis: d
    checks: [c]
    basis: b
  - id: bearing_over_baseline
    kind: threshold
    metric: bearing_temp_max_f
    comparison: above
    baseline: {{days: 2, min_hours: 24}}
    warning: {{delta: 20, absolute: 220}}
    critical: {{delta: 30, percent: 20}}
    clear: {{delta: 15}}
    persistence: {{hours: {n3}, of: {m3}}}
    clear_after_hours: {k3}
    diagnosis: d
    checks: [c]
    basis: b
  - id: ratio_shift
    kind: threshold
    metric: stage2_ratio
    aggregate: mean
    window: 4h
    comparison: either
    baseline: {{days: 2, min_hours: 24}}
    warning: {{percent: 5}}
    critical: {{delta: 0.3, percent: 12}}
    persistence: {{hours: 3, of: 4}}
    clear_after_hours: 4
    diagnosis: d
    checks: [c]
    basis: b
  - id: flow_deficit
    kind: threshold
    metric: flow_mmscfd
    comparison: below
    baseline: {{days: 2, min_hours: 24}}
    warning: {{percent: 10}}
    persistence: {{hours: 1, of: 2}}
    clear_after_hours: 1
    applies_to: {{models: [Ariel JGK/4]}}
    diagnosis: d
    checks: [c]
    basis: b
  - id: bearing_rising
    kind: rate_of_change
    metric: bearing_temp_max_f
    comparison: above
    warning: 5
    critical: 10
    clear: 3
    persistence: {{hours: {n4}, of: {m4}}}
    clear_after_hours: {k4}
    diagnosis: d
    checks: [c]
    basis: b
  - id: data_missing
    kind: no_data
    warning_after_hours: 2
    critical_after_hours: 4
    diagnosis: d
    checks: [c]
    basis: b
  - id: oil_temp_missing
    kind: no_data
    metric: oil_temp_f
    warning_after_hours: 3
    diagnosis: d
    checks: [c]
    basis: b
"""

HOURS = 120   # 5 days: days 0-1 build the 2-day baselines of day 3 onwards


def _rule_set(rng: random.Random) -> RuleSet:
    n1, n2 = rng.randint(1, 3), rng.randint(1, 2)
    n3, n4 = rng.randint(1, 3), rng.randint(1, 3)
    return load_rule_set("equivalence.yaml", text=RULES.format(
        n1=n1, m1=rng.randint(n1, 4), k1=rng.randint(1, 3),
        n2=n2, m2=rng.randint(n2, 3), k2=rng.randint(1, 4),
        n3=n3, m3=rng.randint(max(n3, 2), 4), k3=rng.randint(1, 4),
        n4=n4, m4=rng.randint(max(n4, 2), 4), k4=rng.randint(1, 3)))


def _fill(conn: psycopg.Connection[Any], rng: random.Random) -> None:
    """Random aggregates for the two units of acme and of bravo (a different tenant)."""
    centre = {"oil_temp_f": (178, 15), "oil_pressure_psig": (50, 5),
              "bearing_temp_max_f": (190, 40), "stage2_ratio": (3.0, 0.3),
              "flow_mmscfd": (6.0, 0.8)}
    rows: list[tuple[Any, ...]] = []
    for org, comp, rated in (("acme", "COMP-0001", 1400), ("acme", "COMP-0002", 420),
                             ("bravo", "COMP-0003", 1200), ("bravo", "COMP-0004", 1400)):
        gap = rng.randint(10, HOURS - 10)     # a silent stretch: no aggregates at all
        for i in range(HOURS):
            if gap <= i < gap + rng.randint(0, 6):
                continue
            running = rng.random() < 0.85
            rows.append((org, comp, "speed_rpm", h(i), 6, rated, rated,
                         rated if running else rng.choice([0, rated * 0.4, rated * 0.5]), None))
            for metric, (mid, spread) in centre.items():
                if rng.random() < 0.08:
                    continue
                value: float | None = mid + rng.uniform(-spread, spread)
                n = 6
                if rng.random() < 0.05:
                    value = None  # a row whose value is missing (bad readings filtered out)
                    n = rng.choice([0, 6])   # (0: a row without readings)
                rows.append((org, comp, metric, h(i), n, value, value,
                             value if value is None else value + rng.uniform(-1, 1),
                             rng.choice([0.0, 2.9, 3.0, 5.0, 5.5, 10.0, -7.0, 12.0])))
    with db.admin(conn), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sensor_readings_agg (org_id, compressor_id, metric, hour, n, mean,"
            " min, mean_4h, rate_of_change) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(o, c, m, t, n, mean, mn, m4, roc) for o, c, m, t, n, mean, mn, m4, roc in rows])
        # speed_rpm's gate column is min_4h (the INSERT put it in mean_4h for brevity).
        cur.execute("UPDATE sensor_readings_agg SET min_4h = mean_4h, mean_4h = NULL"
                    " WHERE metric = 'speed_rpm'")


def _stored(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """The stored baselines (then removed, so the next evaluation computes its own)."""
    with db.admin(conn):
        rows = conn.execute("SELECT org_id, compressor_id, metric, days, day, median, n"
                            " FROM rule_baselines ORDER BY 1, 2, 3, 4, 5").fetchall()
        conn.execute("DELETE FROM rule_baselines")
    return rows


def _tuples(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [dataclasses.astuple(r) for r in rows]


def _reference(conn: psycopg.Connection[Any], rs: RuleSet, org: str, first: int, last: int,
               compressors: list[str] | None = None) -> tuple[list[Any], list[Any]]:
    """The oracle's rows and the baselines its fill stored."""
    with db.tenant(conn, org):
        rows = _tuples(old.evaluate_rows(conn, rs, org, h(first), h(last), compressors))
    return rows, _stored(conn)


def _hourly(conn: psycopg.Connection[Any], rs: RuleSet, org: str, first: int, last: int,
            compressors: list[str] | None = None) -> tuple[list[Any], list[Any]]:
    """The hourly evaluation's rows (stored baselines) and the baselines it stored."""
    with db.tenant(conn, org):
        rows = _tuples(new.evaluate_rows(conn, rs, org, h(first), h(last), compressors,
                                         threads=2))
    return rows, _stored(conn)


def _same_baselines(engine: list[Any], reference: list[Any]) -> None:
    # The engine also stores the baselines whose window held no running hour (n = 0, no
    # median), which the reference left missing; both read as "no baseline".
    assert [r for r in engine if r[6] > 0] == reference
    assert all(r[5] is None for r in engine if r[6] == 0)


@pytest.mark.parametrize("seed", range(1, 5))
def test_engine_equals_reference(conn, fleet, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    rs = _rule_set(rng)
    _fill(conn, rng)
    gold = gold_from_postgres(conn, tmp_path / "gold")
    duck = connect_duckdb(threads=1)
    cases = [("acme", 50, HOURS - 1, None), ("bravo", 50, HOURS - 1, None),
             ("acme", 75, 100, ["COMP-0002"]), ("bravo", 30, 60, None)]
    cases += [(org, i, i, None) for org in ("acme", "bravo")
              for i in rng.sample(range(30, HOURS), 14)]
    compared = extra_clears = 0
    seen: set[str] = set()
    seen_crit: set[str] = set()
    for org, first, last, comps in cases:
        want, want_bases = _reference(conn, rs, org, first, last, comps)
        got, got_bases = _hourly(conn, rs, org, first, last, comps)
        _same_baselines(got_bases, want_bases)
        if first == last:
            assert got == want, (org, first, "the hourly path")
        else:
            assert not set(want) - set(got), (org, first, last)
            for row in sorted(set(got) - set(want)):
                assert row[9] and not row[6], row    # a Clear, never a Breach
                i = round((row[4] - h(0)).total_seconds() / 3600)
                assert row in _reference(conn, rs, org, i, i, comps)[0], row
                extra_clears += 1
        with db.tenant(conn, org):
            computed = _tuples(evaluation_rows(PostgresSource(conn), rs, org, h(first),
                                               h(last), comps))
        assert computed == got, (org, first, last, "computed baselines")
        assert _stored(conn) == []   # computing baselines writes nothing
        from_gold = evaluation_rows(GoldSource(conn, duck, gold), rs, org, h(first), h(last),
                                    comps)
        assert _tuples(from_gold) == got, (org, first, last, "gold")
        compared += len(got)
        seen |= {r[0] for r in got}
        seen_crit |= {r[0] for r in got if r[7]}
    # The data really crosses every rule's thresholds, critical ones included.
    assert compared > 300 and seen == {r.id for r in rs.rules}, seen
    assert len(seen_crit) >= 3, seen_crit
    print(f"seed {seed}: {compared} rows, {extra_clears} clears the SQL range path missed")


def test_rule_kinds_are_all_exercised():
    """The randomized rule set covers every rule shape the engine distinguishes."""
    rs = _rule_set(random.Random(0))
    variants = variants_of(rs)
    cmps = {v.rule.comparison for v in variants}
    assert cmps == {"above", "below", "either"}
    assert any(v.model is not None for v in variants)             # per-model values
    assert any(v.rule.applies_to.models for v in variants)        # scope
    assert any(not v.rule.running_only for v in variants)         # no running gate
    assert {v.rule.kind for v in variants} == {"threshold", "rate_of_change"}


def test_one_hour_clear_with_older_breach_evidence(conn, fleet):
    """The hourly path reads the last hours its counts need for every unit; a unit clearing
    after a stretch of missing or stopped hours finds its breach evidence further back."""
    rs = load_rule_set("t.yaml", text="""
rules:
  - id: oil_temp_high
    kind: threshold
    metric: oil_temp_f
    comparison: above
    warning: 180
    clear: 175
    persistence: {hours: 2, of: 3}
    diagnosis: d
    checks: [c]
    basis: b
""")
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [185, 185, None, None, None, None, 170, 170])
    # COMP-0002 is stopped (speed 0) for four hours: its values then count for nothing.
    put(conn, "acme", "COMP-0002", "speed_rpm", 2, [0, 0, 0, 0], column="min_4h")
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0, [185, 185, 185, 185, 185, 185, 170, 170])
    put(conn, "acme", "COMP-0002", "oil_temp_f", 20, [185, 185, 170, 170])
    for i in range(0, 24):
        assert _hourly(conn, rs, "acme", i, i)[0] == _reference(conn, rs, "acme", i, i)[0], i
    assert [c.compressor_id for c in new.evaluate(conn, rs, "acme", (h(7), h(7))).clears] == [
        "COMP-0001", "COMP-0002"]
