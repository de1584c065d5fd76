"""Scoring a backtest against the ground truth: per fault mode, early catches and lead, false
alerts per healthy compressor-day, alerts raised in nuisance events, alerts after a failure."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.app.cli import main
from altaviz.core import db
from altaviz.core.fleet_store import load_fleet
from altaviz.core.settings import Settings
from altaviz.core.telemetry import METRIC_BY_NAME
from etl.pipeline import run_pipeline
from rules.backtest import backtest, load_ground_truth
from rules.loader import DEFAULT_RULES, load_rule_set
from tests.rules.helpers import COMMON, h, put

OIL = """rules:
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  persistence: {hours: 1, of: 1}
  clear_after_hours: 1
""" + COMMON.lstrip("\n")


def _naive(i: int) -> str:
    """Hour ``i`` as a timestamp without an offset (as a hand-written file may hold it)."""
    return h(i).replace(tzinfo=None).isoformat()


def _series(hot: tuple[int, ...]) -> list[float | None]:
    return [190.0 if i in hot else 170.0 for i in range(120)]


def test_cli_scores_naive_ground_truth_as_utc(conn, fleet, db_url, tmp_path, monkeypatch,
                                              capsys) -> None:
    # COMP-0001: a false alert at h5 (before onset, in a hot spell), the fault caught at h20
    # (80 h before failure), an alert at h105 after the unit failed at h100.
    # (a stuck flow sensor at the same time did not raise the oil-temperature alert)
    # COMP-0002: a false alert at h30 (a stuck oil-temperature sensor), the fault caught at
    # h60 (30 h before failure at h90), a planned stop that raised nothing.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, _series((5, 20, 105)))
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0, _series((30, 60)))
    conn.commit()
    rules = tmp_path / "oil.yaml"
    rules.write_text(OIL)
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps({
        "faults": [
            {"org_id": "acme", "compressor_id": "COMP-0001", "mode": "bearing_wear",
             "onset": _naive(10), "failure": _naive(100)},
            {"org_id": "acme", "compressor_id": "COMP-0002", "mode": "oil_degradation",
             "onset": _naive(50), "failure": _naive(90)}],
        "nuisance_events": [
            {"org_id": "acme", "compressor_id": "COMP-0001", "kind": "hot_spell",
             "start": _naive(4), "end": _naive(8)},
            {"org_id": "acme", "compressor_id": "COMP-0001", "kind": "stuck_sensor",
             "start": _naive(4), "end": _naive(8), "channel": "flow_mmscfd"},
            {"org_id": "acme", "compressor_id": "COMP-0002", "kind": "hot_spell",
             "start": _naive(4), "end": _naive(8)},
            {"org_id": "acme", "compressor_id": "COMP-0002", "kind": "stuck_sensor",
             "start": _naive(28), "end": _naive(32), "channel": "oil_temp_f"},
            {"org_id": "acme", "compressor_id": "COMP-0002", "kind": "planned_stop",
             "start": _naive(70), "end": _naive(80)}]}))
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
    monkeypatch.setenv("ALTAVIZ_DATA_DIR", str(tmp_path / "data"))
    args = ["rules", "backtest", str(rules), "--from", _naive(0), "--to", _naive(119),
            "--org", "acme", "--ground-truth", str(truth)]

    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scores"] == {
        "bearing_wear": {"faults": 1, "caught": 1, "caught_early": 1,
                         "median_lead_hours": 80.0, "p10_lead_hours": 80.0},
        "oil_degradation": {"faults": 1, "caught": 1, "caught_early": 0,
                            "median_lead_hours": 30.0, "p10_lead_hours": 30.0},
        "all": {"faults": 2, "caught": 2, "caught_early": 1,
                "median_lead_hours": 55.0, "p10_lead_hours": 35.0}}
    # healthy: COMP-0001's 10 h before onset, COMP-0002's 50 h before onset; after a failure
    # the unit is down
    assert out["healthy_compressor_days"] == pytest.approx(60 / 24, abs=1e-3)
    assert out["false_alerts"] == 2
    assert out["false_alerts_per_100_compressor_days"] == pytest.approx(100 * 2 / (60 / 24))
    assert out["nuisance_alerts"] == {"hot_spell": 1, "stuck_sensor": 1}
    assert out["nuisance_alerts_by_rule"] == {"hot_spell": {"oil_temp_high": 1},
                                              "stuck_sensor": {"oil_temp_high": 1}}
    assert out["alerts_after_failure"] == 1
    assert out["faults_open_at_end"] == 0

    assert main(args) == 0
    text = capsys.readouterr().out
    assert "false alerts: 2 in 2.5 healthy compressor-days = 80.00 per 100" in text
    assert "false alerts raised in nuisance events: hot_spell 1, stuck_sensor 1" in text
    assert "alerts after a unit had failed: 1" in text


def test_scores_on_a_simulated_field_fleet(tmp_path: Path, db_url: str,
                                           conn: psycopg.Connection[Any]) -> None:
    """The simulator's field behaviour through the real ETL and the default rules: every
    figure agrees with a recount from the ground truth and the episodes."""
    simulator = pytest.importorskip("altaviz.simulator")
    result = simulator.simulate(simulator.SimulationConfig(
        compressors=12, days=10, seed=3, out=tmp_path / "sim", fault_share=0.5,
        organizations=2))
    load_fleet(conn, result.fleet)
    settings = Settings(data_dir=tmp_path, landing_dir=result.landing_dir,
                        lake_dir=tmp_path / "lake", late_arrival_minutes=90)
    run_pipeline(settings, db_url)
    truth = load_ground_truth(result.ground_truth_path)
    gt = result.ground_truth
    start, end = gt.window_start, gt.window_end - timedelta(hours=1)
    rule_set = load_rule_set(DEFAULT_RULES)
    report = backtest(conn, rule_set, db.org_ids(conn), start, end,
                      truth.faults, exclude_rules=("data_missing",), nuisance=truth.nuisance)

    failed = [f for f in truth.faults if f.failure is not None]
    assert failed and truth.nuisance
    assert report.scores["all"].faults == len(failed)
    assert sum(s.faults for m, s in report.scores.items() if m != "all") == len(failed)
    assert report.faults_open_at_end == len(truth.faults) - len(failed)
    assert report.scores["all"].caught == sum(o.caught for o in report.faults
                                              if o.fault.failure is not None)

    # healthy time recounted on the 10-minute grid: outside onset..failure, before failure
    step = timedelta(minutes=10)
    healthy = 0
    for c in result.fleet.compressors:
        mine = [f for f in truth.faults if f.compressor_id == c.compressor_id]
        t = start
        while t < gt.window_end:
            if not any(f.onset <= t for f in mine):
                healthy += 1
            t += step
    assert report.healthy_compressor_days == pytest.approx(healthy / 144, abs=len(failed) / 72)
    # the days of faulted units before onset count as healthy
    assert report.healthy_compressor_days > (12 - len(truth.faults)) * 10

    # every episode is a detection window's, a false alert or an alert after a failure
    def in_fault(e: Any) -> bool:
        return any(f.compressor_id == e.compressor_id and f.onset <= e.start
                   and (f.failure is None or e.start <= f.failure) for f in truth.faults)

    def after(e: Any) -> bool:
        return any(f.compressor_id == e.compressor_id and f.failure is not None
                   and e.start > f.failure for f in truth.faults)

    healthy_eps = [e for e in report.episodes if not in_fault(e) and not after(e)]
    false = [e for e in healthy_eps if e.rule_id != "data_missing"]
    assert report.false_alerts == len(false)
    # a unit's missing data is a data-quality notice, not a false machine alert
    assert report.data_notices == len(healthy_eps) - len(false)
    assert report.alerts_after_failure == sum(after(e) for e in report.episodes)
    # an event of one sensor raises only the alerts of rules that read it
    reads = {r.id: ([*re.findall(r"[a-z0-9_]+", METRIC_BY_NAME[r.metric].sql), "speed_rpm"]
                    if r.metric else []) for r in rule_set.rules}
    kinds: dict[str, int] = {}
    for e in false:
        for kind in {n.kind for n in truth.nuisance if n.compressor_id == e.compressor_id
                     and n.start <= e.start < n.end
                     and (n.channel is None or n.channel in reads[e.rule_id])}:
            kinds[kind] = kinds.get(kind, 0) + 1
    assert report.nuisance_alerts == dict(sorted(kinds.items()))
    assert report.summary()["nuisance_alerts"] == report.nuisance_alerts


def test_cli_diff_shows_what_a_change_gains_and_costs(conn, fleet, db_url, tmp_path,
                                                      monkeypatch, capsys) -> None:
    # COMP-0001: 182 F at h5 in a hot spell before onset (a false alert at 180, not at 185),
    # 190 F at h20 after onset (the fault, caught 80 h ahead either way)
    values: list[float | None] = [170.0] * 120
    values[5], values[20] = 182.0, 190.0
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0, values)
    conn.commit()
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(OIL)
    new.write_text(OIL.replace("warning: 180", "warning: 185"))
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps({
        "faults": [{"org_id": "acme", "compressor_id": "COMP-0001", "mode": "bearing_wear",
                    "onset": _naive(10), "failure": _naive(100)}],
        "nuisance_events": [{"org_id": "acme", "compressor_id": "COMP-0001",
                             "kind": "hot_spell", "start": _naive(4), "end": _naive(8)}]}))
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
    monkeypatch.setenv("ALTAVIZ_DATA_DIR", str(tmp_path / "data"))
    args = ["rules", "diff", str(old), str(new), "--from", _naive(0), "--to", _naive(119),
            "--org", "acme", "--ground-truth", str(truth)]

    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    a, b = out["figures"]["old"], out["figures"]["new"]
    assert a["all: caught >= 72 h"] == b["all: caught >= 72 h"] == 1
    assert a["all: median lead h"] == b["all: median lead h"] == 80
    assert (a["false alerts"], b["false alerts"]) == (1, 0)
    assert (a["false alerts in hot_spell"], "false alerts in hot_spell" in b) == (1, False)
    assert [e["start"] for e in out["removed"]] == [str(h(5))] and out["added"] == []

    assert main(args) == 0
    text = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["all:", "caught", ">=", "72", "h", "1", "1"] for line in text)
    assert any(line.split() == ["false", "alerts", "in", "hot_spell", "1", "0", "(-1)"]
               for line in text)
    # healthy: COMP-0001's 10 hours before onset and COMP-0002's 120 hours
    assert ["false", "alerts", "per", "100", "healthy", "compressor-days", "18.46", "0",
            "(-18.46)"] in [line.split() for line in text]
