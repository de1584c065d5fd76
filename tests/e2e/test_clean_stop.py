"""SIGTERM and SIGINT on ``altaviz serve``, ``worker`` and ``up``: the embedded PostgreSQL and
Temporal dev server are released as the last process leaves, and no process of the data
directory survives (what systemd, Docker and ``kill`` send must not orphan them).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

READY = {"serve": "listening on", "worker": "Ctrl-C to stop", "up": "Ctrl-C to stop"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_of(data_dir: Path) -> list[str]:
    """Command lines of live processes that name ``data_dir`` (the embedded servers do)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(data_dir) in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "altaviz.app.cli", *command], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if READY[command[0]] in line:
            return proc
    proc.kill()
    raise AssertionError(f"altaviz {command[0]} did not become ready:\n" + "".join(seen))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["serve", "worker", "up"])
def test_stop_signal_leaves_no_embedded_service_behind(tmp_path: Path, command: str,
                                                       sig: signal.Signals) -> None:
    data_dir = (tmp_path / "data").resolve()
    env = {**os.environ,
           "ALTAVIZ_DATA_DIR": str(data_dir),
           "ALTAVIZ_TEMPORAL_PORT": str(_free_port()),
           "ALTAVIZ_TEMPORAL_UI_PORT": str(_free_port()),
           "ALTAVIZ_HTTP_PORT": str(_free_port()),
           "ALTAVIZ_TASK_QUEUE": f"clean-stop-{command}",
           "ALTAVIZ_LINK_SECRET": "test-secret-for-clean-stop-0123456789"}
    for key in ("ALTAVIZ_DATABASE_URL", "ALTAVIZ_DATABASE_OWNER_URL", "ALTAVIZ_TEMPORAL_ADDRESS"):
        env.pop(key, None)
    proc = _start([command], env)
    try:
        assert _processes_of(data_dir), "the embedded services should be running"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
        assert "Traceback" not in out, out
        deadline = time.monotonic() + 5
        while _processes_of(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_of(data_dir) == [], out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for line in _processes_of(data_dir):   # leave nothing for the next test either
            os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
