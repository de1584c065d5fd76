"""``altaviz demo``: the newcomer's first run, on the embedded defaults.

See :mod:`altaviz.demo` for what it does; this module is only the command line around it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from altaviz.app.context import App
from altaviz.app.demo import DemoOptions, format_report, run_demo
from altaviz.core.errors import InputError


def register(sub: Any) -> None:
    """Add ``demo``."""

    d = DemoOptions()
    p = sub.add_parser(
        "demo", help="simulate a fleet with faults and run it through the whole system",
        description="Simulates a small fleet with injected faults, runs the ETL and the rules "
                    "through the real pipeline workflow, opens alert workflows that notify a "
                    "local inbox (click the links to acknowledge), lets unacknowledged warnings "
                    "escalate, and prints what was caught and how early. Uses the embedded "
                    "PostgreSQL and Temporal unless ALTAVIZ_DATABASE_URL / "
                    "ALTAVIZ_TEMPORAL_ADDRESS are set.")
    p.add_argument("--compressors", type=int, default=d.compressors,
                   help=f"fleet size (default {d.compressors})")
    p.add_argument("--days", type=int, default=d.days,
                   help=f"days of history to simulate (default {d.days})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"simulation seed (default {d.seed})")
    p.add_argument("--fault-share", type=float, default=d.fault_share,
                   help=f"share of units with an injected fault (default {d.fault_share})")
    p.add_argument("--escalation-minutes", type=float, default=d.escalation_minutes,
                   help="escalation delay of every rule during the demo, so a promotion to "
                        f"critical shows within minutes (default {d.escalation_minutes:g}; "
                        "production rules use hours)")
    p.add_argument("--calm", action=argparse.BooleanOptionalAction, default=d.calm,
                   help="simulate the calm profile (speed carries the load, no nuisance "
                        "events); --no-calm simulates ordinary field behaviour, null channels "
                        f"(dropouts, missing instruments) included (default {d.calm})")
    p.add_argument("--no-wait", action="store_true",
                   help="exit after the summary instead of serving the inbox until Ctrl-C")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, app: App) -> int:
    if args.compressors < 1 or args.days < 2:
        raise InputError("--compressors must be at least 1 and --days at least 2")
    if not 0 <= args.fault_share <= 1:
        raise InputError(f"--fault-share must be between 0 and 1 (got {args.fault_share})")
    if args.escalation_minutes <= 0:
        raise InputError("--escalation-minutes must be positive")
    options = DemoOptions(compressors=args.compressors, days=args.days, seed=args.seed,
                          fault_share=args.fault_share,
                          escalation_minutes=args.escalation_minutes, calm=args.calm)
    return asyncio.run(_run(app, options, wait=not args.no_wait))


async def _run(app: App, options: Any, *, wait: bool) -> int:
    runtime, report = await run_demo(app, options, say=lambda s: print(s, flush=True))
    try:
        print(format_report(report), flush=True)
        if wait:
            print("\nservices running: open the inbox and click a link; Ctrl-C to stop",
                  flush=True)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runtime.request_stop)
            await runtime.wait()
            print("stopping ...", flush=True)
    finally:
        await runtime.stop()
    return 0
