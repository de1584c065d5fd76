"""A stage in a child process: its result, progress, logs and errors reach the parent, a
child that dies is reported as such, and a child never outlives a killed parent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from etl.models import BronzeResult
from etl.stage_process import StageProcessDied, run_in_child


class OddError(ValueError):
    """An exception type of this module: the parent must raise this very type."""


def reports(files: int, *, progress: Callable[[str, float], None]) -> BronzeResult:
    progress("bronze", 0.25)
    logging.getLogger("etl.bronze").warning("landing file x.parquet is unreadable")
    logging.getLogger("etl.bronze").debug("below the parent's level: not forwarded")
    progress("bronze", 0.75)
    return BronzeResult(files=files, rows=os.getpid())


def fails(message: str, *, progress: Callable[[str, float], None]) -> BronzeResult:
    raise OddError(message)


def killed(_: int, *, progress: Callable[[str, float], None]) -> BronzeResult:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def sleeps(pid_file: str, *, progress: Callable[[str, float], None]) -> BronzeResult:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)
    return BronzeResult()


def test_result_progress_and_logs_reach_the_parent(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, float]] = []
    with caplog.at_level(logging.INFO):
        result = run_in_child("bronze", reports, (3,), lambda s, f: seen.append((s, f)))
    assert isinstance(result, BronzeResult) and result.files == 3
    assert result.rows != os.getpid()  # it really ran elsewhere
    assert seen == [("bronze", 0.25), ("bronze", 0.75)]
    forwarded = [(r.name, r.levelname, r.getMessage()) for r in caplog.records
                 if r.name == "etl.bronze"]
    assert forwarded == [("etl.bronze", "WARNING", "landing file x.parquet is unreadable")]


def test_the_childs_exception_is_raised_with_its_traceback() -> None:
    with pytest.raises(OddError, match="bad rule") as info:
        run_in_child("silver", fails, ("bad rule",))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "child process" in notes and "in fails" in notes


def test_a_child_that_dies_is_reported() -> None:
    with pytest.raises(StageProcessDied, match=r"'gold'.*signal 9 SIGKILL.*out-of-memory"):
        run_in_child("gold", killed, (0,))


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "from etl.stage_process import run_in_child\n"
        "from tests.etl.test_stage_process import sleeps\n"
        f"run_in_child('gold', sleeps, ({str(pid_file)!r},))\n")],
        cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None, "the parent ended before its child started"
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its killed parent"
            time.sleep(0.05)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, already dead, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_script_without_a_main_guard_runs_once(tmp_path: Path) -> None:
    """The child never re-runs the caller's script (multiprocessing's spawn would)."""
    script = tmp_path / "load.py"
    marks = tmp_path / "marks"
    script.write_text(
        "from pathlib import Path\n"
        "from etl.stage_process import run_in_child\n"
        "from tests.etl.test_stage_process import reports\n"
        f"with open({str(marks)!r}, 'a') as f:\n"
        "    f.write('top level ran\\n')\n"
        "print(run_in_child('bronze', reports, (5,)).files)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"
    assert marks.read_text() == "top level ran\n"
