"""The demo's closing summary carries the backtest's ground-truth figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from altaviz.app.demo import DemoReport, format_report
from rules.backtest import BacktestReport, Episode, Fault, Nuisance, score

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def h(i: int) -> datetime:
    return T0 + timedelta(hours=i)


def test_summary_shows_scores_nuisance_and_after_failure() -> None:
    eps = [Episode("acme", "C1", "oil_temp_high", h(5), h(6), "warning"),       # hot spell
           Episode("acme", "C1", "oil_temp_high", h(20), h(21), "warning"),     # caught
           Episode("acme", "C1", "data_missing", h(105), None, "warning"),      # unit down
           Episode("acme", "C2", "flow_deficit", h(30), h(33), "warning")]      # false
    bt = BacktestReport(start=h(0), end=h(119), episodes=eps, compressors=2)
    score(bt, [("acme", "C1"), ("acme", "C2")],
          [Fault("acme", "C1", "bearing_wear", h(10), h(100))],
          [Nuisance("acme", "C1", "hot_spell", h(4), h(8))], exclude_rules=("data_missing",))
    text = format_report(DemoReport(backtest=bt))
    lines = text.splitlines()
    assert "  bearing_wear              1      1       1        80 h     80 h" in lines
    assert "  all                       1      1       1        80 h     80 h" in lines
    # healthy: C1's 10 hours before onset and C2's 120 hours
    assert "  false alerts: 2 in 5.4 healthy compressor-days = 36.92 per 100" in lines
    assert "    by rule: oil_temp_high 1, flow_deficit 1" in lines
    assert "  false alerts raised in nuisance events: hot_spell 1" in lines
    assert "  alerts after a unit had failed: 1" in lines


def test_summary_counts_held_back_alerts_separately() -> None:
    report = DemoReport(held_back={"maintenance": 3, "inhibited": 5,
                                   "silence_notifications": 2,
                                   "maintenance_notifications": 1})
    assert ("held back: 3 breaches in maintenance windows, 5 by unit stops; "
            "2 notifications by silences, 1 by windows") in format_report(report).splitlines()
