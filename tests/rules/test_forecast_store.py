"""The hourly run's forecasts in a real PostgreSQL: stored per organization under row-level
security, quoted by the alert message (golden wording), and forecast-driven warnings that
open and clear."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from altaviz.app.cli import main
from altaviz.app.web.pages import alert_summary
from altaviz.core import db
from altaviz.core.messages import load_context, render
from altaviz.core.payloads import AlertState
from rules.forecast import GridCache, forecast_hour
from rules.loader import RuleFileError
from tests.rules.helpers import COMMON, h, one_rule, put
from tests.security.test_least_privilege import as_role

OIL = one_rule("""
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  critical: 190
  clear: 177
  forecast: {limit_name: shutdown, warn_within_hours: 60}
""" + COMMON)

HOURS = 96


def _rising(conn: psycopg.Connection[Any]) -> None:
    # COMP-0001 warms 0.25 F per running hour from 150 F: at h(95) it is at 173.75 F, so it
    # reaches 190 F in 65 h. COMP-0002 stays flat with some noise.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0,
        [150 + 0.25 * i + (0.3 if i % 2 else -0.3) for i in range(HOURS)])
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0,
        [160 + (0.8 if i % 3 == 0 else -0.4) for i in range(HOURS)])
    put(conn, "bravo", "COMP-0003", "oil_temp_f", 0, [150 + 0.25 * i for i in range(HOURS)])


def test_forecast_is_stored_per_organization_and_quoted_by_the_message(conn, fleet,
                                                                        db_url) -> None:
    _rising(conn)
    items, warned, ended = forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    assert [(f.compressor_id, f.rule_id, f.model) for f in items] == [
        ("COMP-0001", "oil_temp_high", "linear")]
    f = items[0]
    assert f.hours == pytest.approx(65.0, rel=0.03)
    assert f.low_hours <= f.hours <= (f.high_hours or float("inf"))
    assert f.input_end == h(HOURS - 1) and f.running_hours >= 24
    assert warned == [] and ended == []         # 65 h is not under the 60 h of the rule

    roles = db.role_names(conn)
    with db.connect(as_role(db_url, roles["runtime"]), autocommit=True) as rt:
        with db.tenant(rt, "acme"):
            rows = rt.execute("SELECT compressor_id, limit_value, limit_name, model, "
                              "predicted_at - hour FROM predictions").fetchall()
            assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
                ("COMP-0001", 190.0, "shutdown", "linear")]
            listed = rt.execute(db.queries("predictions")["units_by_shortest_forecast"],
                                {"limit": 10}).fetchall()
            assert [r[0] for r in listed] == ["COMP-0001"]
            alert = AlertState(
                alert_id="a1", workflow_id="w", org_id="acme", compressor_id="COMP-0001",
                site_id="PB-01", rule_id="oil_temp_high", metric="oil_temp_f", value=181.2,
                threshold=180.0, severity="warning", breach_hour=h(HOURS - 1),
                opened_at=h(HOURS - 1))
            ctx = load_context(rt, alert)
        with db.tenant(rt, "bravo"):      # bravo sees none of acme's forecasts
            assert rt.execute("SELECT count(*) FROM predictions").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rt.execute("INSERT INTO predictions (org_id, compressor_id, rule_id, metric, "
                           "hour, model, input_start, input_end, running_hours, level, slope, "
                           "limit_value, limit_name, predicted_at, low_at) VALUES ('acme', "
                           "'COMP-0001', 'r', 'm', now(), 'linear', now(), now(), 1, 0, 0, 0, "
                           "'x', now(), now())")
    assert ctx.forecast is not None
    message = render(alert, "opened", ctx)
    line = next(x for x in message.full.splitlines() if x.startswith("Forecast:"))
    assert line.startswith("Forecast: at this rate reaches 190 °F (shutdown) in about 2.7 days (")
    assert line.endswith("), 80% band, counting running time only.")


def test_repeated_hour_replaces_its_rows(conn, fleet) -> None:
    _rising(conn)
    forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    with db.tenant(conn, "acme"):
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (1,)


def test_forecast_driven_warning_opens_and_clears(conn, fleet) -> None:
    _rising(conn)
    fast = OIL.model_copy(update={"rules": (OIL.rules[0].model_copy(update={
        "forecast": OIL.rules[0].forecast.model_copy(  # type: ignore[union-attr]
            update={"warn_within_hours": 100.0})}),)})
    _, warned, ended = forecast_hour(conn, fast, "acme", h(HOURS - 1))
    assert [(b.compressor_id, b.rule_id, b.severity) for b in warned] == [
        ("COMP-0001", "oil_temp_high_forecast", "warning")]
    assert warned[0].value == pytest.approx(65.0, rel=0.03) and warned[0].threshold == 100.0
    assert "reaches 190 F (shutdown)" in warned[0].diagnosis
    assert ended == []
    # the unit stops: no forecast, and the forecast warning clears
    put(conn, "acme", "COMP-0001", "speed_rpm", HOURS, [0.0], running=False)
    put(conn, "acme", "COMP-0001", "speed_rpm", HOURS, [0.0], column="min_4h", running=False)
    put(conn, "acme", "COMP-0001", "oil_temp_f", HOURS, [120.0], running=False)
    items, warned, ended = forecast_hour(conn, fast, "acme", h(HOURS))
    assert items == [] and warned == []
    assert [(c.compressor_id, c.rule_id) for c in ended] == [
        ("COMP-0001", "oil_temp_high_forecast")]


def test_a_rule_without_an_absolute_critical_level_cannot_ask_for_a_forecast() -> None:
    with pytest.raises(RuleFileError, match="forecast"):
        one_rule("""
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  forecast: {warn_within_hours: 24}
""" + COMMON)


def test_alert_page_shows_the_forecast_with_its_band() -> None:
    alert = {"compressor_id": "COMP-0001", "rule_id": "oil_temp_high", "metric": "oil_temp_f",
             "value": 181.2, "threshold": 180.0, "severity": "warning", "state": "open",
             "ack_state": "unacknowledged", "condition_state": "active",
             "forecast": "at this rate reaches 190 F (shutdown) in about 2.7 days (2.2-3.4)"}
    html = alert_summary(alert)
    assert ("<dt>Forecast</dt><dd>at this rate reaches 190 F (shutdown) in about 2.7 days "
            "(2.2-3.4) (80% band, running time)</dd>") in html
    assert "Forecast" not in alert_summary({**alert, "forecast": None})


def test_cached_inputs_give_the_forecasts_of_a_full_read(conn, fleet) -> None:
    _rising(conn)
    cache = GridCache()
    first, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 2), cache=cache,
                                changed=[h(HOURS - 2)])
    assert len(first) == 1
    # a late correction of an older hour and the new hour arrive; only those are read again
    put(conn, "acme", "COMP-0001", "oil_temp_f", HOURS - 10, [150.0 + 0.25 * (HOURS - 10) + 5])
    cached, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1), cache=cache,
                                 changed=[h(HOURS - 10), h(HOURS - 1)])
    full, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    assert [(f.compressor_id, f.hours, f.low_hours, f.level) for f in cached] == [
        (f.compressor_id, f.hours, f.low_hours, f.level) for f in full]
    # without telling the cache about the corrected hour it would not have seen it
    put(conn, "acme", "COMP-0001", "oil_temp_f", HOURS - 12, [400.0])
    stale, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1), cache=cache,
                                changed=[h(HOURS - 1)])
    fresh, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    assert (len(stale), len(fresh)) == (1, 1), (stale, fresh)
    assert stale[0].level != fresh[0].level or stale[0].slope != fresh[0].slope


def test_backtest_scores_the_forecast_against_the_true_failure(conn, fleet, db_url, tmp_path,
                                                               monkeypatch, capsys) -> None:
    # COMP-0001 warms 0.4 F an hour from 150 F: warning 180 F at h75 (the alert opens), the
    # unit fails at h100 as it reaches 190 F. COMP-0002 stays flat.
    put(conn, "acme", "COMP-0001", "oil_temp_f", 0,
        [150 + 0.4 * i + (0.2 if i % 2 else -0.2) for i in range(120)])
    put(conn, "acme", "COMP-0002", "oil_temp_f", 0, [165.0] * 120)
    conn.commit()
    rules = tmp_path / "oil.yaml"
    rules.write_text("""rules:
- id: oil_temp_high
  kind: threshold
  metric: oil_temp_f
  comparison: above
  warning: 180
  critical: 190
  persistence: {hours: 1, of: 1}
""" + COMMON.lstrip("\n"))
    truth = tmp_path / "ground_truth.json"
    truth.write_text(json.dumps({"faults": [
        {"org_id": "acme", "compressor_id": "COMP-0001", "mode": "oil_degradation",
         "onset": h(0).isoformat(), "failure": h(100).isoformat()}]}))
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
    monkeypatch.setenv("ALTAVIZ_DATA_DIR", str(tmp_path / "data"))
    args = ["rules", "backtest", str(rules), "--from", h(0).isoformat(), "--to",
            h(119).isoformat(), "--org", "acme", "--ground-truth", str(truth)]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["forecast"]
    at_open = out["open"]["oil_degradation"]
    assert (at_open["faults"], at_open["with_forecast"], at_open["inside_band"]) == (1, 1, 1.0)
    assert at_open["median_abs_error_h"] < 2.0            # 25 h forecast for 25 h to failure
    assert at_open["naive_with_forecast"] == 1
    later = out["open+24h"]["oil_degradation"]
    assert later["with_forecast"] == 1 and later["median_abs_error_h"] < 1.0
    assert main(args) == 0
    assert "time-to-failure forecast vs true failure" in capsys.readouterr().out


def test_a_worker_that_missed_an_hour_reads_the_whole_window(conn, fleet) -> None:
    _rising(conn)
    cache = GridCache()
    forecast_hour(conn, OIL, "acme", h(HOURS - 3), cache=cache, changed=[h(HOURS - 3)])
    # another worker ran h(HOURS - 2), whose run carried a late correction of an older hour
    put(conn, "acme", "COMP-0001", "oil_temp_f", HOURS - 20, [150.0 + 0.25 * (HOURS - 20) + 4])
    mine, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1), cache=cache,
                               changed=[h(HOURS - 1)])
    full, _, _ = forecast_hour(conn, OIL, "acme", h(HOURS - 1))
    assert [(f.hours, f.level, f.slope) for f in mine] == [
        (f.hours, f.level, f.slope) for f in full]
