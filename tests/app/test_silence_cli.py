"""``altaviz silence`` and ``altaviz maintenance`` against real PostgreSQL: help with matchers
and examples, one-line errors for bad input, another organization's units and silences refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from altaviz.app.cli import main


@pytest.fixture
def cli(db_url: str, fleet: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ALTAVIZ_DATABASE_URL", db_url)
    return db_url


def test_help_explains_matchers_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["silence", "--help"], ["silence", "add", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        out = capsys.readouterr().out
        assert "compressor=COMP-0012" in out and "severity=warning" in out
        assert "altaviz silence add --org acme" in out
    with pytest.raises(SystemExit):
        main(["maintenance", "--help"])
    out = capsys.readouterr().out
    assert "--nth-of-month 2 --at 06:00-14:00" in out and "windows:" in out


def _err(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    # log records (e.g. the warning about a superuser database login) may precede it
    errors = [line for line in err.splitlines() if line.startswith("altaviz: error")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0] + "\n"


def test_add_list_expire_and_bad_input(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["silence", "add", "--org", "acme", "--by", "sup.amy", "--comment", "valve job"]
    assert main([*base, "--duration", "2h", "compressor=COMP-0001"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("silence ") and "compressor=COMP-0001" in out
    sid = out.split()[1].rstrip(":")

    err = _err(capsys, *base, "--start", "2026-03-10T06:00", "--end", "2026-03-10T05:00",
               "compressor=COMP-0001")
    assert "is not after the start" in err
    err = _err(capsys, *base, "--duration", "2h", "rule=no_such_rule")
    assert "unknown rule 'no_such_rule'" in err
    # bravo's compressor from acme: refused (row-level security hides it)
    err = _err(capsys, *base, "--duration", "2h", "compressor=COMP-0003")
    assert "COMP-0003 is not part of organization acme" in err
    err = _err(capsys, *base, "--duration", "2h", "colour=red")
    assert "bad matcher 'colour=red'" in err
    err = _err(capsys, *base, "--duration", "soon", "compressor=COMP-0001")
    assert "bad duration 'soon'" in err

    assert main(["silence", "list", "--org", "acme"]) == 0
    assert "valve job" in capsys.readouterr().out
    assert main(["silence", "list", "--org", "bravo"]) == 0
    assert "no silences for bravo" in capsys.readouterr().out
    # bravo cannot expire acme's silence
    err = _err(capsys, "silence", "expire", sid, "--org", "bravo", "--by", "x")
    assert f"no silence {sid} in organization bravo" in err
    assert main(["silence", "expire", sid, "--org", "acme", "--by", "sup.amy"]) == 0
    capsys.readouterr()
    err = _err(capsys, "silence", "expire", sid, "--org", "acme", "--by", "sup.amy")
    assert "already ended" in err


def test_maintenance_add_load_list_remove(cli: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "add", "--org", "acme", "--by", "sup.amy", "--site", "PB-01",
                 "--reason", "valve checks", "--every", "tuesday", "--nth-of-month", "2",
                 "--at", "06:00-14:00", "--timezone", "America/Chicago",
                 "--from", "2026-01-01", "--until", "2026-12-31"]) == 0
    assert "site PB-01 tuesday 06:00-14:00 America/Chicago" in capsys.readouterr().out
    good = tmp_path / "w.yaml"
    good.write_text("windows:\n  - compressor: COMP-0001\n    reason: overhaul\n"
                    "    starts_at: 2026-03-10T06:00:00-06:00\n"
                    "    ends_at: 2026-03-12T18:00:00-06:00\n")
    assert main(["maintenance", "load", str(good), "--org", "acme", "--by", "sup.amy"]) == 0
    capsys.readouterr()
    assert main(["maintenance", "list", "--org", "acme", "--all"]) == 0
    listed = capsys.readouterr().out
    assert "overhaul" in listed and "valve checks" in listed

    bad = tmp_path / "bad.yaml"
    bad.write_text("windows:\n  - compressor: COMP-0001\n    reason: x\n"
                   "    every: {weekday: tuesdy, start: '06:00', end: '14:00',"
                   " timezone: America/Chicago, every_weeks: 2}\n"
                   "    from: 2026-01-01\n    until: 2026-02-01\n")
    err = _err(capsys, "maintenance", "load", str(bad), "--org", "acme", "--by", "a")
    assert f"{bad}: windows.0.every.weekday" in err
    bad.write_text("windows:\n  - compressor: COMP-0001\n    reason: x\n    startz: 1\n")
    err = _err(capsys, "maintenance", "load", str(bad), "--org", "acme", "--by", "a")
    assert "windows.0.startz: Extra inputs are not permitted" in err
    err = _err(capsys, "maintenance", "add", "--org", "acme", "--by", "a", "--reason", "x",
               "--compressor", "COMP-0004", "--start", "now", "--duration", "2h")
    assert "COMP-0004 is not part of organization acme" in err
    err = _err(capsys, "maintenance", "remove", "1", "--org", "bravo")
    assert "no maintenance window 1 in organization bravo" in err
