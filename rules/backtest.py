"""Backtesting rules over stored history: what alerts they would have raised.

An *alert* is one episode: from the hour a rule starts firing for a compressor to the hour it
clears (or the end of the range, "open"). The rows come from the one rule engine
(rules/engine.py), the same as the hourly evaluation's, stitched into episodes here. The
aggregates are read from the lake's gold table when given (``gold_uri``: column-wise with
DuckDB, the one for a fleet's month, bench/bench_rules.py, backtest part) or from PostgreSQL
under the organization's row-level security; either way the baselines are computed from the
history read and nothing is written.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import psycopg

from altaviz.core import db
from altaviz.core.errors import InputError
from rules.engine import DEFAULT_LOOKBACK_HOURS, Row
from rules.schema import RuleSet
from rules.sources import GoldSource, PostgresSource, connect_duckdb, evaluation_rows


@dataclass(frozen=True)
class Episode:
    """One alert a rule set would have raised."""

    org_id: str
    compressor_id: str
    rule_id: str
    start: datetime
    end: datetime | None           # the Clear hour; None: still open at the end of the range
    severity: str                  # the highest severity reached


@dataclass(frozen=True)
class Fault:
    """A fault injected by the simulator (``ground_truth.json``)."""

    org_id: str
    compressor_id: str
    mode: str
    onset: datetime
    failure: datetime | None   # None: the unit had not failed by the end of the simulation


@dataclass(frozen=True)
class FaultOutcome:
    """Whether a fault was caught (an episode between onset and failure) and how early."""

    fault: Fault
    caught: bool
    lead_hours: float | None
    rules: tuple[str, ...]


@dataclass
class BacktestReport:
    """Figures of one backtest run."""

    start: datetime
    end: datetime
    episodes: list[Episode]
    compressors: int
    by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    faults: list[FaultOutcome] = field(default_factory=list)
    healthy_compressor_days: float = 0.0
    false_alerts: int = 0
    #: rule id -> episodes on units without an injected fault: which rules make the noise
    #: (a data-missing alert on a real communication gap counts here too)
    false_by_rule: dict[str, int] = field(default_factory=dict)

    @property
    def days(self) -> float:
        """Length of the range in days."""
        return (self.end - self.start).total_seconds() / 86400 + 1 / 24

    @property
    def alerts_per_compressor_week(self) -> float:
        """Alert fatigue: episodes per compressor per week (data-missing alerts included)."""
        weeks = self.compressors * self.days / 7
        return len(self.episodes) / weeks if weeks else 0.0

    @property
    def caught_share(self) -> float | None:
        """Share of ground-truth faults caught before failure."""
        return (sum(f.caught for f in self.faults) / len(self.faults)) if self.faults else None

    @property
    def median_lead_hours(self) -> float | None:
        """Median hours between the first alert and the failure, over caught faults."""
        leads = [f.lead_hours for f in self.faults if f.lead_hours is not None]
        return median(leads) if leads else None

    @property
    def false_alerts_per_100_compressor_days(self) -> float | None:
        """Episodes on units without an injected fault, per 100 compressor-days."""
        if not self.healthy_compressor_days:
            return None
        return 100 * self.false_alerts / self.healthy_compressor_days

    def summary(self) -> dict[str, Any]:
        """The report as plain data (for the CLI's JSON output and BENCHMARKS.md)."""
        return {
            "start": self.start.isoformat(), "end": self.end.isoformat(),
            "compressors": self.compressors, "episodes": len(self.episodes),
            "by_rule": {f"{r}/{s}": n for (r, s), n in sorted(self.by_rule.items())},
            "alerts_per_compressor_week": round(self.alerts_per_compressor_week, 4),
            "faults": len(self.faults),
            "caught_share": self.caught_share,
            "median_lead_hours": self.median_lead_hours,
            "false_alerts_per_100_compressor_days": self.false_alerts_per_100_compressor_days,
            "false_alerts_by_rule": self.false_by_rule,
        }


def read_ground_truth(path: Path) -> list[Fault]:
    """Faults from the simulator's ``ground_truth.json`` (``{"faults": [...]}``)."""
    try:
        data = json.loads(Path(path).read_text())
        return [Fault(org_id=f["org_id"], compressor_id=f["compressor_id"], mode=f["mode"],
                      onset=datetime.fromisoformat(f["onset"]),
                      failure=datetime.fromisoformat(f["failure"]) if f.get("failure") else None)
                for f in data["faults"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a simulator ground_truth.json ({exc})") from exc


def episode_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                 start: datetime, end: datetime,
                 lookback_hours: int = DEFAULT_LOOKBACK_HOURS, gold_uri: str | None = None,
                 compressors: list[str] | None = None, *, threads: int = 1) -> list[Row]:
    """Firing and clearing rows of ``[start, end]`` for one organization (ordered by hour,
    compressor, rule), from gold (``gold_uri``) or PostgreSQL; writes nothing."""
    if gold_uri is None:
        with db.tenant(conn, org_id):
            return evaluation_rows(PostgresSource(conn), rule_set, org_id, start, end,
                                   compressors, lookback_hours, threads=threads)
    duck = connect_duckdb()
    try:
        return evaluation_rows(GoldSource(conn, duck, gold_uri), rule_set, org_id, start, end,
                               compressors, lookback_hours, threads=threads)
    finally:
        duck.close()


def episodes(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str, start: datetime,
             end: datetime, lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
             gold_uri: str | None = None, *, threads: int = 1) -> list[Episode]:
    """Alert episodes of ``rule_set`` for one organization over ``[start, end]``.

    ``gold_uri``: read the aggregates from the lake's gold Delta table (else PostgreSQL);
    ``threads``: threads of the array work (the setting ``rules_threads``).
    """
    return stitch(org_id, episode_rows(conn, rule_set, org_id, start, end, lookback_hours,
                                       gold_uri, threads=threads))


def stitch(org_id: str, rows: list[Row]) -> list[Episode]:
    """Episodes from firing/clear rows ordered by hour: a rule's first firing hour opens one,
    its Clear closes it, and the highest severity reached is kept."""
    open_: dict[tuple[str, str], list[Any]] = {}
    out: list[Episode] = []
    for row in rows:  # ordered by hour
        key = (row.compressor_id, row.rule_id)
        if row.firing:
            ep = open_.get(key)
            if ep is None:
                open_[key] = [row.hour, "critical" if row.critical else "warning"]
            elif row.critical:
                ep[1] = "critical"
        if row.clear and key in open_:
            s, sev = open_.pop(key)
            out.append(Episode(org_id, row.compressor_id, row.rule_id, s, row.hour, sev))
    for (comp, rule_id), (s, sev) in open_.items():
        out.append(Episode(org_id, comp, rule_id, s, None, sev))
    out.sort(key=lambda e: (e.start, e.compressor_id, e.rule_id))
    return out


def backtest(conn: psycopg.Connection[Any], rule_set: RuleSet, org_ids: list[str],
             start: datetime, end: datetime, ground_truth: list[Fault] | None = None,
             exclude_rules: tuple[str, ...] = (), gold_uri: str | None = None, *,
             threads: int = 1) -> BacktestReport:
    """Replay ``rule_set`` over stored history for ``org_ids``.

    Faults count as caught when an episode of any rule (other than ``exclude_rules``, e.g. the
    data-missing rule) starts between onset and failure on that compressor; lead time is
    failure minus the first such start. Episodes on compressors without an injected fault are
    false alerts. ``gold_uri``, ``threads``: see :func:`episodes`.
    """
    eps: list[Episode] = []
    n_comp = 0
    for org in org_ids:
        eps += episodes(conn, rule_set, org, start, end, gold_uri=gold_uri, threads=threads)
        with db.tenant(conn, org):
            row = conn.execute("SELECT count(*) FROM compressors").fetchone()
        n_comp += int(row[0]) if row else 0
    report = BacktestReport(start=start, end=end, episodes=eps, compressors=n_comp)
    report.by_rule = dict(Counter((e.rule_id, e.severity) for e in eps))
    if ground_truth is not None:
        # Faults whose unit failed before the range, or that began after it, cannot be judged.
        faults = [f for f in ground_truth if f.org_id in org_ids and f.onset <= end
                  and (f.failure is None or f.failure >= start)]
        faulty = {(f.org_id, f.compressor_id) for f in faults}
        for f in faults:
            hits = [e for e in eps if (e.org_id, e.compressor_id) == (f.org_id, f.compressor_id)
                    and e.rule_id not in exclude_rules and f.onset <= e.start
                    and (f.failure is None or e.start <= f.failure)]
            first = min((e.start for e in hits), default=None)
            report.faults.append(FaultOutcome(
                f, first is not None,
                (f.failure - first).total_seconds() / 3600
                if first is not None and f.failure is not None else None,
                tuple(sorted({e.rule_id for e in hits}))))
        report.healthy_compressor_days = (n_comp - len(faulty)) * report.days
        healthy = [e for e in eps if (e.org_id, e.compressor_id) not in faulty]
        report.false_alerts = len(healthy)
        report.false_by_rule = dict(Counter(e.rule_id for e in healthy).most_common())
    return report


@dataclass(frozen=True)
class Diff:
    """How alert episodes change between two rule sets over the same history."""

    added: list[Episode]      # raised by NEW only
    removed: list[Episode]    # raised by OLD only
    counts: dict[str, tuple[int, int]]   # rule id -> (old episodes, new episodes)


def diff(conn: psycopg.Connection[Any], old: RuleSet, new: RuleSet, org_ids: list[str],
         start: datetime, end: datetime, gold_uri: str | None = None, *,
         threads: int = 1) -> Diff:
    """Episodes gained and lost by changing ``old`` into ``new``.

    An old and a new episode of the same rule and compressor are the same alert when their
    time spans overlap (each matched at most once); the rest were gained or lost.
    ``gold_uri``, ``threads``: see :func:`episodes`.
    """
    a: list[Episode] = []
    b: list[Episode] = []
    for org in org_ids:
        a += episodes(conn, old, org, start, end, gold_uri=gold_uri, threads=threads)
        b += episodes(conn, new, org, start, end, gold_uri=gold_uri, threads=threads)
    far = end + timedelta(days=3650)

    def unmatched(xs: list[Episode], ys: list[Episode]) -> list[Episode]:
        pool: dict[tuple[str, str, str], list[Episode]] = {}
        for y in ys:
            pool.setdefault((y.org_id, y.compressor_id, y.rule_id), []).append(y)
        out = []
        for x in xs:
            cands = pool.get((x.org_id, x.compressor_id, x.rule_id), [])
            hit = next((y for y in cands
                        if y.start <= (x.end or far) and x.start <= (y.end or far)), None)
            if hit is None:
                out.append(x)
            else:
                cands.remove(hit)
        return out

    ca, cb = Counter(e.rule_id for e in a), Counter(e.rule_id for e in b)
    return Diff(added=unmatched(b, a), removed=unmatched(a, b),
                counts={r: (ca[r], cb[r]) for r in sorted(set(ca) | set(cb))})
