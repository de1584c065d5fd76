"""One ETL stage in a child process, so that the memory it used goes back to the system.

Why: a bulk stage (a week's first load, a backfill) leaves hundreds of MB resident in the
process after its DuckDB connection is closed and both allocators are trimmed (DuckDB's and
delta-rs' caches, allocator fragmentation). The next stage's peak would then sit on top of
it, above what any stage alone needs (bench/bench_etl.py, full phase, reports the peak per
stage). A child process returns everything to the system when it exits, whatever the
libraries keep.

The child is a new interpreter (``python -c``, never ``fork``: the parent may be a Temporal
worker or hold DuckDB and tokio threads, which a forked child would inherit in an undefined
state). Not ``multiprocessing``'s spawn either: that re-imports the parent's ``__main__``, so a
caller's script without an ``if __name__ == "__main__"`` guard would run again in the child.
The child gets the parent's ``sys.path``, then the target and its arguments pickled on stdin,
and talks back over one pipe:

* ``("progress", stage, fraction)``: handed to the parent's progress callback;
* ``("log", logger, level, message)``: re-emitted by the parent's logger of the same name, so
  the child's warnings (an unreadable landing file, say) reach the same log as the parent's;
* ``("result", model)`` or ``("error", exception, traceback)`` as its last message.

The parent keeps the lake's writer lock for the child's lifetime. The child asks the kernel to
kill it when the parent dies (``PR_SET_PDEATHSIG``), so a killed run never leaves a child
writing to the lake after the lock is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from pydantic import BaseModel

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
_PR_SET_PDEATHSIG = 1


class StageProcessDied(RuntimeError):
    """The child process ended without a result (killed, out of memory, crashed)."""


def run_in_child(stage: str, target: Callable[..., BaseModel], args: tuple[Any, ...],
                 progress: Progress | None = None) -> BaseModel:
    """Call ``target(*args, progress=...)`` in a new process and return its result.

    Args:
        stage: the stage's name (messages).
        target: a module-level function (the child imports it by name) returning a model.
        args: its positional arguments; they must pickle.
        progress: receives the child's ``(stage, fraction)`` reports.

    Raises:
        The exception the child raised (same type, with the child's traceback as a note), or
        :class:`StageProcessDied` when the child ended without reporting (its exit code or
        signal is named: SIGKILL is usually the kernel's out-of-memory killer).
    """
    read_fd, write_fd = os.pipe()
    paths = [p for p in sys.path if p]
    code = (f"import sys; sys.path[:0] = {paths!r}; "
            "from etl.stage_process import _child_main; _child_main()")
    try:
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                   pass_fds=(write_fd,))
    finally:
        os.close(write_fd)  # the child holds the only writer now: EOF means it is gone
    receiver = Connection(read_fd)
    outcome: tuple[Any, ...] | None = None
    try:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a child that died at once: see below
            process.stdin.write(pickle.dumps((os.getpid(), write_fd,
                                              logging.getLogger().getEffectiveLevel(),
                                              target, args)))
            process.stdin.close()
        while True:
            try:
                message = receiver.recv()
            except EOFError:
                break
            kind = message[0]
            if kind == "progress" and progress is not None:
                progress(message[1], message[2])
            elif kind == "log":
                logging.getLogger(message[1]).log(message[2], "%s", message[3])
            elif kind in ("result", "error"):
                outcome = message
        process.wait()
    finally:
        receiver.close()
        if process.poll() is None:  # the parent is being interrupted: do not leave it running
            process.kill()
            process.wait()
    if outcome is None:
        raise StageProcessDied(
            f"the ETL stage {stage!r} ran in a child process (pid {process.pid}) that ended "
            f"without a result: {_exit_reason(process.returncode)}. The stage's work is undone "
            f"up to its last commit; re-running the ETL repeats it.")
    if outcome[0] == "error":
        exc: BaseException = outcome[1]
        exc.add_note(f"raised in the ETL stage {stage!r}'s child process "
                     f"(pid {process.pid}):\n{outcome[2]}")
        raise exc
    result: BaseModel = outcome[1]
    return result


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit code unknown"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = f" {signal.Signals(-code).name}"
    except ValueError:
        name = ""
    hint = " (usually the kernel's out-of-memory killer)" if -code == signal.SIGKILL else ""
    return f"killed by signal {-code}{name}{hint}"


class _PipeHandler(logging.Handler):
    def __init__(self, sender: Connection) -> None:
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.sender.send(("log", record.name, record.levelno, message))
        except Exception:  # a log line must never fail the stage
            self.handleError(record)


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _child_main() -> None:
    """The child's entry point: read the call from stdin, report over the inherited pipe."""
    parent_pid, fd, log_level, target, args = pickle.load(sys.stdin.buffer)
    _die_with_parent(parent_pid)
    sender = Connection(fd)
    root = logging.getLogger()
    root.handlers[:] = [_PipeHandler(sender)]
    root.setLevel(log_level)

    def progress(stage: str, fraction: float) -> None:
        sender.send(("progress", stage, fraction))

    try:
        result = target(*args, progress=progress)
    except BaseException as exc:  # reported to the parent, which raises it
        text = traceback.format_exc()
        try:
            sender.send(("error", exc, text))
        except Exception:  # the exception does not pickle: send its text
            sender.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), text))
        return
    sender.send(("result", result))
    sender.close()
