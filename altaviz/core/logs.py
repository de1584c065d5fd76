"""Process logging: the level and format of ``ALTAVIZ_LOG_LEVEL`` and ``ALTAVIZ_LOG_FORMAT``.

Every command configures logging here once, so the worker, the web server and the one-shot
commands honour the same settings. ``json`` writes one JSON object per line (for log shippers);
``text`` one readable line. A failure the code expects (an :class:`ApplicationError` such as a
channel that is down, a refused delivery) is logged as one line without its traceback: the
reason is in the message, and a traceback there would bury the lines an operator needs. Any
other exception is a bug and keeps its full traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from temporalio.exceptions import ApplicationError

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: LogRecord attributes that are not extra fields of a call.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, any extra
    fields the call passed, and the exception (type, message, traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else str(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class ExpectedFailures(logging.Filter):
    """Drops the traceback of an expected failure (:class:`ApplicationError` anywhere in the
    exception's cause chain), keeping its reason in the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; strips ``exc_info`` when the failure is an expected one."""
        if record.exc_info and _expected(record.exc_info[1]):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _expected(exc: BaseException | None) -> bool:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ApplicationError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (a test's capture, a
    re-opened stream), never to a closed one it kept from start-up."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "INFO", fmt: LogFormat = "text", *, stream: Any = None) -> None:
    """(Re)configure the root logger: one handler on stderr (or ``stream``), ``level``, ``fmt``.

    Safe to call again (the settings are known only after the command line is parsed): the
    previous handler is replaced, never doubled.
    """
    handler: logging.StreamHandler[Any] = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ExpectedFailures())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_altaviz", False):
            root.removeHandler(old)
    handler._altaviz = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
