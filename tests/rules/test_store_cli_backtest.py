"""Rule-set storage and versioning, the ``rules`` CLI, and backtest/diff episodes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from altaviz.app.cli import main
from rules.backtest import backtest, diff, read_ground_truth
from rules.evaluate import evaluate
from rules.loader import DEFAULT_RULES, load_org_rule_set, load_rule_set
from rules.store import get_rule_set, latest_rule_set, save_rule_set
from tests.rules.helpers import COMMON, h, one_rule, put

OIL = """
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: {w}
  persistence: {{hours: 1, of: 1}}
  clear_after_hours: 1
""" + COMMON


def test_store_versions_by_content(conn, fleet):
    base = load_rule_set(DEFAULT_RULES)
    a = save_rule_set(conn, base)
    again = save_rule_set(conn, load_rule_set(DEFAULT_RULES))
    assert (a.rule_set_id, a.version) == (again.rule_set_id, again.version) == (a.rule_set_id, 1)
    changed = save_rule_set(conn, one_rule(OIL.format(w=180)))
    assert changed.version == 2 and changed.rule_set_id != a.rule_set_id
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM alert_rules WHERE rule_set_id = %s", [a.rule_set_id])
        assert cur.fetchone()[0] == len(base.rules)
    conn.commit()
    # Org sets are stored under the tenant (RLS), versioned separately.
    org = load_org_rule_set("acme.yaml", base, text="org: acme\noverrides:\n"
                            "  oil_temp_high: {warning: 170, clear: 165}\n")
    stored = save_rule_set(conn, org)
    assert stored.version == 1 and stored.org_id == "acme"
    back = get_rule_set(conn, stored.rule_set_id, "acme")
    assert back.content_hash == org.content_hash
    assert latest_rule_set(conn, None).version == 2
    # Every result carries the rule version it came from.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [195])
    res = evaluate(conn, changed, "acme", (h(0), h(0)))
    assert [(b.rule_set_id, b.rule_version) for b in res.breaches] == [
        (changed.rule_set_id, 2)]


def test_cli_check_exit_codes(tmp_path, capsys):
    assert main(["rules", "check"]) == 0
    assert "OK" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n- id: r1\n  kind: threshold\n  metric: oil_temp_f\n"
                   "  comparison: above\n  warning: 360\n  critical: 350\n"
                   "  diagnosis: d\n  checks: [c]\n  basis: b\n")
    assert main(["rules", "check", str(DEFAULT_RULES), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:6: rule r1: warning: must be below critical (got 360 >= 350)" in out
    org = tmp_path / "acme.yaml"
    org.write_text("org: acme\noverrides:\n  oil_temp_high: {warning: 175, clear: 172}\n")
    assert main(["rules", "check", str(org)]) == 0


def test_backtest_episodes_fatigue_and_ground_truth(conn, fleet, tmp_path):
    rs = one_rule(OIL.format(w=180))
    # COMP-0001 (faulty): two episodes; COMP-0002 (healthy): one false alert.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [170, 185, 186, 170, 170, 190, 170, 170])
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0, [170, 170, 181, 170, 170, 170, 170, 170])
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps({"faults": [
        {"org_id": "acme", "compressor_id": "COMP-0001", "mode": "bearing_wear",
         "onset": h(1).isoformat(), "failure": h(7).isoformat()},
        {"org_id": "acme", "compressor_id": "COMP-0002", "mode": "valve_leak",
         "onset": h(5).isoformat(), "failure": h(7).isoformat()},
    ]}))
    faults = read_ground_truth(truth)
    report = backtest(conn, rs, ["acme"], h(0), h(7), faults[:1])
    assert [(e.compressor_id, e.start, e.end) for e in report.episodes] == [
        ("COMP-0001", h(1), h(3)), ("COMP-0002", h(2), h(3)), ("COMP-0001", h(5), h(6))]
    assert report.by_rule == {("oil_temp_high", "warning"): 3}
    assert report.faults[0].caught and report.faults[0].lead_hours == 6
    assert report.false_alerts == 1 and report.false_by_rule == {"oil_temp_high": 1}
    assert report.summary()["false_alerts_by_rule"] == {"oil_temp_high": 1}
    # healthy: COMP-0002's 8 hours and COMP-0001's hour before onset (after failure it is down)
    assert report.healthy_compressor_days == pytest.approx(9 / 24)
    assert report.false_alerts_per_100_compressor_days == pytest.approx(100 / (9 / 24))
    assert report.alerts_per_compressor_week == pytest.approx(3 / (2 * (8 / 24) / 7))
    both = backtest(conn, rs, ["acme"], h(0), h(7), faults)
    assert [f.caught for f in both.faults] == [True, False]
    assert both.caught_share == 0.5 and both.median_lead_hours == 6


def test_diff_shows_gained_and_lost_alerts(conn, fleet):
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, [170, 185, 170, 170, 176, 170])
    d = diff(conn, one_rule(OIL.format(w=180)), one_rule(OIL.format(w=175)), ["acme"],
             h(0), h(5))
    assert d.counts == {"oil_temp_high": (1, 2)}
    assert [(e.start, e.rule_id) for e in d.added] == [(h(4), "oil_temp_high")]
    assert d.removed == []
    assert h(5) - h(4) == timedelta(hours=1)
