"""Silences and maintenance windows as the alert workflows and the pipeline see them.

The alert workflow never reads PostgreSQL: before each notification it asks ``check_silence``
(a local activity, so the answer is recorded in its history and a replay or a restarted worker
sees the same one) whether a silence or a maintenance window holds the alert back, and until
when. The pipeline's rule evaluation drops breaches of units in a maintenance window before any
alert is opened (:func:`hold_in_windows`) and records every breach it held back, whether by a
window or by the unit's stop (``held_breaches``), so nothing is lost without a trace.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from temporalio import activity

from altaviz.core.db import queries, tenant
from altaviz.core.payloads import Evaluation, HeldBreach
from altaviz.core.silences import (
    HoldDecision,
    HoldQuery,
    MaintenanceWindow,
    Silence,
    in_window,
    silence_from_row,
    silenced_until,
    window_from_row,
    window_until,
)

#: Activity name (the alert workflow refers to it by this string).
CHECK_SILENCE = "check_silence"


def windows_between(conn: psycopg.Connection[Any], start: datetime, end: datetime
                    ) -> list[MaintenanceWindow]:
    """The windows whose bounds overlap ``[start, end)`` (inside a tenant transaction)."""
    q = queries("silences")
    rows = conn.execute(q["windows_between"], {"start": start, "end": end}).fetchall()
    return [window_from_row(r) for r in rows]


def decide(silences: Iterable[Silence], windows: Iterable[MaintenanceWindow],
           query: HoldQuery) -> HoldDecision:
    """Whether an alert is held back at ``query.at``, and until when (pure)."""
    s_until, s_ids = silenced_until(
        silences, compressor_id=query.compressor_id, site_id=query.site_id,
        rule_id=query.rule_id, severity=query.severity, at=query.at)
    w_until, w_ids = window_until(windows, compressor_id=query.compressor_id,
                                  site_id=query.site_id, at=query.at)
    if s_until is None and w_until is None:
        return HoldDecision()
    if w_until is not None and (s_until is None or w_until >= s_until):
        return HoldDecision(until=w_until, reason="maintenance", window_ids=w_ids,
                            silence_ids=s_ids, detail="maintenance window")
    assert s_until is not None
    return HoldDecision(until=s_until, reason="silence", silence_ids=s_ids, window_ids=w_ids,
                        detail="silence")


def hold_in_windows(windows: list[MaintenanceWindow], evaluation: Evaluation) -> Evaluation:
    """Move the breaches of units in a maintenance window at their hour to ``held``.

    During a window a unit's rules open no alerts: the stop is planned. Clears pass (an alert
    already open may clear). Breaches already held for another reason stay as they were.
    """
    kept = []
    held = list(evaluation.held)
    for b in evaluation.breaches:
        w = in_window(windows, b.compressor_id, b.site_id, b.hour)
        if w is None:
            kept.append(b)
        else:
            held.append(HeldBreach(breach=b, held_by="maintenance",
                                   detail=f"window {w.window_id}: {w.reason}"))
    return Evaluation(org_id=evaluation.org_id, breaches=kept, clears=evaluation.clears,
                      held=held)


def apply_windows(conn: psycopg.Connection[Any], evaluation: Evaluation) -> Evaluation:
    """Hold back the breaches of units in a window and record every held breach (one tenant
    transaction); returns the evaluation with the breaches that may open alerts."""
    if not evaluation.breaches and not evaluation.held:
        return evaluation
    hours = [b.hour for b in evaluation.breaches] + [h.breach.hour for h in evaluation.held]
    q = queries("silences")
    with tenant(conn, evaluation.org_id):
        windows = windows_between(conn, min(hours), max(hours) + timedelta(hours=1))
        result = hold_in_windows(windows, evaluation)
        if result.held:
            with conn.cursor() as cur:
                cur.executemany(q["insert_held_breach"], [{
                    "org_id": h.breach.org_id, "compressor_id": h.breach.compressor_id,
                    "rule_id": h.breach.rule_id, "hour": h.breach.hour, "held_by": h.held_by,
                    "detail": h.detail} for h in result.held])
    return result


class HoldActivities:
    """The ``check_silence`` activity; dependencies come in through ``__init__``."""

    def __init__(self, pool: ConnectionPool[Any], *, connect_wait: float = 5.0) -> None:
        # connect_wait: seconds to wait for a pooled connection; with PostgreSQL away the
        # check fails fast and the alert workflow notifies rather than wait
        self._pool = pool
        self._connect_wait = connect_wait
        self._q = queries("silences")

    @activity.defn(name=CHECK_SILENCE)
    def check_silence(self, query: HoldQuery) -> HoldDecision:
        """Whether a silence or a maintenance window holds this alert back at ``query.at``.

        Read in the alert's own tenant transaction: a silence of another organization can
        never match it (row-level security).
        """
        with (self._pool.connection(timeout=self._connect_wait) as conn,
              tenant(conn, query.org_id)):
            silences = [silence_from_row(r) for r in conn.execute(
                self._q["silences_for_unit"],
                {"at": query.at, "compressor_id": query.compressor_id}).fetchall()]
            windows = windows_between(conn, query.at - timedelta(days=1),
                                      query.at + timedelta(days=1))
        return decide(silences, windows, query)
