"""``altaviz worker``: run the Temporal workers (alerts, ETL or both) until interrupted."""

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
        "worker", help="run the workers: alerts and pipeline workflows, ETL stages, or both",
        description="Polls the task queues (ALTAVIZ_TASK_QUEUE for the alert and pipeline "
                    "workflows, ALTAVIZ_ETL_TASK_QUEUE for the ETL stages) until interrupted. "
                    "Start several on one queue to share the work, and scale the two kinds "
                    "apart with --only. Creates the hourly pipeline schedule and registers the "
                    "search attributes if needed (not with --only etl).")
    p.add_argument("--no-schedule", action="store_true",
                   help="do not create the hourly pipeline schedule")
    p.add_argument("--demo", action="store_true",
                   help="sign acknowledgement links with the demo's generated secret")
    p.add_argument("--only", choices=["alerts", "etl"],
                   help="run only this worker (default: ALTAVIZ_WORKERS, which defaults to "
                        "both)")
    p.set_defaults(handler=_worker)


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime ``altaviz worker`` runs: ``altaviz up``'s, without the web server."""
    return RuntimeOptions(schedule=not args.no_schedule, web=False, demo=args.demo,
                          workers=getattr(args, "only", None))


def _worker(args: argparse.Namespace, app: App) -> int:
    async def main() -> None:
        runtime = Runtime(app, runtime_options(args))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, runtime.request_stop)
        await runtime.start()
        queues = [w.task_queue for w in (runtime.worker, runtime.etl_worker) if w is not None]
        print(f"worker on task queue{'s' if len(queues) > 1 else ''} {', '.join(queues)} "
              f"(Temporal {app.temporal_address()}); Ctrl-C to stop", flush=True)
        try:
            await runtime.wait()
        finally:
            await runtime.stop()

    asyncio.run(main())
    return 0
