"""The model catalog: an operator's models load with the fleet and the rules, every mistake is
located (file, line, key path), and each unit's channels follow its model, stages and driver."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from altaviz.app.cli import main
from altaviz.core import db
from altaviz.core.catalog import builtin_catalog, default_channels, load_catalog
from altaviz.core.errors import ConfigError, InputError
from altaviz.core.fleet_store import read_fleet
from altaviz.core.settings import Settings, load_settings
from rules.loader import DEFAULT_RULES, RuleFileError, load_rule_set
from rules.schema import ThresholdRule
from tests.conftest import two_tenant_fleet

OPERATOR_CATALOG = """\
format: 1
drivers:
  Caterpillar G3408:
    rated_hp: 425
    rated_rpm: 1800
compressors:
  Ariel JGJ/2:
    description: two-throw frame
    driver: Caterpillar G3408
    stages: 2
    channels: [vibration_frame_mm_s, vibration_skid_mm_s, suction_temp_f, flow_mmscfd,
               speed_rpm, oil_pressure_psig, oil_temp_f, ambient_temp_f]
    stage_channels: [suction_psig, discharge_psig]
    limits:
      oil_temp_high: {warning: 172, critical: 185, clear: 168}
"""


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _fleet_file(path: Path, model: str, **unit: Any) -> Path:
    fleet = two_tenant_fleet().model_dump(mode="json")
    fleet["compressors"] = [{"org_id": "acme", "compressor_id": "COMP-0101", "site_id": "PB-01",
                             "model": model, **unit}]
    path.write_text(json.dumps(fleet, indent=2))
    return path


def test_builtin_models_carry_the_channels_of_their_package() -> None:
    catalog = builtin_catalog()
    ajax = catalog.unit_channels("Ajax DPC-360", None, 2)
    jgk = catalog.unit_channels("Ariel JGK/4", "Caterpillar G3516B", 3)
    assert "jacket_water_temp_f" not in ajax and "stage3_suction_psig" not in ajax
    assert "jacket_water_temp_f" in jgk and "stage3_discharge_temp_f" in jgk
    assert "stage4_suction_psig" not in jgk
    # the migration's rule for units registered before the catalog gives the same lists
    assert default_channels(2, has_driver=False) == ajax
    assert default_channels(3, has_driver=True) == jgk
    units = {c.compressor_id: c for c in two_tenant_fleet().compressors}
    assert units["COMP-0002"].channels == ajax


def test_a_fleet_naming_an_operator_model_loads(tmp_path: Path, db_url: str,
                                                conn: psycopg.Connection[Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    catalog_file = tmp_path / "models.yaml"
    catalog_file.write_text(OPERATOR_CATALOG)
    fleet_file = _fleet_file(tmp_path / "fleet.json", "Ariel JGJ/2")
    # without the operator's catalog the model is unknown, and the error says where
    with pytest.raises(InputError) as info:
        read_fleet(fleet_file)
    line = _line(fleet_file, '"model": "Ariel JGJ/2"')
    assert str(info.value).startswith(
        f"{fleet_file}:{line}: compressors[0].model: unknown model 'Ariel JGJ/2' "
        "(models in the catalog: Ajax DPC-360, Ariel JGE/4, Ariel JGK/4;")
    settings = Settings(data_dir=tmp_path, database_url=db_url, model_catalog_file=catalog_file)
    assert main(["fleet", "load", str(fleet_file)], settings=settings) == 0
    assert "1 compressors" in capsys.readouterr().out
    with conn.transaction():
        row = conn.execute("SELECT model, driver, rated_hp, rated_rpm, stages, channels "
                           "FROM compressors WHERE compressor_id = 'COMP-0101'").fetchone()
    assert row == ("Ariel JGJ/2", "Caterpillar G3408", 425, 1800, 2, [
        "vibration_frame_mm_s", "vibration_skid_mm_s", "stage1_suction_psig",
        "stage1_discharge_psig", "stage2_suction_psig", "stage2_discharge_psig",
        "suction_temp_f", "flow_mmscfd", "speed_rpm", "oil_pressure_psig", "oil_temp_f",
        "jacket_water_temp_f", "ambient_temp_f"])


def test_an_unknown_driver_or_channel_in_a_fleet_file_is_located(tmp_path: Path) -> None:
    fleet_file = _fleet_file(tmp_path / "fleet.json", "Ariel JGK/4", driver="Cat 3516",
                             channels=["oil_temp_f", "oil_temperature"])
    with pytest.raises(InputError) as info:
        read_fleet(fleet_file)
    line = _line(fleet_file, '"driver": "Cat 3516"')
    assert str(info.value).startswith(
        f"{fleet_file}:{line}: compressors[0].driver: unknown driver 'Cat 3516' (drivers in "
        "the catalog: Caterpillar G3516B, Waukesha L7044GSI VHP;")
    # the unknown channel is counted too (the ratings the model would have given are missing)
    assert str(info.value).endswith("(5 problem(s) in all)")


@pytest.mark.parametrize(("text", "expected"), [
    ("compressors:\n  X-1:\n    stages: 6\n    rated_rpm: 900\n",
     ":3: compressors.X-1.stages: Input should be less than or equal to 4"),
    ("compressors:\n  X-1:\n    stages: 2\n    rated_rpm: 900\n    channels: [oil_tmp_f]\n",
     ":5: compressors.X-1.channels[0]: unknown channel 'oil_tmp_f'"),
    ("compressors:\n  X-1:\n    stages: 2\n    driver: Cat 3516\n",
     ":4: compressors.X-1.driver: unknown driver 'Cat 3516'"),
    ("compressors:\n  X-1:\n    stages: 2\n",
     ":2: compressors.X-1: no rated_rpm: give one, or a driver that has one"),
    ("drivers:\n  E-1:\n    rated_rpm: 900\n    power: 300\n",
     ":4: drivers.E-1.power: Extra inputs are not permitted"),
])
def test_catalog_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_catalog(path)
    assert str(info.value).startswith(f"{path}{expected}")
    # a bad catalog fails at start-up, naming the setting
    with pytest.raises(ConfigError, match=r"ALTAVIZ_MODEL_CATALOG_FILE=.*models.yaml:"):
        load_settings(environ={"ALTAVIZ_MODEL_CATALOG_FILE": str(path)})


def test_rules_match_operator_models_and_take_their_limits(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(OPERATOR_CATALOG)
    catalog = load_catalog(path)
    rules = load_rule_set(DEFAULT_RULES, catalog=catalog)
    oil = rules.rule("oil_temp_high")
    assert isinstance(oil, ThresholdRule)
    warning, critical, _ = oil.levels_for("Ariel JGJ/2")
    assert warning is not None and warning.absolute == 172
    assert critical is not None and critical.absolute == 185
    assert oil.levels_for("Ariel JGK/4") == load_rule_set(DEFAULT_RULES).rule(  # type: ignore[union-attr]
        "oil_temp_high").levels_for("Ariel JGK/4")
    scoped = ("rules:\n- id: r1\n  kind: threshold\n  metric: oil_temp_f\n  comparison: above\n"
              "  warning: 180\n  applies_to: {models: [Ariel JGJ/2]}\n  diagnosis: d\n"
              "  checks: [c]\n  basis: b\n")
    # (limits must name rules of the set they are loaded with: here, none)
    bare = tmp_path / "bare.yaml"
    bare.write_text(OPERATOR_CATALOG.split("    limits:")[0])
    assert load_rule_set("r.yaml", text=scoped, catalog=load_catalog(bare)).rule(
        "r1").applies_to.models == ("Ariel JGJ/2",)
    with pytest.raises(RuleFileError, match=r"r.yaml:7: rule r1: applies_to.models\[0\]: "
                                            r"unknown model 'Ariel JGJ/2'"):
        load_rule_set("r.yaml", text=scoped)
    # a limit that contradicts the rule, or names no rule, points at the catalog's line
    path.write_text(OPERATOR_CATALOG.replace("warning: 172", "warning: 190"))
    with pytest.raises(RuleFileError) as info:
        load_rule_set(DEFAULT_RULES, catalog=load_catalog(path))
    assert str(info.value.problems[0]).startswith(
        f"{path}:15: rule oil_temp_high: compressors.Ariel JGJ/2.limits.oil_temp_high.warning: "
        "must be below critical (got 190 >= 185)")
    path.write_text(OPERATOR_CATALOG.replace("oil_temp_high:", "oil_temp_hi:"))
    with pytest.raises(RuleFileError, match=r"models.yaml:15: rule oil_temp_hi: .*no such rule"):
        load_rule_set(DEFAULT_RULES, catalog=load_catalog(path))


def test_units_registered_before_the_catalog_get_its_channels(empty_db_url: str,
                                                               tmp_path: Path) -> None:
    """Migration 130 gives existing units the channels the built-in catalog gives their
    package: the frame's, their stages' and, with a driver, the driver's."""
    older = tmp_path / "migrations"
    older.mkdir()
    for path in db.migration_files():
        if path.version < 95:
            shutil.copy(path.path, older / path.path.name)
    db.migrate(empty_db_url, older)
    with psycopg.connect(empty_db_url) as c:
        c.execute("INSERT INTO organizations (org_id, name) VALUES ('acme', 'Acme')")
        c.execute("INSERT INTO sites (org_id, site_id, name, basin) "
                  "VALUES ('acme', 'S', 'S', 'Permian')")
        c.execute("INSERT INTO compressors (org_id, compressor_id, site_id, model, driver, "
                  "rated_hp, rated_rpm, stages) VALUES "
                  "('acme', 'A', 'S', 'Ajax DPC-360', NULL, 360, 420, 2), "
                  "('acme', 'J', 'S', 'Ariel JGK/4', 'Caterpillar G3516B', 1380, 1400, 3)")
    db.migrate(empty_db_url)
    with psycopg.connect(empty_db_url) as c:
        got: dict[str, list[str]] = dict(
            c.execute("SELECT compressor_id, channels FROM compressors").fetchall())
    catalog = builtin_catalog()
    assert got == {"A": list(catalog.unit_channels("Ajax DPC-360", None, 2)),
                   "J": list(catalog.unit_channels("Ariel JGK/4", "Caterpillar G3516B", 3))}
