"""``altaviz dq``: data-quality checks recorded by the ETL, per organization and compressor."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import datetime
from typing import Any

from altaviz.app.commands.tables import print_table
from altaviz.app.context import App
from altaviz.core.db import admin, org_ids, queries, tenant
from altaviz.core.errors import InputError
from altaviz.core.messages import duration, metric_label, number
from etl.quality import prune_quality_checks

#: Checks in the order the report lists them.
CHECK_ORDER = ("freshness", "completeness", "channels", "sensor_offline", "consistency",
               "accuracy")


def register(sub: Any) -> None:
    """Add ``dq report`` and ``dq prune``."""
    parser = sub.add_parser("dq", help="data-quality checks (freshness, completeness, ...)",
                            description="Latest data-quality checks recorded by `altaviz etl`.")
    d_sub = parser.add_subparsers(dest="dq_command", metavar="ACTION", required=True)
    p = d_sub.add_parser(
        "report", help="each check's passes and failures, and every failing unit with why",
        description="The latest check of each kind per compressor: a summary by check, then "
                    "each failing unit with the reason. Freshness is judged against the "
                    "organization's upload cadence plus ALTAVIZ_FRESHNESS_GRACE_MINUTES.",
        epilog="examples:\n  altaviz dq report\n  altaviz dq report --org acme --failed\n"
               "  altaviz dq report --json | jq '.[] | select(.passed | not)'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--org", metavar="ORG_ID",
                   help="only this organization (read through its row-level security)")
    p.add_argument("--failed", action="store_true",
                   help="summary and failing units only (with --json: failed checks only)")
    p.add_argument("--all", action="store_true", help="list every unit's checks, not only "
                   "the failing ones")
    p.add_argument("--json", action="store_true",
                   help="every check as a JSON list, for machines")
    p.set_defaults(handler=_report)
    p = d_sub.add_parser(
        "prune", help="delete old checks (each compressor's latest of each kind is kept)",
        description="Delete data-quality checks older than --keep-days. Every hourly ETL run "
                    "records its checks per compressor; this is their retention. The latest "
                    "check of each kind per compressor is kept whatever its age.")
    p.add_argument("--keep-days", type=int, default=30, metavar="DAYS",
                   help="keep this many days of checks (default 30)")
    p.set_defaults(handler=_prune)


def accuracy_reason(measured: float, threshold: float, details: dict[str, Any]) -> str:
    """The accuracy check in words: the worst channel and what is wrong with it (stuck on a
    value, steady-state outliers), so a technician knows which transmitter to look at."""
    judged = details.get("judged", details.get("readings", "?"))
    if "channels" not in details:    # checks recorded before channels were judged
        return (f"{details.get('outliers', 0)} of {details.get('readings', '?')} readings "
                f"are outliers ({measured:.1%}, limit {threshold:.0%})")
    channels: dict[str, Any] = details.get("channels") or {}
    worst = details.get("worst_channel")
    if not worst or worst not in channels:
        return f"no channel wrong in {judged} steady running readings (limit {threshold:.0%})"
    c = channels[worst]
    what = []
    if c.get("stuck"):
        value = number(float(c.get("stuck_value", 0.0)))
        what.append(f"stuck at {value} for {c['stuck']} readings")
    if c.get("outliers"):
        what.append(f"{c['outliers']} outlier{'' if c['outliers'] == 1 else 's'}")
    return (f"{metric_label(worst)}: {' and '.join(what)} ({measured:.1%} of {judged} steady "
            f"running readings, limit {threshold:.0%})")


def reason(kind: str, measured: float, threshold: float, details: dict[str, Any]) -> str:
    """What a check found, in words, against its limit."""
    if kind == "freshness":
        return (f"last reading {duration(measured / 60)} ago (limit {duration(threshold / 60)}"
                f": upload cadence + {details.get('grace_minutes', '?')} min grace)")
    if kind == "completeness":
        return (f"{measured:.1%} of readings missing (limit {threshold:.0%}); "
                f"{details.get('hours_flagged', 0)} of {details.get('hours', '?')} hours "
                "short")
    if kind == "consistency":
        return (f"{details.get('quarantined', 0)} of {details.get('rows', '?')} rows "
                f"quarantined ({measured:.1%}, limit {threshold:.0%})")
    if kind == "accuracy":
        return accuracy_reason(measured, threshold, details)
    if kind == "channels":
        missing = details.get("missing") or {}
        worst = max(missing.items(), key=lambda kv: kv[1], default=None)
        what = f"; worst {metric_label(worst[0])} ({worst[1]} readings)" if worst else ""
        return f"{measured:.1%} of readings miss a channel (limit {threshold:.0%}){what}"
    if kind == "sensor_offline":
        offline = details.get("offline") or []
        if not offline:
            return "every sensor reporting"
        return "no value while running: " + ", ".join(metric_label(c) for c in offline)
    return f"measured {number(measured)}, limit {number(threshold)}"


def _report(args: argparse.Namespace, app: App) -> int:
    sql = queries("etl")["quality_summary"]
    # every organization at once is an operator's read, as the owner
    with app.connect() if args.org else app.connect_owner() as conn:
        if args.org and args.org not in org_ids(conn):
            raise InputError(f"unknown organization {args.org!r}: `altaviz fleet` lists them")
        scope = tenant(conn, args.org) if args.org else admin(conn)
        with scope:
            rows = conn.execute(sql).fetchall()
    checks = [{"org_id": org, "compressor_id": comp, "check": kind, "measured": measured,
               "threshold": threshold, "passed": bool(passed), "details": details,
               "checked_at": checked.isoformat(),
               "reason": reason(kind, measured, threshold, details or {})}
              for org, comp, kind, measured, threshold, passed, details, checked in rows]
    if args.json:
        shown = [c for c in checks if not c["passed"]] if args.failed else checks
        print(json.dumps(shown, indent=2, default=str))
        return 0
    if not checks:
        print("no data-quality checks recorded yet: run `altaviz etl`")
        return 0
    passed = Counter(c["check"] for c in checks if c["passed"])
    failed = Counter(c["check"] for c in checks if not c["passed"])
    kinds = [k for k in CHECK_ORDER if k in passed or k in failed] + sorted(
        k for k in set(passed) | set(failed) if k not in CHECK_ORDER)
    units = {(c["org_id"], c["compressor_id"]) for c in checks}
    bad_units = {(c["org_id"], c["compressor_id"]) for c in checks if not c["passed"]}
    print(f"data quality: {len(units) - len(bad_units)} of {len(units)} units pass every "
          "check\n")
    print_table(("check", "units", "ok", "failed"),
                [(k, str(passed[k] + failed[k]), str(passed[k]),
                  f"[red]{failed[k]}[/]" if failed[k] else "0") for k in kinds],
                right=("units", "ok", "failed"))
    every = args.all and not args.failed
    listed = [(c, r[7]) for c, r in zip(checks, rows, strict=True) if every or not c["passed"]]
    if listed:
        print("\nevery check:\n" if every else "\nfailing checks:\n")
        print_table(("org", "compressor", "check", "ok", "reason", "checked at"),
                    [(c["org_id"], c["compressor_id"], c["check"],
                      "yes" if c["passed"] else "[red]NO[/]", c["reason"], _when(at))
                     for c, at in listed])
    print(f"\n{len(checks)} checks of {len(units)} units, {sum(failed.values())} failed")
    return 0


def _when(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d %H:%M")


def _prune(args: argparse.Namespace, app: App) -> int:
    with app.connect_owner() as conn:
        deleted = prune_quality_checks(conn, args.keep_days)
    print(f"deleted {deleted} data-quality checks older than {args.keep_days} days")
    return 0
