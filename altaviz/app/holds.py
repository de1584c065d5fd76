"""Creating, listing and ending silences and maintenance windows (the CLI's and the pages' side).

Every read and write runs in the organization's tenant transaction, so a silence or window can
only name, see or end what belongs to that organization. Input is checked before anything is
written, and every problem is one line naming the value and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import psycopg
import yaml
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from altaviz.core.db import queries, tenant
from altaviz.core.errors import InputError
from altaviz.core.silences import (
    MaintenanceWindow,
    Matchers,
    Recurrence,
    Silence,
    silence_from_row,
    window_from_row,
)
from workflows.alert import SIGNAL_HOLDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90m``, ``2h``, ``1.5d``, ``1w``."""
    m = _DURATION.match(text)
    if m is None:
        raise InputError(f"bad duration {text!r}: expected a number and m, h, d or w "
                         "(e.g. 2h, 90m, 3d)")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def parse_time(text: str, *, now: datetime) -> datetime:
    """``now``, or an ISO 8601 time (without an offset: UTC)."""
    if text.strip().lower() == "now":
        return now
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"bad time {text!r}: expected ISO 8601, e.g. 2026-03-10T06:00-06:00 "
                         "(no offset: UTC), or 'now'") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _check_span(start: datetime, end: datetime) -> None:
    if end <= start:
        raise InputError(f"the end ({end.isoformat()}) is not after the start "
                         f"({start.isoformat()})")


def _check_units(conn: psycopg.Connection[Any], org: str, compressors: Sequence[str],
                 sites: Sequence[str]) -> None:
    """Compressors and sites must be the organization's own (row-level security shows only
    those), so a typo or another organization's unit is an error, not a silence of nothing."""
    if compressors:
        found = {r[0] for r in conn.execute(
            "SELECT compressor_id FROM compressors WHERE compressor_id = ANY(%s)",
            (list(compressors),))}
        missing = [c for c in compressors if c not in found]
        if missing:
            raise InputError(f"compressor {', '.join(missing)} is not part of organization "
                             f"{org} (see `altaviz fleet`)")
    if sites:
        found = {r[0] for r in conn.execute(
            "SELECT site_id FROM sites WHERE site_id = ANY(%s)", (list(sites),))}
        missing = [s for s in sites if s not in found]
        if missing:
            raise InputError(f"site {', '.join(missing)} is not part of organization {org}")


def add_silence(conn: psycopg.Connection[Any], org: str, matchers: Matchers, *,
                starts_at: datetime, ends_at: datetime, created_by: str, comment: str) -> int:
    """Store a silence of ``org``; returns its id."""
    _check_span(starts_at, ends_at)
    if not created_by.strip() or not comment.strip():
        raise InputError("a silence needs --by (who) and --comment (why)")
    with tenant(conn, org):
        _check_units(conn, org, matchers.compressor_ids or (), matchers.site_ids or ())
        row = conn.execute(queries("silences")["insert_silence"], {
            "org_id": org, "compressor_ids": _list(matchers.compressor_ids),
            "site_ids": _list(matchers.site_ids), "rule_ids": _list(matchers.rule_ids),
            "severities": _list(matchers.severities), "starts_at": starts_at,
            "ends_at": ends_at, "created_by": created_by, "comment": comment}).fetchone()
    assert row is not None
    return int(row[0])


def _list(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


def list_silences(conn: psycopg.Connection[Any], org: str, *, now: datetime,
                  every: bool = False) -> list[Silence]:
    """The organization's silences not yet over (every one with ``every``)."""
    with tenant(conn, org):
        rows = conn.execute(queries("silences")["list_silences"],
                            {"now": now, "all": every}).fetchall()
    return [silence_from_row(r) for r in rows]


def expire_silence(conn: psycopg.Connection[Any], org: str, silence_id: int, *, by: str,
                   now: datetime) -> datetime:
    """End a silence now; returns its new end. Alerts it held are released when told
    (:func:`signal_holds_changed`), else within the workflow's re-check interval."""
    q = queries("silences")
    with tenant(conn, org):
        row = conn.execute(q["expire_silence"], {"silence_id": silence_id, "by": by,
                                                 "now": now}).fetchone()
        if row is None:
            known = conn.execute(q["silence_exists"], {"silence_id": silence_id}).fetchone()
            if known is None:
                raise InputError(f"no silence {silence_id} in organization {org} (see "
                                 "`altaviz silence list --org ...`)")
            raise InputError(f"silence {silence_id} already ended at "
                             f"{known[0].astimezone(UTC):%Y-%m-%d %H:%M}Z")
    ended: datetime = row[1]
    return ended


def silence_of(conn: psycopg.Connection[Any], org: str, silence_id: int) -> Silence | None:
    """One silence of ``org`` (ended or not), or None."""
    return next((s for s in list_silences(conn, org, now=datetime.now(UTC), every=True)
                 if s.silence_id == silence_id), None)


def matching_workflows(conn: psycopg.Connection[Any], org: str,
                       matchers: Matchers) -> list[str]:
    """The workflow ids of the organization's unresolved alerts that ``matchers`` match."""
    with tenant(conn, org):
        rows = conn.execute(queries("silences")["open_alert_workflows"]).fetchall()
    return sorted({wid for wid, comp, site, rule, severity in rows if matchers.matches(
        compressor_id=comp, site_id=site, rule_id=rule, severity=severity)})


async def signal_holds_changed(client: Client, workflow_ids: Sequence[str]
                               ) -> tuple[int, list[str]]:
    """Tell these alert workflows that a silence changed, so a held alert re-checks now.

    A signal, not an update: the server accepts it with no worker running, and the workflow
    applies it when one comes back. Returns how many were told and the ids that could not be
    (an alert that resolved meanwhile is not an error: it has nothing to release).
    """
    told, failed = 0, []
    for wid in workflow_ids:
        try:
            await client.get_workflow_handle(wid).signal(SIGNAL_HOLDS)
            told += 1
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                failed.append(wid)
    return told, failed


# --- maintenance windows ----------------------------------------------------------------------

class WindowSpec(BaseModel):
    """One window of a windows file (``extra="forbid"``: a mistyped key is an error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    compressor: StrictStr | None = None
    site: StrictStr | None = None
    reason: Annotated[StrictStr, Field(min_length=1)]
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    every: Recurrence | None = None
    from_: date | None = Field(default=None, alias="from")
    until: date | None = None

    def window(self, org: str, created_by: str) -> MaintenanceWindow:
        """The stored form: one-off bounds, or the recurrence's date range in its zone."""
        if (self.compressor is None) == (self.site is None):
            raise ValueError("give exactly one of compressor and site")
        if self.every is None:
            if self.starts_at is None or self.ends_at is None:
                raise ValueError("a one-off window needs starts_at and ends_at (or give "
                                 "every: for a recurring one)")
            start, end = _aware(self.starts_at), _aware(self.ends_at)
        else:
            if self.starts_at or self.ends_at:
                raise ValueError("a recurring window takes from/until dates, not "
                                 "starts_at/ends_at")
            if self.from_ is None or self.until is None:
                raise ValueError("a recurring window needs from: and until: dates")
            zone = ZoneInfo(self.every.timezone)
            start = datetime.combine(self.from_, time(0), tzinfo=zone).astimezone(UTC)
            end = datetime.combine(self.until + timedelta(days=1), time(0),
                                   tzinfo=zone).astimezone(UTC)
        if end <= start:
            raise ValueError(f"the end ({end.isoformat()}) is not after the start "
                             f"({start.isoformat()})")
        return MaintenanceWindow(org_id=org, compressor_id=self.compressor, site_id=self.site,
                                 starts_at=start, ends_at=end, reason=self.reason,
                                 created_by=created_by, recurrence=self.every)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class WindowsFile(BaseModel):
    """``windows:``, a list of :class:`WindowSpec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = 1
    windows: list[WindowSpec]


def read_windows_file(path: Path, org: str, created_by: str) -> list[MaintenanceWindow]:
    """Validate a windows file; every problem names the file, the entry and the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML: {exc}") from None
    try:
        parsed = WindowsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{path}: {where}: {err['msg']}") from None
    out: list[MaintenanceWindow] = []
    for i, spec in enumerate(parsed.windows):
        try:
            out.append(spec.window(org, created_by))
        except ValueError as exc:
            raise InputError(f"{path}: windows.{i}: {exc}") from None
    return out


def add_window(conn: psycopg.Connection[Any], w: MaintenanceWindow) -> int:
    """Store a window of ``w.org_id``; returns its id."""
    _check_span(w.starts_at, w.ends_at)
    with tenant(conn, w.org_id):
        _check_units(conn, w.org_id, [w.compressor_id] if w.compressor_id else [],
                     [w.site_id] if w.site_id else [])
        row = conn.execute(queries("silences")["insert_window"], {
            "org_id": w.org_id, "compressor_id": w.compressor_id, "site_id": w.site_id,
            "starts_at": w.starts_at, "ends_at": w.ends_at, "reason": w.reason,
            "created_by": w.created_by,
            "recurrence": Jsonb(w.recurrence.model_dump()) if w.recurrence else None,
            "timezone": w.recurrence.timezone if w.recurrence else None}).fetchone()
    assert row is not None
    return int(row[0])


def list_windows(conn: psycopg.Connection[Any], org: str, *, now: datetime,
                 every: bool = False) -> list[MaintenanceWindow]:
    """The organization's windows not yet over (every one with ``every``)."""
    with tenant(conn, org):
        rows = conn.execute(queries("silences")["list_windows"],
                            {"now": now, "all": every}).fetchall()
    return [window_from_row(r) for r in rows]


def remove_window(conn: psycopg.Connection[Any], org: str, window_id: int) -> None:
    """Delete a window of ``org`` (the held breaches it caused stay recorded)."""
    with tenant(conn, org):
        row = conn.execute(queries("silences")["delete_window"],
                           {"window_id": window_id}).fetchone()
    if row is None:
        raise InputError(f"no maintenance window {window_id} in organization {org}")


def held_counts(conn: psycopg.Connection[Any], org: str) -> dict[str, int]:
    """What silences and windows held back in ``org``: breaches kept from opening alerts
    (``maintenance``, ``inhibited``) and notifications held (``silence``, and
    ``maintenance_notifications``)."""
    q = queries("silences")
    with tenant(conn, org):
        counts = {k: int(v) for k, v in conn.execute(q["held_counts"]).fetchall()}
        for by, n in conn.execute(q["silenced_notification_count"]).fetchall():
            key = "silence" if by == "silence" else f"{by or 'other'}_notifications"
            counts[key] = counts.get(key, 0) + int(n)
    return counts
