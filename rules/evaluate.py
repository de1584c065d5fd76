"""The hourly evaluation: an organization's rules over its aggregates in PostgreSQL.

The rules are evaluated by the one engine (rules/engine.py, whose docstring gives the exact
semantics of persistence, hysteresis, baselines, the running gate and no-data) on the
aggregates read in the organization's tenant transaction (rules/sources.py), with the
baselines stored in ``rule_baselines``. Python turns the few resulting rows into
:class:`Breach`/:class:`Clear` payloads. Backtests run the same engine (rules/backtest.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from altaviz.core import db
from altaviz.core.payloads import Breach, Clear, HeldBreach
from altaviz.core.silences import inhibited
from rules.engine import DEFAULT_LOOKBACK_HOURS, Row
from rules.schema import RuleSet
from rules.sources import PostgresSource, evaluation_rows


@dataclass
class EvaluationResult:
    """Breaches and clears of one evaluation, ordered by hour."""

    breaches: list[Breach] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)
    #: Breaches explained by another rule firing on the unit at the same hour (``inhibits``).
    held: list[HeldBreach] = field(default_factory=list)
    #: Compressors whose stop alert is open and active -> the first hour of the stop.
    stopped: dict[str, datetime] = field(default_factory=dict)


def evaluate_rows(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
                  start: datetime, end: datetime, compressors: list[str] | None = None,
                  lookback_hours: int = DEFAULT_LOOKBACK_HOURS, *,
                  threads: int = 1) -> list[Row]:
    """Firing and clearing rows for ``[start, end]``; must run inside ``db.tenant(org_id)``
    (missing baselines of the evaluated days are computed and stored)."""
    return evaluation_rows(PostgresSource(conn), rule_set, org_id, start, end, compressors,
                           lookback_hours, stored=True, threads=threads)


def evaluate(conn: psycopg.Connection[Any], rule_set: RuleSet, org_id: str,
             hours: tuple[datetime, datetime], compressors: list[str] | None = None,
             *, lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
             threads: int = 1) -> EvaluationResult:
    """Evaluate ``rule_set`` for one organization over the hours ``[start, end]``.

    Runs in its own tenant transaction (row-level security confines it to ``org_id``) and
    writes nothing but missing baselines. See rules/engine.py for exactly which hours produce
    a Breach or a Clear; pass ``(h, h)`` for the pipeline's hourly run.

    Args:
        conn: a connection not inside another transaction (autocommit off is fine).
        rule_set: a validated set; stored sets stamp ``rule_set_id``/``rule_version``.
        org_id: the tenant.
        hours: first and last hour (UTC, inclusive; truncated to the hour).
        compressors: restrict to these compressor ids (None: every compressor of the org).
        lookback_hours: history read before ``start`` to reconstruct episode state.
        threads: threads of the array work (``settings.rules_threads``).
    """
    start, end = hours
    by_id = {r.id: r for r in rule_set.rules}
    result = EvaluationResult()
    inhibiting = [r.id for r in rule_set.rules if r.inhibits]
    stopped: dict[str, datetime] = {}
    with db.tenant(conn, org_id):
        rows = evaluate_rows(conn, rule_set, org_id, start, end, compressors, lookback_hours,
                             threads=threads)
        if inhibiting:
            stopped = dict(conn.execute(db.queries("silences")["open_stops"],
                                        {"rule_ids": inhibiting}).fetchall())
    stamp = {"rule_set_id": rule_set.rule_set_id, "rule_version": rule_set.version}
    for row in rows:
        rule = by_id[row.rule_id]
        if row.firing:
            result.breaches.append(Breach(
                org_id=org_id, compressor_id=row.compressor_id, site_id=row.site_id,
                rule_id=row.rule_id, metric=row.metric,
                value=row.value, threshold=row.threshold,
                severity="critical" if row.critical else "warning", hour=row.hour,
                escalation_delay_hours=rule.escalation_delay_hours,
                diagnosis=rule.diagnosis, **stamp))
        if row.clear:
            result.clears.append(Clear(
                org_id=org_id, compressor_id=row.compressor_id, rule_id=row.rule_id,
                metric=row.metric, value=row.value, hour=row.hour, **stamp))
    result.stopped = stopped
    return hold_inhibited(rule_set, result, stopped)


def hold_inhibited(rule_set: RuleSet, result: EvaluationResult,
                   stopped: dict[str, datetime] | None = None) -> EvaluationResult:
    """Move breaches that a stop of their unit explains to ``held``.

    A unit that stops says so once (the inhibiting rule's alert); the rules it ``inhibits``
    open nothing for that unit while the inhibiting rule fires at the same hour, or while its
    alert is still open and active (``stopped``: compressor -> first hour of the stop; a unit
    that went silent after stopping has no data to clear it). Breaches before the stop are
    untouched.
    """
    inhibits = {r.id: r.inhibits for r in rule_set.rules if r.inhibits}
    if not inhibits:
        return result
    keys = [(b.compressor_id, b.rule_id, b.hour) for b in result.breaches]
    drop = inhibited(keys, inhibits)
    targets = {t for ts in inhibits.values() for t in ts}
    for i, b in enumerate(result.breaches):
        since = (stopped or {}).get(b.compressor_id)
        if b.rule_id in targets and since is not None and b.hour >= since:
            drop.add(i)
    if not drop:
        return result
    by = {(b.compressor_id, b.hour): b.rule_id for b in result.breaches if b.rule_id in inhibits}
    return EvaluationResult(
        breaches=[b for i, b in enumerate(result.breaches) if i not in drop],
        clears=result.clears, stopped=result.stopped,
        held=[*result.held, *(HeldBreach(
            breach=b, held_by="inhibited",
            detail=f"unit stopped ({by.get((b.compressor_id, b.hour), 'stop')})")
            for i, b in enumerate(result.breaches) if i in drop)])


__all__ = ["EvaluationResult", "Row", "evaluate", "evaluate_rows"]
