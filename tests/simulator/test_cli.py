"""``altaviz simulate``: a real run prints one summary line; bad arguments give one clear
error line and a non-zero exit."""

from __future__ import annotations

import json

import pytest

from altaviz.app import cli


def test_simulate_command_runs(tmp_path, capsys):
    out = tmp_path / "sim"
    code = cli.main(["simulate", "--compressors", "12", "--days", "1", "--seed", "3",
                     "--start", "2026-07-01", "--out", str(out), "--clean",
                     "--fault-share", "0.25"])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simulated 12 compressors x 1 days")
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["window_start"] == "2026-07-01T00:00:00Z"
    assert len(truth["faults"]) == 3 and set(truth["defects"].values()) == {0}
    assert truth["config"]["field"] is not None and "nuisance events" in lines[0]


def test_calm_turns_field_behaviour_off(tmp_path, capsys):
    out = tmp_path / "sim"
    code = cli.main(["simulate", "--compressors", "30", "--days", "2", "--seed", "3",
                     "--out", str(out), "--clean", "--calm", "--quiet"])
    assert code == 0
    truth = json.loads((out / "ground_truth.json").read_text())
    assert truth["config"]["field"] is None
    assert {e["kind"] for e in truth["nuisance_events"]} <= {"planned_stop", "cycling_stop",
                                                           "startup"}


@pytest.mark.parametrize(("args", "message"), [
    (["--compressors", "-5", "--days", "1"], "--compressors"),
    (["--compressors", "5", "--days", "-1"], "--days"),
    (["--compressors", "5", "--days", "1", "--start", "2026-02-30"], "--start"),
    (["--compressors", "5", "--days", "1", "--start", "soon"], "--start"),
    (["--compressors", "5", "--days", "1", "--fault-share", "1.5"], "--fault-share"),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    code = cli.main(["simulate", *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and err[0].startswith("altaviz: error: " + message), err
    assert not (tmp_path / "o").exists()


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = cli.main(["simulate", "--compressors", "2", "--days", "1",
                     "--out", str(blocker / "sub")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot create output folder" in err[0]
