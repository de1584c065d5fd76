"""``altaviz silence``: hold back an organization's alert notifications for a while.

A silence matches alerts by compressor, site, rule and severity (Alertmanager's model). While
it lasts, matching alerts still open, breach, escalate and remind on their timeline, but
nobody is notified; when it ends, alerts still active are notified once, saying how long they
were held.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from altaviz.app.context import App
from altaviz.app.holds import (
    add_silence,
    expire_silence,
    list_silences,
    matching_workflows,
    parse_duration,
    parse_time,
    signal_holds_changed,
    silence_of,
)
from altaviz.core.db import org_ids
from altaviz.core.errors import InputError, ServiceError
from altaviz.core.silences import parse_matchers
from rules.loader import load_rule_set
from rules.store import latest_rule_set

MATCHERS_HELP = """\
matchers (at least one; each NAME=VALUE[,VALUE...], exact values; all given must match):
  compressor=COMP-0012,COMP-0013   these compressors
  site=PB-01                       every compressor of these sites
  rule=flow_deficit                these rules (ids of the organization's rule set)
  severity=warning                 warning or critical alerts only

examples:
  altaviz silence add --org acme --by sup.amy --comment "valve job" --duration 4h \\
      compressor=COMP-0012
  altaviz silence add --org acme --by sup.amy --comment "known sensor fault" \\
      --start 2026-03-10T06:00-06:00 --end 2026-03-11T06:00-06:00 \\
      compressor=COMP-0012 rule=discharge_temp_high,stage2_ratio_shift
  altaviz silence list --org acme
  altaviz silence expire 7 --org acme --by sup.amy
"""


def register(sub: Any) -> None:
    """Add ``silence add|list|expire``."""
    parser = sub.add_parser(
        "silence", help="hold back alert notifications for a while (add, list, expire)",
        description=__doc__.replace("``", ""), epilog=MATCHERS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s_sub = parser.add_subparsers(dest="silence_command", metavar="ACTION", required=True)

    p = s_sub.add_parser("add", help="silence matching alerts from a start to an end",
                         epilog=MATCHERS_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("matchers", nargs="+", metavar="NAME=VALUE",
                   help="compressor=..., site=..., rule=..., severity=... (see below)")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--by", required=True, help="who silences (kept on the timeline)")
    p.add_argument("--comment", required=True, help="why (kept on the timeline)")
    p.add_argument("--start", default="now",
                   help="ISO 8601 time (no offset: UTC) or 'now' (default)")
    end = p.add_mutually_exclusive_group(required=True)
    end.add_argument("--end", help="ISO 8601 time the silence ends")
    end.add_argument("--duration", help="how long from the start: 90m, 2h, 3d, 1w")
    p.set_defaults(handler=_add)

    p = s_sub.add_parser("list", help="an organization's silences not yet over")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--all", action="store_true", help="include silences already over")
    p.set_defaults(handler=_list)

    p = s_sub.add_parser("expire", help="end a silence now (alerts it held are notified "
                                        "at once if still active)")
    p.add_argument("silence_id", type=int, metavar="ID", help="as printed by `silence list`")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--by", required=True, help="who ends it")
    p.set_defaults(handler=_expire)


def known_org(conn: Any, org: str) -> None:
    """An unknown organization is an error, not an empty result."""
    if org not in org_ids(conn):
        raise InputError(f"unknown organization {org!r}")


def _add(args: argparse.Namespace, app: App) -> int:
    now = datetime.now(UTC)
    start = parse_time(args.start, now=now)
    end = parse_time(args.end, now=now) if args.end else start + parse_duration(args.duration)
    with app.connect() as conn:
        known_org(conn, args.org)
        rules = (latest_rule_set(conn, args.org)
                 or latest_rule_set(conn, None, reader=args.org)
                 or load_rule_set(app.settings.rules_file, catalog=app.settings.catalog))
        try:
            matchers = parse_matchers(args.matchers, known_rules=[r.id for r in rules.rules])
        except ValueError as exc:
            raise InputError(str(exc)) from None
        sid = add_silence(conn, args.org, matchers, starts_at=start, ends_at=end,
                          created_by=args.by, comment=args.comment)
        wids = matching_workflows(conn, args.org, matchers)
    print(f"silence {sid}: {matchers.describe()} from {start.astimezone(UTC):%Y-%m-%d %H:%M}Z "
          f"to {end.astimezone(UTC):%Y-%m-%d %H:%M}Z ({args.org})")
    _tell(app, wids)
    return 0


def _list(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn:
        known_org(conn, args.org)
        silences = list_silences(conn, args.org, now=datetime.now(UTC), every=args.all)
    if not silences:
        print(f"no silences for {args.org}")
        return 0
    for s in silences:
        ended = f" expired by {s.expired_by}" if s.expired_by else ""
        print(f"{s.silence_id:>5}  {s.starts_at.astimezone(UTC):%Y-%m-%d %H:%M}Z -> "
              f"{s.ends_at.astimezone(UTC):%Y-%m-%d %H:%M}Z  {s.matchers.describe()}  "
              f"by {s.created_by}: {s.comment}{ended}")
    return 0


def _expire(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn:
        known_org(conn, args.org)
        end = expire_silence(conn, args.org, args.silence_id, by=args.by,
                             now=datetime.now(UTC))
        silence = silence_of(conn, args.org, args.silence_id)
        wids = matching_workflows(conn, args.org, silence.matchers) if silence else []
    print(f"silence {args.silence_id} ended at {end.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z")
    _tell(app, wids)
    return 0


def _tell(app: App, workflow_ids: list[str]) -> None:
    """Signal the open alerts a silence concerns, so it takes effect at once; when Temporal
    cannot be reached the silence still holds (it is in PostgreSQL) and the alerts re-check
    it within 15 minutes, which the line printed says."""
    if not workflow_ids:
        return

    async def go() -> tuple[int, list[str]]:
        return await signal_holds_changed(await app.temporal_client(), workflow_ids)

    try:
        told, failed = asyncio.run(go())
    except ServiceError as exc:
        print(f"{len(workflow_ids)} open alert(s) not told ({exc}): they apply the change "
              "within 15 minutes")
        return
    print(f"{told} open alert(s) told to apply it now" + (
        f"; {len(failed)} not reached, they apply it within 15 minutes: {', '.join(failed)}"
        if failed else ""))
