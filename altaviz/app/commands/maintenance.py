"""``altaviz maintenance``: planned windows in which a unit's rules open no alerts.

A window covers one compressor or every compressor of a site, once (a start and an end) or
recurring in the site's local time (e.g. every second Tuesday 06:00-14:00). During a window the
unit's breaches open no alert (they are counted as held back), the data-quality checks count
its hours as planned downtime, and alerts already open stay open but notify nobody until the
window ends.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from altaviz.app.commands.silence import known_org
from altaviz.app.context import App
from altaviz.app.holds import (
    WindowSpec,
    add_window,
    list_windows,
    parse_duration,
    parse_time,
    read_windows_file,
    remove_window,
)
from altaviz.core.errors import InputError
from altaviz.core.silences import WEEKDAYS, Recurrence

EXAMPLES = """\
examples:
  # one-off: COMP-0012's overhaul, times with their offset (no offset: UTC)
  altaviz maintenance add --org acme --by sup.amy --compressor COMP-0012 \\
      --start 2026-03-10T06:00-06:00 --end 2026-03-12T18:00-06:00 --reason "top-end overhaul"
  # recurring: every second Tuesday of the month, 06:00-14:00 site time, for a year
  altaviz maintenance add --org acme --by sup.amy --site PB-01 --reason "valve checks" \\
      --every tuesday --nth-of-month 2 --at 06:00-14:00 --timezone America/Chicago \\
      --from 2026-01-01 --until 2026-12-31
  altaviz maintenance load windows.yaml --org acme --by sup.amy
  altaviz maintenance list --org acme
  altaviz maintenance remove 3 --org acme

windows file (YAML):
  windows:
    - compressor: COMP-0012
      reason: top-end overhaul
      starts_at: 2026-03-10T06:00:00-06:00
      ends_at: 2026-03-12T18:00:00-06:00
    - site: PB-01
      reason: valve checks
      from: 2026-01-01
      until: 2026-12-31
      every: {weekday: tuesday, nth_of_month: 2, start: "06:00", end: "14:00",
              timezone: America/Chicago}     # or every_weeks: 2 (every other week)
"""


def register(sub: Any) -> None:
    """Add ``maintenance add|load|list|remove``."""
    parser = sub.add_parser(
        "maintenance", help="planned maintenance windows (add, load, list, remove)",
        description=__doc__.replace("``", ""), epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    m_sub = parser.add_subparsers(dest="maintenance_command", metavar="ACTION", required=True)

    p = m_sub.add_parser("add", help="plan a window (one-off or recurring)", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--by", required=True, help="who plans it")
    p.add_argument("--reason", required=True, help="what work (shown on the timeline)")
    unit = p.add_mutually_exclusive_group(required=True)
    unit.add_argument("--compressor", help="one compressor")
    unit.add_argument("--site", help="every compressor of a site")
    p.add_argument("--start", help="one-off: ISO 8601 start, or 'now'")
    p.add_argument("--end", help="one-off: ISO 8601 end")
    p.add_argument("--duration", help="one-off: length from the start (8h, 2d)")
    p.add_argument("--every", choices=WEEKDAYS, help="recurring: the weekday")
    p.add_argument("--nth-of-month", type=int, help="recurring: 1-5, or -1 for the last one")
    p.add_argument("--every-weeks", type=int, help="recurring: every N weeks from --from")
    p.add_argument("--at", help="recurring: local times HH:MM-HH:MM (end before start: "
                                "past midnight)")
    p.add_argument("--timezone", help="recurring: the site's IANA zone, e.g. America/Chicago")
    p.add_argument("--from", dest="from_", help="recurring: first date (YYYY-MM-DD)")
    p.add_argument("--until", help="recurring: last date (YYYY-MM-DD)")
    p.set_defaults(handler=_add)

    p = m_sub.add_parser("load", help="store every window of a YAML file (see below)",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="windows file")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--by", required=True, help="who plans them")
    p.set_defaults(handler=_load)

    p = m_sub.add_parser("list", help="an organization's windows not yet over")
    p.add_argument("--org", required=True, help="organization id")
    p.add_argument("--all", action="store_true", help="include windows already over")
    p.set_defaults(handler=_list)

    p = m_sub.add_parser("remove", help="delete a window")
    p.add_argument("window_id", type=int, metavar="ID", help="as printed by `maintenance list`")
    p.add_argument("--org", required=True, help="organization id")
    p.set_defaults(handler=_remove)


def _add(args: argparse.Namespace, app: App) -> int:
    now = datetime.now(UTC)
    data: dict[str, Any] = {"compressor": args.compressor, "site": args.site,
                            "reason": args.reason}
    if args.every:
        if args.start or args.end or args.duration:
            raise InputError("a recurring window (--every) takes --from/--until dates, not "
                             "--start/--end/--duration")
        start_t, sep, end_t = (args.at or "").partition("-")
        if not sep:
            raise InputError("--every needs --at HH:MM-HH:MM (local site time)")
        data["every"] = {k: v for k, v in {
            "weekday": args.every, "start": start_t, "end": end_t,
            "timezone": args.timezone, "nth_of_month": args.nth_of_month,
            "every_weeks": args.every_weeks}.items() if v is not None}
        data["from"] = _date(args.from_, "--from")
        data["until"] = _date(args.until, "--until")
    else:
        if not args.start:
            raise InputError("give --start with --end or --duration (one-off), or --every "
                             "(recurring)")
        start = parse_time(args.start, now=now)
        data["starts_at"] = start
        if args.end:
            data["ends_at"] = parse_time(args.end, now=now)
        elif args.duration:
            data["ends_at"] = start + parse_duration(args.duration)
        else:
            raise InputError("a one-off window needs --end or --duration")
    try:
        window = WindowSpec.model_validate(data).window(args.org, args.by)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{where}: {err['msg']}") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    with app.connect() as conn:
        known_org(conn, args.org)
        wid = add_window(conn, window)
    print(f"maintenance window {wid}: {_describe(window.recurrence, window)} ({args.org})")
    return 0


def _date(text: str | None, flag: str) -> date:
    if not text:
        raise InputError(f"a recurring window needs {flag} YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"bad date for {flag}: {text!r} (expected YYYY-MM-DD)") from None


def _describe(rec: Recurrence | None, w: Any) -> str:
    unit = f"compressor {w.compressor_id}" if w.compressor_id else f"site {w.site_id}"
    if rec is None:
        return (f"{unit} {w.starts_at.astimezone(UTC):%Y-%m-%d %H:%M}Z -> "
                f"{w.ends_at.astimezone(UTC):%Y-%m-%d %H:%M}Z: {w.reason}")
    when = (f"every {rec.every_weeks} week(s)" if rec.every_weeks
            else f"the {'last' if rec.nth_of_month == -1 else f'#{rec.nth_of_month}'} of the "
                 "month")
    return (f"{unit} {rec.weekday} {rec.start}-{rec.end} {rec.timezone}, {when}, "
            f"{w.starts_at.astimezone(UTC):%Y-%m-%d} to {w.ends_at.astimezone(UTC):%Y-%m-%d}: "
            f"{w.reason}")


def _load(args: argparse.Namespace, app: App) -> int:
    windows = read_windows_file(args.file, args.org, args.by)
    with app.connect() as conn:
        known_org(conn, args.org)
        ids = [add_window(conn, w) for w in windows]
    print(f"loaded {len(ids)} maintenance window(s) from {args.file} ({args.org})")
    return 0


def _list(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn:
        known_org(conn, args.org)
        windows = list_windows(conn, args.org, now=datetime.now(UTC), every=args.all)
    if not windows:
        print(f"no maintenance windows for {args.org}")
    for w in windows:
        print(f"{w.window_id:>5}  {_describe(w.recurrence, w)}  (by {w.created_by})")
    return 0


def _remove(args: argparse.Namespace, app: App) -> int:
    with app.connect() as conn:
        known_org(conn, args.org)
        remove_window(conn, args.org, args.window_id)
    print(f"maintenance window {args.window_id} removed")
    return 0
