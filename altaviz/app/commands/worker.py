"""``altaviz worker``: run a Temporal worker for the alert and pipeline workflows."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from altaviz.app.context import App
from altaviz.app.runtime import Runtime, RuntimeOptions


def register(sub: Any) -> None:
    """Add ``worker``."""
    p = sub.add_parser(
        "worker", help="run a worker for the alert and hourly pipeline workflows",
        description="Polls the task queue (ALTAVIZ_TASK_QUEUE) until interrupted. Start several "
                    "on one queue to share the work. Creates the hourly pipeline schedule "
                    "and registers the search attributes if needed.")
    p.add_argument("--no-schedule", action="store_true",
                   help="do not create the hourly pipeline schedule")
    p.add_argument("--demo", action="store_true",
                   help="sign acknowledgement links with the demo's generated secret")
    p.set_defaults(handler=_worker)


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime ``altaviz worker`` runs: ``altaviz up``'s, without the web server."""
    return RuntimeOptions(schedule=not args.no_schedule, web=False, demo=args.demo)


def _worker(args: argparse.Namespace, app: App) -> int:
    async def main() -> None:
        runtime = Runtime(app, runtime_options(args))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, runtime.request_stop)
        await runtime.start()
        print(f"worker on task queue {app.settings.task_queue} "
              f"(Temporal {app.temporal_address()}); Ctrl-C to stop", flush=True)
        try:
            await runtime.wait()
        finally:
            await runtime.stop()

    asyncio.run(main())
    return 0
