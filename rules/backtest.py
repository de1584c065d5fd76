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
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import psycopg

from altaviz.core import db
from altaviz.core.errors import InputError
from altaviz.core.silences import (
    MaintenanceWindow,
    in_stop,
    in_window,
    inhibited,
    silence_from_row,
    stop_spans,
    window_from_row,
)
from altaviz.core.telemetry import CHANNELS, METRIC_BY_NAME
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
class Nuisance:
    """Ordinary field behaviour from the ground truth (a hot spell, a stuck sensor, a planned
    stop, ...) over ``[start, end)`` of one unit: an alert raised in it is not a fault caught."""

    org_id: str
    compressor_id: str
    kind: str
    start: datetime
    end: datetime
    channel: str | None = None


@dataclass(frozen=True)
class GroundTruth:
    """What ``ground_truth.json`` says was injected: the faults and the nuisance events."""

    faults: list[Fault]
    nuisance: list[Nuisance] = field(default_factory=list)


#: A fault counts as caught early when its first alert came at least this long before failure.
EARLY_LEAD_HOURS = 72.0


@dataclass(frozen=True)
class Score:
    """Detection figures of a group of faults that failed inside the range (one mode, or all).

    Faults still developing at the end of the range are left out: whether they would have
    been caught in time is not known yet.
    """

    faults: int
    caught: int
    caught_early: int                  # first alert >= EARLY_LEAD_HOURS before failure
    median_lead_hours: float | None
    p10_lead_hours: float | None       # 10th percentile of the lead over caught faults

    @classmethod
    def of(cls, outcomes: list[FaultOutcome]) -> Score:
        """The figures of ``outcomes`` (faults that failed in the range)."""
        leads = [o.lead_hours for o in outcomes if o.caught and o.lead_hours is not None]
        return cls(faults=len(outcomes), caught=sum(o.caught for o in outcomes),
                   caught_early=sum(lead >= EARLY_LEAD_HOURS for lead in leads),
                   median_lead_hours=float(median(leads)) if leads else None,
                   p10_lead_hours=float(np.percentile(leads, 10)) if leads else None)


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
    #: rule id -> episodes on healthy units: which rules make the noise
    false_by_rule: dict[str, int] = field(default_factory=dict)
    #: notices (the excluded rules: data missing, a stuck sensor, a unit stopped) that started in
    #: healthy time: they tell the technician about the data, not about a machine fault, so
    #: they are counted here and not as false alerts
    data_notices: int = 0
    data_notices_by_rule: dict[str, int] = field(default_factory=dict)
    #: fault mode (and "all") -> detection figures over the faults that failed in the range
    scores: dict[str, Score] = field(default_factory=dict)
    #: faults still developing at the end of the range (not in ``scores``)
    faults_open_at_end: int = 0
    #: nuisance kind -> false alerts that started inside such an event of their unit (for a
    #: stuck, dropped or missing sensor: alerts of rules that read that channel)
    nuisance_alerts: dict[str, int] = field(default_factory=dict)
    #: nuisance kind -> rule id -> those alerts
    nuisance_by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    #: episodes that started after their unit had failed (it is down, nobody can act)
    alerts_after_failure: int = 0
    #: alerts held back, by what: ``maintenance`` (a window: never opened), ``inhibited`` (a
    #: stop of the unit explained them: never opened), ``silence`` (opened in a matching
    #: silence: notified only at its end). The first two are not in ``episodes``.
    held_back: dict[str, int] = field(default_factory=lambda: {
        "maintenance": 0, "inhibited": 0, "silence": 0})

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
        """False alerts per 100 healthy compressor-days.

        Healthy time is every unit's time in the range outside a fault's onset-to-failure
        window and before its failure (a failed unit is down); a false alert is an episode
        that started in healthy time.
        """
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
            "healthy_compressor_days": round(self.healthy_compressor_days, 3),
            "false_alerts": self.false_alerts,
            "data_notices": self.data_notices,
            "data_notices_by_rule": self.data_notices_by_rule,
            "scores": {mode: vars(sc) for mode, sc in self.scores.items()},
            "faults_open_at_end": self.faults_open_at_end,
            "nuisance_alerts": self.nuisance_alerts,
            "nuisance_alerts_by_rule": self.nuisance_by_rule,
            "alerts_after_failure": self.alerts_after_failure,
            "held_back": self.held_back,
        }


def _utc(text: str) -> datetime:
    """A ground-truth timestamp; one without an offset is UTC, as ``--from``/``--to`` read."""
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def load_ground_truth(path: Path) -> GroundTruth:
    """Faults and nuisance events from the simulator's ``ground_truth.json``
    (``{"faults": [...], "nuisance_events": [...]}``; the events may be absent)."""
    try:
        data = json.loads(Path(path).read_text())
        faults = [Fault(org_id=f["org_id"], compressor_id=f["compressor_id"], mode=f["mode"],
                        onset=_utc(f["onset"]),
                        failure=_utc(f["failure"]) if f.get("failure") else None)
                  for f in data["faults"]]
        nuisance = [Nuisance(org_id=e["org_id"], compressor_id=e["compressor_id"],
                             kind=e["kind"], start=_utc(e["start"]), end=_utc(e["end"]),
                             channel=e.get("channel"))
                    for e in data.get("nuisance_events", ())]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a simulator ground_truth.json ({exc})") from exc
    return GroundTruth(faults, nuisance)


def read_ground_truth(path: Path) -> list[Fault]:
    """Faults from the simulator's ``ground_truth.json`` (``{"faults": [...]}``)."""
    return load_ground_truth(path).faults


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
             threads: int = 1, nuisance: list[Nuisance] | None = None) -> BacktestReport:
    """Replay ``rule_set`` over stored history for ``org_ids``.

    Faults count as caught when an episode of any rule (other than ``exclude_rules``, the
    notice rules such as data-missing) starts between onset and failure on that
    compressor; lead time is failure minus the first such start. Episodes that start in a
    unit's healthy time (outside every onset-to-failure window, before any failure) are false
    alerts, except those of ``exclude_rules``, which are notices (data quality, unit stopped:
    :func:`rules.schema.notice_rule_ids`); false alerts
    that start inside a ``nuisance`` event of their unit are also counted by the event's kind.
    ``gold_uri``, ``threads``: see :func:`episodes`.
    """
    eps: list[Episode] = []
    units: list[tuple[str, str]] = []
    held = {"maintenance": 0, "inhibited": 0, "silence": 0}
    q = db.queries("silences")
    for org in org_ids:
        rows = episode_rows(conn, rule_set, org, start, end, gold_uri=gold_uri,
                            threads=threads)
        with db.tenant(conn, org):
            units += [(org, str(r[0])) for r in
                      conn.execute("SELECT compressor_id FROM compressors").fetchall()]
            span = {"start": start, "end": end + timedelta(hours=1)}
            windows = [window_from_row(r) for r in
                       conn.execute(q["windows_between"], span).fetchall()]
            silences = [silence_from_row(r) for r in conn.execute(
                q["list_silences"], {"now": start, "all": True}).fetchall()]
        kept, inhibited_rows, window_rows = hold_rows(rows, rule_set, windows)
        held["inhibited"] += count_runs(inhibited_rows)
        held["maintenance"] += count_runs(window_rows)
        org_eps = stitch(org, kept)
        site_of = {r.compressor_id: r.site_id for r in rows}
        held["silence"] += sum(1 for e in org_eps if any(
            s.active_at(e.start) and s.matchers.matches(
                compressor_id=e.compressor_id, site_id=site_of.get(e.compressor_id, ""),
                rule_id=e.rule_id, severity=e.severity) for s in silences))
        eps += org_eps
    report = BacktestReport(start=start, end=end, episodes=eps, compressors=len(units),
                            held_back=held)
    report.by_rule = dict(Counter((e.rule_id, e.severity) for e in eps))
    if ground_truth is not None:
        score(report, units, ground_truth, nuisance or [], exclude_rules,
              rule_channels(rule_set))
    return report


def hold_rows(rows: list[Row], rule_set: RuleSet, windows: list[MaintenanceWindow]
              ) -> tuple[list[Row], list[Row], list[Row]]:
    """Split firing rows as the hourly pipeline would: kept, inhibited by a stop of the unit
    (a rule's ``inhibits``: at the same hour, or while the stop's alert is still open and
    active, :func:`~altaviz.core.silences.stop_spans`), and held by a maintenance window.
    Clear rows are always kept (an alert already open may clear)."""
    inhibits = {r.id: r.inhibits for r in rule_set.rules if r.inhibits}
    firing = [i for i, r in enumerate(rows) if r.firing]
    drop = {firing[j] for j in inhibited(
        [(rows[i].compressor_id, rows[i].rule_id, rows[i].hour) for i in firing], inhibits)}
    # the stop's alert opens outside any window (a planned stop opens none), like live
    spans = stop_spans(((r.compressor_id, r.rule_id, r.hour, r.firing, r.clear) for r in rows
                        if in_window(windows, r.compressor_id, r.site_id, r.hour) is None),
                       inhibits)
    targets = {t for ts in inhibits.values() for t in ts}
    drop |= {i for i in firing if rows[i].rule_id in targets
             and rows[i].rule_id not in inhibits
             and in_stop(spans, rows[i].compressor_id, rows[i].hour)}
    kept: list[Row] = []
    by_stop: list[Row] = []
    by_window: list[Row] = []
    for i, r in enumerate(rows):
        if not r.firing:
            kept.append(r)
        elif in_window(windows, r.compressor_id, r.site_id, r.hour) is not None:
            by_window.append(r)
            if r.clear:
                kept.append(replace(r, firing=False))
        elif i in drop:
            by_stop.append(r)
            if r.clear:
                kept.append(replace(r, firing=False))
        else:
            kept.append(r)
    return kept, by_stop, by_window


def count_runs(rows: list[Row]) -> int:
    """Alerts the rows would have made: runs of consecutive hours per compressor and rule."""
    hours: dict[tuple[str, str], list[datetime]] = {}
    for r in rows:
        hours.setdefault((r.compressor_id, r.rule_id), []).append(r.hour)
    runs = 0
    for hs in hours.values():
        hs.sort()
        runs += 1 + sum(1 for a, b in pairwise(hs) if b - a > timedelta(hours=1))
    return runs


def rule_channels(rule_set: RuleSet) -> dict[str, frozenset[str]]:
    """Rule id -> the channels its metric is computed from, plus speed (every rule judges only
    running hours); empty for a rule on no one metric (a unit's data missing)."""
    out: dict[str, frozenset[str]] = {}
    for rule in rule_set.rules:
        if rule.metric is None:
            out[rule.id] = frozenset()
            continue
        sql = METRIC_BY_NAME[rule.metric].sql
        out[rule.id] = frozenset({"speed_rpm"} | {
            c.name for c in CHANNELS if re.search(rf"\b{c.name}\b", sql)})
    return out


def score(report: BacktestReport, units: list[tuple[str, str]], ground_truth: list[Fault],
          nuisance: list[Nuisance], exclude_rules: tuple[str, ...] = (),
          channels: dict[str, frozenset[str]] | None = None) -> None:
    """Fill ``report``'s detection and false-alert figures from the ground truth, for the
    episodes and ``units`` (org id, compressor id) it covers.

    An event of one channel (a stuck, dropped or missing sensor) is held to have raised only
    the alerts of rules that read that channel (``channels``: see :func:`rule_channels`; a
    rule not in it reads every channel).
    """
    start, end = report.start, report.end
    stop = end + timedelta(hours=1)         # the range covers the whole last hour
    eps = report.episodes
    # Faults whose unit failed before the range, or that began after it, cannot be judged.
    faults = [f for f in ground_truth if f.org_id in {o for o, _ in units} and f.onset <= end
              and (f.failure is None or f.failure >= start)]
    by_unit: dict[tuple[str, str], list[Fault]] = {}
    for f in ground_truth:
        by_unit.setdefault((f.org_id, f.compressor_id), []).append(f)
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
    failed = [o for o in report.faults if o.fault.failure is not None and o.fault.failure <= stop]
    report.faults_open_at_end = len(report.faults) - len(failed)
    report.scores = {mode: Score.of([o for o in failed if o.fault.mode == mode])
                     for mode in sorted({o.fault.mode for o in failed})}
    report.scores["all"] = Score.of(failed)

    def span(a: datetime, b: datetime) -> float:   # days of [a, b) inside the range
        return max(0.0, (min(b, stop) - max(a, start)).total_seconds() / 86400)

    healthy_days = 0.0
    for unit in units:
        down = min((f.failure for f in by_unit.get(unit, ()) if f.failure is not None),
                   default=stop)
        healthy_days += span(start, down) - sum(
            span(f.onset, min(f.failure or stop, down)) for f in by_unit.get(unit, ()))
    report.healthy_compressor_days = healthy_days

    events: dict[tuple[str, str], list[Nuisance]] = {}
    for n in nuisance:
        events.setdefault((n.org_id, n.compressor_id), []).append(n)
    false: list[Episode] = []
    notices: list[Episode] = []
    for e in eps:
        unit_faults = by_unit.get((e.org_id, e.compressor_id), ())
        if any(f.failure is not None and e.start > f.failure for f in unit_faults):
            report.alerts_after_failure += 1
        elif not any(f.onset <= e.start and (f.failure is None or e.start <= f.failure)
                     for f in unit_faults):
            if e.rule_id in exclude_rules:
                notices.append(e)
            else:
                false.append(e)
    report.data_notices = len(notices)
    report.data_notices_by_rule = dict(Counter(e.rule_id for e in notices).most_common())
    report.false_alerts = len(false)
    report.false_by_rule = dict(Counter(e.rule_id for e in false).most_common())
    by_kind: dict[str, Counter[str]] = {}
    for e in false:
        reads = (channels or {}).get(e.rule_id)
        for kind in {n.kind for n in events.get((e.org_id, e.compressor_id), ())
                     if n.start <= e.start < n.end
                     and (n.channel is None or reads is None or n.channel in reads)}:
            by_kind.setdefault(kind, Counter())[e.rule_id] += 1
    report.nuisance_alerts = {k: sum(c.values()) for k, c in sorted(by_kind.items())}
    report.nuisance_by_rule = {k: dict(c.most_common()) for k, c in sorted(by_kind.items())}


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
    return diff_episodes(a, b, end)


def diff_episodes(a: list[Episode], b: list[Episode], end: datetime) -> Diff:
    """The :class:`Diff` of old episodes ``a`` and new episodes ``b`` of a range ending at
    ``end`` (see :func:`diff`)."""
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


def format_scores(report: BacktestReport) -> list[str]:
    """The ground-truth figures as a table for people (the CLI's and the demo's summary)."""

    def hours(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} h"

    lines = [f"  {'fault mode':<20} {'faults':>6} {'caught':>6} "
             f"{f'>={EARLY_LEAD_HOURS:.0f} h':>7} {'median lead':>11} {'p10 lead':>8}"]
    for mode, sc in report.scores.items():
        lines.append(f"  {mode:<20} {sc.faults:>6} {sc.caught:>6} {sc.caught_early:>7} "
                     f"{hours(sc.median_lead_hours):>11} {hours(sc.p10_lead_hours):>8}")
    if report.faults_open_at_end:
        lines.append(f"  (not scored: {report.faults_open_at_end} fault(s) still developing "
                     f"at the end of the range)")
    rate = report.false_alerts_per_100_compressor_days
    lines.append(f"  false alerts: {report.false_alerts} in "
                 f"{report.healthy_compressor_days:.1f} healthy compressor-days = "
                 f"{'-' if rate is None else f'{rate:.2f}'} per 100")
    if report.false_by_rule:
        lines.append("    by rule: " + ", ".join(
            f"{rule} {n}" for rule, n in report.false_by_rule.items()))
    if report.data_notices:
        lines.append(f"  notices in healthy time (data quality, unit stopped; not counted as "
                     f"false alerts): "
                     f"{report.data_notices} (" + ", ".join(
                         f"{rule} {n}" for rule, n in report.data_notices_by_rule.items()) + ")")
    lines.append("  false alerts raised in nuisance events: " + (", ".join(
        f"{kind} {n}" for kind, n in report.nuisance_alerts.items()) or "none"))
    for kind, rules in report.nuisance_by_rule.items():
        lines.append(f"    {kind}: " + ", ".join(f"{rule} {n}" for rule, n in rules.items()))
    lines.append(f"  alerts after a unit had failed: {report.alerts_after_failure}")
    return lines


def score_figures(report: BacktestReport) -> dict[str, float | None]:
    """The ground-truth figures as one flat, ordered mapping (what ``rules diff`` compares)."""
    out: dict[str, float | None] = {}
    for mode, sc in report.scores.items():
        out[f"{mode}: faults"] = sc.faults
        out[f"{mode}: caught"] = sc.caught
        out[f"{mode}: caught >= {EARLY_LEAD_HOURS:.0f} h"] = sc.caught_early
        out[f"{mode}: median lead h"] = sc.median_lead_hours
        out[f"{mode}: p10 lead h"] = sc.p10_lead_hours
    out["false alerts"] = report.false_alerts
    out["false alerts per 100 healthy compressor-days"] = (
        report.false_alerts_per_100_compressor_days)
    out["data-quality notices"] = report.data_notices
    for kind, n in report.nuisance_alerts.items():
        out[f"false alerts in {kind}"] = n
    out["alerts after a unit had failed"] = report.alerts_after_failure
    return out


def format_score_diff(old: BacktestReport, new: BacktestReport) -> list[str]:
    """What changing the rules gains and costs in the ground-truth figures, one line each
    (a figure only one side has counts as 0 on the other, except leads)."""
    a, b = score_figures(old), score_figures(new)
    names = list(a) + [k for k in b if k not in a]

    def show(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}".rstrip("0").rstrip(".")

    lines = [f"  {'figure':<48} {'old':>8} {'new':>8}"]
    for name in names:
        lead = "lead" in name
        x = a.get(name, None if lead else 0)
        y = b.get(name, None if lead else 0)
        change = ""
        if x is not None and y is not None and x != y:
            change = f"  ({'+' if y > x else ''}{show(y - x)})"
        lines.append(f"  {name:<48} {show(x):>8} {show(y):>8}{change}")
    return lines
