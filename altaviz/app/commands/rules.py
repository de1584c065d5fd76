"""``altaviz rules``: tools for rule authors (check, backtest, diff) before rules go live."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from altaviz.core import db
from altaviz.core.errors import InputError
from rules.backtest import (
    backtest,
    diff,
    diff_episodes,
    format_score_diff,
    format_scores,
    load_ground_truth,
    score_figures,
)
from rules.forecast_backtest import format_forecast_scores, score_forecasts
from rules.loader import DEFAULT_RULES, RuleFileError, check_file
from rules.schema import notice_rule_ids

if TYPE_CHECKING:
    from altaviz.app.context import App


def _when(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or time such as 2026-03-01 or 2026-03-01T06:00Z (got {text!r})"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def register(subparsers: Any) -> None:
    """Add ``altaviz rules check|backtest|diff``."""
    parser = subparsers.add_parser(
        "rules", help="check, backtest and compare YAML threshold rule files",
        description="Tools for rule authors: validate rule files, replay them over stored "
                    "hourly aggregates, and compare how a change would have changed past alerts.")
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check", help="validate rule files (exit 1 on any error, listing file:line)",
        description="Validate complete rule files or organization override files (files with "
                    "'org:' are merged onto the default rule set). Prints every problem as "
                    "FILE:LINE: rule ID: KEY: message and exits non-zero if there is one.")
    check.add_argument("files", nargs="*", type=Path, metavar="FILE",
                       help="rule files (default: the built-in rules/thresholds.yaml)")
    check.set_defaults(handler=_check)

    for name, helptext in (("backtest", "replay a rule file over stored history"),
                           ("diff", "how changing OLD into NEW would have changed past alerts")):
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == "backtest":
            p.add_argument("file", type=Path, metavar="FILE", help="rule file to replay")
            p.add_argument("--ground-truth", type=Path, metavar="PATH",
                           help="simulator ground_truth.json: per fault mode, faults caught "
                                "(and >= 72 h before failure) with median and 10th-percentile "
                                "lead; false alerts per 100 healthy compressor-days; alerts "
                                "raised in nuisance events by kind and after a unit failed; "
                                "the time-to-failure forecast's error at each fault's first "
                                "alert and 24 h later, against a naive 6-hour line "
                                "(timestamps without an offset are UTC)")
        else:
            p.add_argument("old", type=Path, metavar="OLD", help="current rule file")
            p.add_argument("new", type=Path, metavar="NEW", help="proposed rule file")
            p.add_argument("--ground-truth", type=Path, metavar="PATH",
                           help="simulator ground_truth.json: also show what the change gains "
                                "and costs in the figures of `rules backtest --ground-truth`")
        p.add_argument("--from", dest="start", type=_when, required=True, metavar="WHEN",
                       help="first hour to replay (ISO date/time, UTC if no zone)")
        p.add_argument("--to", dest="end", type=_when, required=True, metavar="WHEN",
                       help="last hour to replay (inclusive)")
        p.add_argument("--org", action="append", metavar="ORG_ID",
                       help="organization(s) to replay (repeatable; default: all)")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.add_argument("--engine", choices=("auto", "duckdb", "postgres"), default="auto",
                       help="where the aggregates are read (the rules are the same): duckdb "
                            "reads the lake's gold Delta table column-wise (fleet-scale ranges "
                            "in seconds); postgres reads the hourly aggregates; neither writes; "
                            "auto (default): duckdb when the lake has a gold table "
                            "(ALTAVIZ_LAKE_DIR, default DATA_DIR/lake), else postgres")
        p.set_defaults(handler=_backtest if name == "backtest" else _diff)


def _gold_uri(args: argparse.Namespace, app: App) -> str | None:
    """The gold table the DuckDB engine reads, or None for the PostgreSQL engine."""
    if args.engine == "postgres":
        return None
    from deltalake import DeltaTable

    gold = app.settings.lake_path / "gold"
    if DeltaTable.is_deltatable(str(gold)):
        return str(gold)
    if args.engine == "duckdb":
        raise InputError(f"--engine duckdb: no gold Delta table at {gold} (run `altaviz etl "
                         f"run` first, set ALTAVIZ_LAKE_DIR, or use --engine postgres)")
    return None


def _check(args: argparse.Namespace, app: App) -> int:
    files = args.files or [DEFAULT_RULES]
    failed = 0
    for path in files:
        try:
            rs = check_file(path, catalog=app.settings.catalog)
        except RuleFileError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem)
            continue
        print(f"{path}: OK ({len(rs.rules)} rules, hash {rs.content_hash[:12]})")
    return 1 if failed else 0


def _orgs(args: argparse.Namespace, conn: Any) -> list[str]:
    return list(args.org) if args.org else db.org_ids(conn)


def _backtest(args: argparse.Namespace, app: App) -> int:
    rule_set = check_file(args.file, catalog=app.settings.catalog)
    truth = load_ground_truth(args.ground_truth) if args.ground_truth else None
    if args.end < args.start:
        raise InputError("--to is before --from")
    gold = _gold_uri(args, app)
    with app.connect() as conn:
        report = backtest(conn, rule_set, _orgs(args, conn), args.start, args.end,
                          truth.faults if truth else None,
                          exclude_rules=notice_rule_ids(rule_set), gold_uri=gold,
                          threads=app.settings.rules_threads,
                          nuisance=truth.nuisance if truth else None)
        forecast = (score_forecasts(conn, rule_set, report, gold_uri=gold)
                    if truth is not None else None)
    summary = report.summary()
    if forecast is not None:
        summary["forecast"] = forecast.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"{args.file}: {summary['episodes']} alerts over {report.days:.1f} days, "
          f"{summary['compressors']} compressors ({'duckdb over ' + gold if gold else 'postgres'})")
    for key, n in summary["by_rule"].items():
        print(f"  {key:48} {n}")
    print(f"  alerts per compressor per week: {report.alerts_per_compressor_week:.3f}")
    held = report.held_back
    print(f"  held back: {held['maintenance']} by maintenance windows, {held['inhibited']} "
          f"inhibited by unit stops (never opened); {held['silence']} opened in a silence")
    if truth is not None:
        for f in report.faults:
            if not f.caught:
                lead = "MISSED"
            elif f.lead_hours is None:
                lead = "caught (unit had not failed by the end)"
            else:
                lead = f"{f.lead_hours:.0f} h before failure"
            print(f"  fault {f.fault.compressor_id} {f.fault.mode}: {lead} {','.join(f.rules)}")
        print("\n".join(format_scores(report)))
        if forecast is not None:
            print("\n".join(format_forecast_scores(forecast)))
    return 0


def _diff(args: argparse.Namespace, app: App) -> int:
    catalog = app.settings.catalog
    old, new = check_file(args.old, catalog=catalog), check_file(args.new, catalog=catalog)
    truth = load_ground_truth(args.ground_truth) if args.ground_truth else None
    if args.end < args.start:
        raise InputError("--to is before --from")
    gold = _gold_uri(args, app)
    threads = app.settings.rules_threads
    reports = None
    with app.connect() as conn:
        orgs = _orgs(args, conn)
        if truth is None:
            d = diff(conn, old, new, orgs, args.start, args.end, gold_uri=gold,
                     threads=threads)
        else:
            reports = [backtest(conn, rs, orgs, args.start, args.end, truth.faults,
                                exclude_rules=notice_rule_ids(rs),
                                gold_uri=gold, threads=threads, nuisance=truth.nuisance)
                       for rs in (old, new)]
            d = diff_episodes(reports[0].episodes, reports[1].episodes, args.end)
    if args.json:
        out: dict[str, Any] = {"counts": d.counts, "added": [e.__dict__ for e in d.added],
                               "removed": [e.__dict__ for e in d.removed]}
        if reports is not None:
            out["figures"] = {"old": score_figures(reports[0]),
                              "new": score_figures(reports[1])}
        print(json.dumps(out, indent=2, default=str))
        return 0
    if reports is not None:
        print("\n".join(format_score_diff(*reports)))
        print("  alerts by rule (old -> new):")
    for rule_id, (a, b) in d.counts.items():
        mark = "" if a == b else f"  ({b - a:+d})"
        print(f"  {rule_id:40} {a:5} -> {b:5}{mark}")
    for label, eps in (("new alert", d.added), ("no longer raised", d.removed)):
        for e in eps:
            print(f"  {label}: {e.org_id}/{e.compressor_id} {e.rule_id} {e.severity} "
                  f"at {e.start.isoformat()}")
    return 0
