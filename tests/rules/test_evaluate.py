"""Evaluation against hand-made aggregates in a real PostgreSQL: both sides of every
threshold, persistence, hysteresis, relative baselines, rate of change, no-data, overrides."""

from __future__ import annotations

from datetime import timedelta

from altaviz.core import db
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_org_rule_set, load_rule_set
from rules.schema import Baseline, Level, Persistence
from tests.rules.helpers import COMMON, h, one_rule, put

OIL = one_rule("""
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  critical: 190
  clear: 175
  persistence: {hours: 2, of: 3}
  clear_after_hours: 2
""" + COMMON)


def _b(res):
    return [(b.compressor_id, b.rule_id, b.hour, b.severity, b.value, b.threshold)
            for b in res.breaches]


def test_above_threshold_both_sides_and_persistence(conn, fleet):
    # 179.9 is below warning, 180 is at it (fires), 189.9 warning, 190 critical.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [179.9, 180, 170, 180, 189.9, 190, 190.5])
    res = evaluate(conn, OIL, "acme", (h(0), h(6)))
    assert [(b.hour, b.severity) for b in res.breaches] == [
        (h(3), "warning"),   # 180 at h1 and h3: 2 of 3 -> fires (a single hour never does)
        (h(4), "warning"),
        (h(5), "warning"),   # one critical hour is not enough persistence
        (h(6), "critical"),
    ]
    assert res.breaches[-1].value == 190.5 and res.breaches[-1].threshold == 190
    assert res.clears == []


def test_single_hour_spike_does_not_fire(conn, fleet):
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [170, 250, 170, 170, 250, 170])
    assert evaluate(conn, OIL, "acme", (h(0), h(5))).breaches == []


def test_below_rule_both_sides(conn, fleet):
    rs = one_rule("""
- id: oil_pressure_low
  kind: threshold
  metric: oil_pressure_psig
  comparison: below
  warning: 50
  critical: 45
  persistence: {hours: 1, of: 1}
""" + COMMON)
    put(conn, "acme", "COMP-0001", "oil_pressure_psig", 0, [50.1, 50, 45.1, 45, 60])
    res = evaluate(conn, rs, "acme", (h(0), h(4)))
    assert [(b.hour, b.severity, b.threshold) for b in res.breaches] == [
        (h(1), "warning", 50), (h(2), "warning", 50), (h(3), "critical", 45)]


def test_hysteresis_and_clear_after_hours(conn, fleet):
    # Fires at h1; 178 is in the band (clear 175 < 178 < warning 180): neither fires nor
    # counts as normal; clears after two consecutive hours below 175.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0,
        [185, 185, 178, 178, 178, 178, 174, 178, 174, 174, 174])
    res = evaluate(conn, OIL, "acme", (h(0), h(10)))
    assert [b.hour for b in res.breaches] == [h(1), h(2)]  # 2 of the last 3 hours
    assert [c.hour for c in res.clears] == [h(9)]
    assert res.clears[0].value == 174


def test_missing_data_is_never_back_to_normal(conn, fleet):
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0,
        [185, 185, None, None, None, None, 170, 170])
    res = evaluate(conn, OIL, "acme", (h(0), h(7)))
    assert [b.hour for b in res.breaches] == [h(1)]
    assert [c.hour for c in res.clears] == [h(7)]  # only after 2 real normal hours


def test_latest_hour_reports_state_and_clear_transitions(conn, fleet):
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [185, 185, 186, 170, 170, 170])
    assert [b.hour for b in evaluate(conn, OIL, "acme", (h(2), h(2))).breaches] == [h(2)]
    latest = evaluate(conn, OIL, "acme", (h(4), h(4)))
    assert latest.breaches == [] and [c.hour for c in latest.clears] == [h(4)]
    # One hour later the episode is over: no repeated Clear.
    assert evaluate(conn, OIL, "acme", (h(5), h(5))).clears == []


def test_windows_and_aggregates(conn, fleet):
    rs = one_rule("""
- id: filter
  kind: threshold
  metric: oil_filter_dp_psid
  aggregate: max
  window: 4h
  comparison: above
  warning: 10
""" + COMMON)
    put(conn, "acme", "COMP-0001", "oil_filter_dp_psid", 0, [9.9, 10.0], column="max_4h")
    put(conn, "acme", "COMP-0001", "oil_filter_dp_psid", 0, [50, 50], column="mean")
    res = evaluate(conn, rs, "acme", (h(0), h(1)))
    assert [b.hour for b in res.breaches] == [h(1)]


def test_relative_baseline_and_absolute_cap_whichever_first(conn, fleet):
    rs = load_rule_set(DEFAULT_RULES)
    only = rs.model_copy(update={"rules": (rs.rule("main_bearing_temp_high"),)})
    day = 24
    put(conn, "acme", "COMP-0001", "bearing_temp_max_f", 0, [180.0] * (7 * day))
    put(conn, "acme", "COMP-0002", "bearing_temp_max_f", 0, [205.0] * (7 * day))
    t = 8 * day  # day 9: baseline window = days 1-7
    # COMP-0001: baseline 180 -> warning 200, critical 210 (relative part first).
    put(conn, "acme", "COMP-0001", "bearing_temp_max_f", t, [199.9, 200, 200, 210, 210])
    # COMP-0002: baseline 205 -> baseline+20 = 225 but the absolute cap 220 fires first.
    put(conn, "acme", "COMP-0002", "bearing_temp_max_f", t, [219.9, 220, 220, 230, 230])
    res = evaluate(conn, only, "acme", (h(t), h(t + 4)))
    got = [(b.compressor_id, b.hour - h(t), b.severity, b.threshold) for b in res.breaches]
    from datetime import timedelta as td
    assert got == [
        ("COMP-0001", td(hours=2), "warning", 200), ("COMP-0002", td(hours=2), "warning", 220),
        ("COMP-0001", td(hours=3), "warning", 200), ("COMP-0002", td(hours=3), "warning", 220),
        ("COMP-0001", td(hours=4), "critical", 210), ("COMP-0002", td(hours=4), "critical", 230),
    ]
    with conn.cursor() as cur:
        cur.execute("SELECT compressor_id, median, n FROM rule_baselines ORDER BY 1, day")
        rows = cur.fetchall()
    assert ("COMP-0001", 180.0, 168) in rows and ("COMP-0002", 205.0, 168) in rows


def test_relative_rule_without_baseline_stays_silent(conn, fleet):
    rs = load_rule_set(DEFAULT_RULES)
    only = rs.model_copy(update={"rules": (rs.rule("flow_deficit"),)})
    put(conn, "acme", "COMP-0001", "flow_mmscfd", 0, [0.1] * 6, column="mean_4h")
    assert evaluate(conn, only, "acme", (h(0), h(5))).breaches == []


def test_baseline_without_data_is_stored_once(conn, fleet):
    """A baseline whose window holds no running hour (here: no data before T0) is stored as
    n = 0 with no median, so the next evaluation of that day finds nothing missing and does
    not read the window again; the rule stays silent as without the row."""
    rs = load_rule_set(DEFAULT_RULES)
    only = rs.model_copy(update={"rules": (rs.rule("flow_deficit"),)})
    put(conn, "acme", "COMP-0001", "flow_mmscfd", 0, [0.1] * 6, column="mean_4h")

    def stored():
        with db.admin(conn), conn.cursor() as cur:
            cur.execute("SELECT compressor_id, metric, days, day, median, n, computed_at"
                        " FROM rule_baselines WHERE org_id = 'acme' ORDER BY 1")
            return cur.fetchall()

    assert evaluate(conn, only, "acme", (h(5), h(5))).breaches == []
    first = stored()
    units = {r[0] for r in first}
    assert "COMP-0001" in units and len(units) > 1  # every unit of acme, with data or not
    # the evaluated day's, and the day before's that the episode history reaches
    assert {r[3] for r in first} == {h(5).date(), h(5).date() - timedelta(days=1)}
    # flow is judged against its model (intercept and two slopes, each stored as a baseline)
    assert {r[1] for r in first} == {f"flow_mmscfd~speed_rpm+stage1_ratio~log#{i}"
                                     for i in range(3)}
    assert all(r[2] == 14 and r[4] is None and r[5] == 0 for r in first)
    assert evaluate(conn, only, "acme", (h(5), h(5))).breaches == []
    assert stored() == first  # nothing recomputed (computed_at unchanged), nothing added


def test_either_direction_ratio_shift(conn, fleet):
    rs = load_rule_set(DEFAULT_RULES)
    # The 'either' comparison on a plain 7-day median (the default judges the ratio against
    # the neighbouring stage's, tests/rules/test_precision.py), at 5% / 10%, 3 of 4 hours.
    rule = rs.rule("stage2_ratio_shift").model_copy(update={
        "baseline": Baseline(days=7), "warning": Level(percent=5), "clear": Level(percent=3),
        "persistence": Persistence(hours=3, of=4)})
    only = rs.model_copy(update={"rules": (rule,)})
    # Baselines are medians of 1h means; the rule compares the 4h mean with it.
    put(conn, "acme", "COMP-0001", "stage2_ratio", 0, [3.0] * 168)
    put(conn, "acme", "COMP-0002", "stage2_ratio", 0, [3.0] * 168)
    t = 192
    # baseline 3.0: warning beyond +-0.15, critical beyond +-0.30; 3 of 4 hours.
    put(conn, "acme", "COMP-0001", "stage2_ratio", t, [2.86, 2.84, 2.84, 2.84], column="mean_4h")
    put(conn, "acme", "COMP-0002", "stage2_ratio", t, [3.4, 3.4, 3.4, 3.2], column="mean_4h")
    res = evaluate(conn, only, "acme", (h(t), h(t + 3)))
    got = [(b.compressor_id, b.hour - h(t), b.severity) for b in res.breaches]
    from datetime import timedelta as td
    assert got == [("COMP-0002", td(hours=2), "critical"), ("COMP-0001", td(hours=3), "warning"),
                   ("COMP-0002", td(hours=3), "critical")]


def test_rate_of_change(conn, fleet):
    rs = load_rule_set(DEFAULT_RULES)
    only = rs.model_copy(update={"rules": (rs.rule("bearing_temp_rising_fast"),)})
    put(conn, "acme", "COMP-0001", "bearing_temp_max_f", 0, [4.9, 5, 5, 10, 10, 1, 1],
        column="rate_of_change")
    res = evaluate(conn, only, "acme", (h(0), h(6)))
    assert [(b.hour, b.severity) for b in res.breaches] == [
        (h(2), "warning"), (h(3), "warning"), (h(4), "critical"), (h(5), "critical")]
    assert [c.hour for c in res.clears] == [h(6)]


def test_no_data_rule(conn, fleet):
    rs = one_rule("""
- id: data_missing
  kind: no_data
  warning_after_hours: 3
  critical_after_hours: 5
""" + COMMON)
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [170] * 10 + [None] * 5 + [170, 170])
    # (From h1: at h0 nothing earlier is known, and an unknown state gets a conservative Clear.)
    res = evaluate(conn, rs, "acme", (h(1), h(16)), compressors=["COMP-0001"])
    assert [(b.hour, b.severity, b.value) for b in res.breaches] == [
        (h(12), "warning", 3), (h(13), "warning", 4), (h(14), "critical", 5)]
    assert [c.hour for c in res.clears] == [h(15)]
    # A unit that never reported is missing too (never "normal").
    silent = evaluate(conn, rs, "acme", (h(16), h(16)), compressors=["COMP-0002"])
    assert [b.severity for b in silent.breaches] == ["critical"]


def test_applies_to_models_and_per_model_override(conn, fleet):
    rs = one_rule("""
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  applies_to: {models: [Ariel JGK/4, Ajax DPC-360]}
  models:
    Ajax DPC-360: {warning: 170}
""" + COMMON)
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [175])   # Ariel JGK/4
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0, [175])   # Ajax DPC-360
    put(conn, "bravo", "COMP-0003", "oil_temp_f", 0, [200])  # Ariel JGE/4: not in scope
    assert [(b.compressor_id, b.threshold) for b in
            evaluate(conn, rs, "acme", (h(0), h(0))).breaches] == [("COMP-0002", 170)]
    assert evaluate(conn, rs, "bravo", (h(0), h(0))).breaches == []


def test_org_override_changes_only_that_org(conn, fleet):
    base = load_rule_set(DEFAULT_RULES)
    org = load_org_rule_set("acme.yaml", base, text="""
org: acme
overrides:
  oil_temp_high: {warning: 170, clear: 165}
""")
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [172, 172])
    ids = {b.rule_id for b in evaluate(conn, org, "acme", (h(1), h(1))).breaches}
    assert "oil_temp_high" in ids
    ids = {b.rule_id for b in evaluate(conn, base, "acme", (h(1), h(1))).breaches}
    assert "oil_temp_high" not in ids


def test_tenant_isolation(conn, fleet):
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [195, 195])
    assert evaluate(conn, OIL, "bravo", (h(0), h(1))).breaches == []
    assert evaluate(conn, OIL, "bravo", (h(0), h(1)), compressors=["COMP-0001"]).breaches == []
    assert len(evaluate(conn, OIL, "acme", (h(0), h(1))).breaches) == 1


def test_single_hour_path_agrees_with_range_path(conn, fleet):
    """The pipeline's one-hour evaluation (GROUP BY) and the range evaluation (windows) are
    two SQL shapes of the same semantics: they must report the same breaches and clears."""
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0,
        [170, 185, 191, 178, None, 192, 193, 174, 174, 185, 174, 174, 174, None, 170, 170])
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0,
        [181, 181, 181, 170, 170, 176, 176, 174, 181, None, None, 170, 170, 191, 191, 170])
    full = evaluate(conn, OIL, "acme", (h(0), h(15)))
    singles = [evaluate(conn, OIL, "acme", (h(i), h(i))) for i in range(16)]
    assert [b for r in singles for b in r.breaches] == full.breaches
    assert [c for r in singles for c in r.clears] == full.clears
    assert len(full.breaches) > 5 and len(full.clears) >= 2


def test_stopped_unit_hours_neither_breach_nor_clear(conn, fleet):
    rs = one_rule("""
- id: oil_pressure_low
  kind: threshold
  metric: oil_pressure_psig
  comparison: below
  warning: 50
  persistence: {hours: 1, of: 1}
  clear_after_hours: 1
""" + COMMON)
    # COMP-0001 is rated 1400 rpm: running means speed_rpm min over the last 4 h >= 700
    # (so start-up warm-up hours do not count either).
    put(conn, "acme", "COMP-0001", "speed_rpm", 0, [1400, 1400, 300, 0, 699, 1400],
        column="min_4h")
    put(conn, "acme", "COMP-0001", "oil_pressure_psig", 0, [40, 40, 0, 0, 60, 60])
    res = evaluate(conn, rs, "acme", (h(0), h(5)))
    assert [b.hour for b in res.breaches] == [h(0), h(1)]   # not the stopped hours
    assert [c.hour for c in res.clears] == [h(5)]           # only once running and normal
    # running_only: false judges every hour.
    always = rs.model_copy(update={"rules": (rs.rules[0].model_copy(
        update={"running_only": False}),)})
    assert [b.hour for b in evaluate(conn, always, "acme", (h(0), h(5))).breaches] == [
        h(0), h(1), h(2), h(3)]
