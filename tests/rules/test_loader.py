"""Loading: the broken-file corpus (exact locations), the default set, org overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from altaviz.core.catalog import builtin_catalog
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.loader import DEFAULT_RULES, RuleFileError, load_org_rule_set, load_rule_set
from rules.schema import (
    NoDataRule,
    OfflineRule,
    RuleSet,
    StuckRule,
    ThresholdRule,
    notice_rule_ids,
)

BROKEN = sorted((Path(__file__).parent / "broken").glob("*.yaml"))


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_names_file_line_rule_and_key(path: Path) -> None:
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# expect: LINE ")
    line, _, message = first.removeprefix("# expect: LINE ").partition(": ")
    name = f"broken/{path.name}"
    with pytest.raises(RuleFileError) as info:
        load_rule_set(name, text=text)
    assert str(info.value.problems[0]) == f"{name}:{line}: {message}"
    assert str(info.value).startswith(f"{name}:{line}: ")


def test_broken_corpus_covers_the_required_errors() -> None:
    names = {p.stem for p in BROKEN}
    assert {"unknown_metric", "warning_beyond_critical", "duplicate_id", "unknown_model",
            "bad_window", "wrong_type_string_number", "unknown_key"} <= names


def test_default_rule_set_loads_and_covers_the_setpoint_table() -> None:
    rs = load_rule_set(DEFAULT_RULES)
    metrics = {r.metric for r in rs.rules}
    for m in ("discharge_temp_max_f", "stage1_discharge_temp_f", "avg_suction_discharge_temp_f",
              "oil_pressure_psig", "oil_temp_f", "oil_filter_dp_psid", "bearing_temp_max_f",
              "bearing_spread_f", "vibration_frame_mm_s", "vibration_cylinder_mm_s",
              "vibration_skid_mm_s", "flow_mmscfd", "stage2_ratio", "jacket_water_temp_f"):
        assert m in metrics
    assert all(r.metric is None or r.metric in METRIC_BY_NAME for r in rs.rules)
    assert any(isinstance(r, NoDataRule) for r in rs.rules)
    for r in rs.rules:
        assert "ISO 10816-3" not in r.basis or "not" in r.basis
        if "vibration" in r.id and r.kind == "threshold":
            assert "ISO 20816-8" in r.basis
    jw = rs.rule("jacket_water_temp_high")
    assert jw.applies_to.models == ("Ariel JGK/4",)
    assert set(builtin_catalog().model_names) == {"Ariel JGK/4", "Ajax DPC-360", "Ariel JGE/4"}
    bearing = rs.rule("main_bearing_temp_high")
    assert isinstance(bearing, ThresholdRule) and bearing.warning is not None
    assert (bearing.warning.delta, bearing.warning.absolute) == (20, 220)
    # YAML anchors expand to distinct rules with their own metric.
    assert rs.rule("stage3_ratio_shift").metric == "stage3_ratio"


def test_content_hash_is_stable_and_content_sensitive() -> None:
    a = load_rule_set(DEFAULT_RULES)
    b = load_rule_set(DEFAULT_RULES)
    assert a.content_hash == b.content_hash
    text = DEFAULT_RULES.read_text().replace("warning: 330", "warning: 331")
    assert load_rule_set("x.yaml", text=text).content_hash != a.content_hash


def test_org_override_merges_only_named_keys() -> None:
    base = load_rule_set(DEFAULT_RULES)
    org = load_org_rule_set("acme.yaml", base, text="""
org: acme
overrides:
  discharge_temp_high:
    warning: 320
    clear: 310
  oil_temp_high:
    models:
      Ajax DPC-360: {warning: 175, clear: 172}
disable: [vibration_skid_high]
""")
    assert org.org_id == "acme"
    r = org.rule("discharge_temp_high")
    assert isinstance(r, ThresholdRule) and r.warning is not None and r.critical is not None
    assert (r.warning.absolute, r.critical.absolute) == (320, 350)
    assert r.diagnosis == base.rule("discharge_temp_high").diagnosis
    oil = org.rule("oil_temp_high")
    assert isinstance(oil, ThresholdRule)
    ajax_warning, ajax_critical, ajax_clear = oil.levels_for("Ajax DPC-360")
    assert ajax_warning is not None and ajax_critical is not None
    assert (ajax_warning.absolute, ajax_critical.absolute, ajax_clear.absolute) == (175, 190, 172)
    assert not org.rule("vibration_skid_high").enabled
    assert len(org.rules) == len(base.rules)
    assert org.content_hash != base.content_hash


@pytest.mark.parametrize(("text", "expected"), [
    ("org: acme\noverrides:\n  discharge_temp_high:\n    warning: 360\n",
     "acme.yaml:4: rule discharge_temp_high: warning: must be below critical (got 360 >= 350)"),
    ("org: acme\noverrides:\n  no_such_rule:\n    warning: 1\n",
     "acme.yaml:3: rule no_such_rule: no such rule in base (overrides must name an existing "
     "rule id)"),
    ("org: acme\noverrides:\n  discharge_temp_high:\n    metric: oil_temp_f\n",
     "acme.yaml:4: rule discharge_temp_high: metric: cannot be overridden"),
    ("org: acme\noverrides:\n  oil_temp_high:\n    models:\n      Ajax: {warning: 1}\n",
     "acme.yaml:5: rule oil_temp_high: models.Ajax: unknown model 'Ajax'"),
])
def test_org_override_errors_point_into_the_override_file(text: str, expected: str) -> None:
    base = load_rule_set(DEFAULT_RULES).model_copy(update={"source": "base"})
    with pytest.raises(RuleFileError) as info:
        load_org_rule_set("acme.yaml", base, text=text)
    assert str(info.value.problems[0]).startswith(expected)


def test_every_error_of_a_file_is_reported_at_once() -> None:
    """A missing kind does not hide the rule's other errors, and a key that fails its own
    validation does not hide what the cross-field checks say about the keys that passed."""
    text = """format: 1
rules:
  - id: no_kind
    metric: vibration_frame_mm_s
    comparison: above
    warning: {absolute: 8}
    diagnosis: ""
    checks: [Check bolts]
    basis: b
  - id: layered
    kind: threshold
    metric: vibration_frame_mm_s
    comparison: above
    warning: {absolute: 12}
    critical: {absolute: 8}
    diagnosis: d
    checks: [c]
    basis: b
    bogus_key: 1
"""
    with pytest.raises(RuleFileError) as info:
        load_rule_set("all.yaml", text=text)
    found = [(p.line, p.rule_id, p.key_path) for p in info.value.problems]
    assert found == [(3, "no_kind", "kind"), (7, "no_kind", "diagnosis"),
                     (14, "layered", "warning"), (19, "layered", "bogus_key")]
    assert "must be below critical (got 12 >= 8)" in str(info.value)


def test_a_stuck_rule_implies_its_threshold_and_refuses_other_values() -> None:
    rs = load_rule_set(DEFAULT_RULES)
    rule = rs.rule("stage2_suction_pressure_stuck")
    assert isinstance(rule, StuckRule) and rule.column == "stddev_4h"
    assert (rule.comparison, rule.persistence.hours, rule.persistence.of) == ("below", 3, 3)
    assert rule.warning is not None and rule.warning.absolute == 0.0
    # read back from its stored canonical form, it is the same rule
    again = RuleSet.model_validate({"source": "db", "rules": rs.canonical()["rules"]})
    assert again.rule("stage2_suction_pressure_stuck") == rule
    assert again.content_hash == rs.content_hash
    text = """rules:
  - id: s
    kind: stuck
    metric: oil_temp_f
    unchanged_hours: 8
    persistence: {hours: 2, of: 3}
    diagnosis: d
    checks: [c]
    basis: b
"""
    with pytest.raises(RuleFileError) as info:
        load_rule_set("s.yaml", text=text)
    assert "a stuck rule sets 'persistence' itself" in str(info.value)
    assert "stage2_suction_pressure_stuck" in notice_rule_ids(rs)
    assert "unit_stopped" in notice_rule_ids(rs) and "oil_pressure_low" not in notice_rule_ids(rs)


def test_an_offline_rule_needs_its_channel_and_counts_at_most_a_day_of_running_hours() -> None:
    rs = load_rule_set(DEFAULT_RULES)
    rule = rs.rule("oil_pressure_offline")
    assert isinstance(rule, OfflineRule) and isinstance(rule, NoDataRule)
    assert (rule.metric, rule.warning_after_hours) == ("oil_pressure_psig", 3)
    assert "oil_pressure_offline" in notice_rule_ids(rs)
    again = RuleSet.model_validate({"source": "db", "rules": rs.canonical()["rules"]})
    assert again.rule("oil_pressure_offline") == rule
    body = "    diagnosis: d\n    checks: [c]\n    basis: b\n"
    for head, problem in (
            ("    kind: offline\n    warning_after_hours: 3\n", "metric"),
            ("    kind: offline\n    metric: oil_temp_f\n    warning_after_hours: 30\n",
             "warning_after_hours")):
        with pytest.raises(RuleFileError) as info:
            load_rule_set("o.yaml", text="rules:\n  - id: o\n" + head + body)
        assert problem in str(info.value)
