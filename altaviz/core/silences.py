"""Silences, maintenance windows and unit-stop inhibition as pure data and functions.

Silences follow Alertmanager's model: matchers on compressor, site, rule and severity (each a
list of exact values, an omitted one matching everything), a start, an end, an author and a
comment; expiring one early sets its end. Maintenance windows are planned per compressor or
site, once or recurring in the site's local time (:class:`Recurrence`). Everything here is
side-effect free: the activities read the rows from PostgreSQL and ask these functions, and
the alert workflow imports the payload models through ``imports_passed_through``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    model_validator,
)

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday",
                             "saturday", "sunday")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as "
                         "America/Chicago)") from exc
    return name


def _hhmm(value: str) -> str:
    try:
        time.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"expected a local time HH:MM (got {value!r})") from exc
    return value


ZoneName = Annotated[StrictStr, AfterValidator(_zone)]
LocalTime = Annotated[StrictStr, AfterValidator(_hhmm)]


# --- silences ------------------------------------------------------------------------------------

class Matchers(BaseModel):
    """Which alerts a silence holds back: every given list must contain the alert's value."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    compressor_ids: tuple[str, ...] | None = None
    site_ids: tuple[str, ...] | None = None
    rule_ids: tuple[str, ...] | None = None
    severities: tuple[Literal["warning", "critical"], ...] | None = None

    def matches(self, *, compressor_id: str, site_id: str, rule_id: str, severity: str) -> bool:
        """Whether an alert with these labels is matched (an omitted matcher matches all)."""
        return all(allowed is None or value in allowed for allowed, value in (
            (self.compressor_ids, compressor_id), (self.site_ids, site_id),
            (self.rule_ids, rule_id), (self.severities, severity)))

    def describe(self) -> str:
        """The matchers as people type them (``compressor=COMP-0012,COMP-0013 rule=...``)."""
        parts = [f"{name}={','.join(values)}" for name, values in (
            ("compressor", self.compressor_ids), ("site", self.site_ids),
            ("rule", self.rule_ids), ("severity", self.severities)) if values]
        return " ".join(parts) or "(every alert)"


class Silence(BaseModel):
    """One silence of one organization."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    silence_id: int
    org_id: str
    matchers: Matchers
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    expired_by: str | None = None

    def active_at(self, at: datetime) -> bool:
        """Whether it holds back notifications at ``at`` (start inclusive, end exclusive)."""
        return _utc(self.starts_at) <= _utc(at) < _utc(self.ends_at)


class HoldQuery(BaseModel):
    """An alert workflow asks whether its notifications are held back now (activity
    ``check_silence``); ``at`` is the workflow's own time, so the answer is reproducible."""

    org_id: str
    compressor_id: str
    site_id: str
    rule_id: str
    severity: str
    at: datetime


class HoldDecision(BaseModel):
    """The answer: held back until ``until`` (None: notify now), and by what."""

    model_config = ConfigDict(extra="ignore")

    until: datetime | None = None
    reason: Literal["", "silence", "maintenance"] = ""
    silence_ids: list[int] = Field(default_factory=list)
    window_ids: list[int] = Field(default_factory=list)
    detail: str = ""


def silenced_until(silences: Iterable[Silence], *, compressor_id: str, site_id: str,
                   rule_id: str, severity: str, at: datetime) -> tuple[datetime | None,
                                                                        list[int]]:
    """When the matching silences active at ``at`` stop holding the alert back.

    Overlapping or back-to-back matching silences are chained: the answer is the end of the
    last one that starts before the previous one ends, so the alert is re-checked once, when
    nothing holds it any more.
    """
    matching = [s for s in silences if s.matchers.matches(
        compressor_id=compressor_id, site_id=site_id, rule_id=rule_id, severity=severity)]
    probe = _utc(at)
    ids: list[int] = []
    changed = True
    while changed:
        changed = False
        for s in matching:
            if s.silence_id not in ids and s.active_at(probe):
                ids.append(s.silence_id)
                probe = max(probe, _utc(s.ends_at))
                changed = True
    return (probe if ids else None), ids


# --- maintenance windows -------------------------------------------------------------------------

class Recurrence(BaseModel):
    """A window repeating in the site's local time, e.g. every second Tuesday 06:00-14:00.

    ``weekday`` and the local ``start``/``end`` times are required, plus either
    ``nth_of_month`` (1-5, or -1 for the last such weekday of the month: "the second Tuesday
    of every month") or ``every_weeks`` (1 = weekly, 2 = every other week counted from the
    window's first day). ``end`` at or before ``start`` means the window runs past midnight.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: Weekday
    start: LocalTime
    end: LocalTime
    timezone: ZoneName
    every_weeks: Annotated[StrictInt, Field(ge=1, le=52)] | None = None
    nth_of_month: Annotated[StrictInt, Field(ge=-1, le=5)] | None = None

    @model_validator(mode="after")
    def _one_cadence(self) -> Recurrence:
        """Exactly one of ``every_weeks`` and ``nth_of_month``; ``nth_of_month`` never 0."""
        if (self.every_weeks is None) == (self.nth_of_month is None):
            raise ValueError("give exactly one of every_weeks and nth_of_month")
        if self.nth_of_month == 0:
            raise ValueError("nth_of_month: 1-5, or -1 for the last one of the month")
        return self

    def _days(self, first: date, last: date, anchor: date) -> list[date]:
        wd = WEEKDAYS.index(self.weekday)
        out: list[date] = []
        day = first + timedelta(days=(wd - first.weekday()) % 7)
        while day <= last:
            if self.every_weeks is not None:
                anchor_week = anchor - timedelta(days=anchor.weekday())
                week = (day - timedelta(days=day.weekday()) - anchor_week).days // 7
                if week % self.every_weeks == 0:
                    out.append(day)
            else:
                nth = (day.day - 1) // 7 + 1
                last_of_month = (day + timedelta(days=7)).month != day.month
                if nth == self.nth_of_month or (self.nth_of_month == -1 and last_of_month):
                    out.append(day)
            day += timedelta(days=7)
        return out

    def occurrences(self, bound_start: datetime, bound_end: datetime,
                    within: tuple[datetime, datetime]) -> list[tuple[datetime, datetime]]:
        """The occurrences (UTC) overlapping ``within``, inside the window's own bounds."""
        zone = ZoneInfo(self.timezone)
        lo, hi = max(_utc(bound_start), _utc(within[0])), min(_utc(bound_end), _utc(within[1]))
        if lo >= hi:
            return []
        start_t, end_t = time.fromisoformat(self.start), time.fromisoformat(self.end)
        anchor = _utc(bound_start).astimezone(zone).date()
        first = lo.astimezone(zone).date() - timedelta(days=1)
        last = hi.astimezone(zone).date()
        out: list[tuple[datetime, datetime]] = []
        for day in self._days(first, last, anchor):
            begin = datetime.combine(day, start_t, tzinfo=zone)
            end_day = day if end_t > start_t else day + timedelta(days=1)
            finish = datetime.combine(end_day, end_t, tzinfo=zone)
            b, f = max(begin.astimezone(UTC), _utc(bound_start)), min(
                finish.astimezone(UTC), _utc(bound_end))
            if b < hi and f > lo and b < f:
                out.append((b, f))
        return out


class MaintenanceWindow(BaseModel):
    """A planned window on one compressor or every compressor of a site."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    window_id: int = 0
    org_id: str
    compressor_id: str | None = None
    site_id: str | None = None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str = ""
    recurrence: Recurrence | None = None

    def covers_unit(self, compressor_id: str, site_id: str | None) -> bool:
        """Whether the window concerns this compressor (its own, its site's or the org's)."""
        if self.compressor_id is not None:
            return self.compressor_id == compressor_id
        if self.site_id is not None:
            return self.site_id == site_id
        return True

    def spans(self, within: tuple[datetime, datetime]) -> list[tuple[datetime, datetime]]:
        """The stretches of time (UTC) the window is in force within ``within``."""
        if self.recurrence is not None:
            return self.recurrence.occurrences(self.starts_at, self.ends_at, within)
        b, f = max(_utc(self.starts_at), _utc(within[0])), min(_utc(self.ends_at),
                                                                 _utc(within[1]))
        return [(b, f)] if b < f else []

    def active_at(self, at: datetime) -> datetime | None:
        """The end of the stretch in force at ``at``, or None when the window is not."""
        at = _utc(at)
        for b, f in self.spans((at - timedelta(days=2), at + timedelta(days=2))):
            if b <= at < f:
                return f
        return None


def window_until(windows: Iterable[MaintenanceWindow], *, compressor_id: str,
                 site_id: str | None, at: datetime) -> tuple[datetime | None, list[int]]:
    """When the windows in force on this unit at ``at`` end (chained, as for silences)."""
    mine = [w for w in windows if w.covers_unit(compressor_id, site_id)]
    until: datetime | None = None
    ids: list[int] = []
    probe = _utc(at)
    for _ in range(64):  # chained stretches (e.g. back-to-back windows); bounded
        ends = [(w.active_at(probe), w.window_id) for w in mine]
        hit = [(e, i) for e, i in ends if e is not None]
        if not hit:
            break
        end = max(e for e, _ in hit)
        ids += [i for _, i in hit if i not in ids]
        if until is not None and end <= until:
            break
        until = end
        probe = end
    return until, ids


def in_window(windows: Sequence[MaintenanceWindow], compressor_id: str, site_id: str | None,
              hour: datetime) -> MaintenanceWindow | None:
    """The window (if any) in force on this unit during any part of the hour starting at
    ``hour``: an hour a window touches is planned downtime, not a fault."""
    h = _utc(hour)
    for w in windows:
        if w.covers_unit(compressor_id, site_id) and w.spans((h, h + timedelta(hours=1))):
            return w
    return None


def silence_from_row(row: tuple[Any, ...]) -> Silence:
    """A :class:`Silence` from a ``list_silences``/``silences_for_unit`` row."""
    (sid, org, comps, sites, rules, sevs, starts, ends, by, comment, expired_by) = row
    return Silence(silence_id=sid, org_id=org, matchers=Matchers(
        compressor_ids=tuple(comps) if comps else None, site_ids=tuple(sites) if sites else None,
        rule_ids=tuple(rules) if rules else None, severities=tuple(sevs) if sevs else None),
        starts_at=starts, ends_at=ends, created_by=by, comment=comment, expired_by=expired_by)


def window_from_row(row: tuple[Any, ...]) -> MaintenanceWindow:
    """A :class:`MaintenanceWindow` from a ``list_windows``/``windows_between`` row."""
    (wid, org, comp, site, starts, ends, reason, by, recurrence) = row
    return MaintenanceWindow(
        window_id=wid, org_id=org, compressor_id=comp, site_id=site, starts_at=starts,
        ends_at=ends, reason=reason, created_by=by,
        recurrence=Recurrence.model_validate(recurrence) if recurrence else None)


def parse_matchers(specs: Sequence[str], *, known_rules: Iterable[str] | None = None
                   ) -> Matchers:
    """Matchers typed as ``compressor=COMP-0012,COMP-0013``, ``site=...``, ``rule=...``,
    ``severity=warning``; raises ValueError naming the bad one."""
    keys = {"compressor": "compressor_ids", "site": "site_ids", "rule": "rule_ids",
            "severity": "severities"}
    values: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or name not in keys:
            raise ValueError(f"bad matcher {spec!r}: expected NAME=VALUE[,VALUE...] with NAME "
                             "one of compressor, site, rule, severity")
        items = tuple(v.strip() for v in raw.split(",") if v.strip())
        if not items:
            raise ValueError(f"bad matcher {spec!r}: no value after '='")
        if keys[name] in values:
            raise ValueError(f"matcher {name!r} given twice: list the values once, "
                             "separated by commas")
        if name == "severity":
            for v in items:
                if v not in ("warning", "critical"):
                    raise ValueError(f"bad matcher {spec!r}: severity is warning or critical "
                                     f"(got {v!r})")
        if name == "rule" and known_rules is not None:
            known = set(known_rules)
            for v in items:
                if v not in known:
                    raise ValueError(f"bad matcher {spec!r}: unknown rule {v!r} (rules: "
                                     f"{', '.join(sorted(known))})")
        values[keys[name]] = items
    if not values:
        raise ValueError("a silence needs at least one matcher, e.g. compressor=COMP-0012 "
                         "(a silence of every alert would hide the whole fleet)")
    return Matchers.model_validate(values)


# --- inhibition by unit state ---------------------------------------------------------------------

def inhibited(breaches: Sequence[tuple[str, str, datetime]],
              inhibits: dict[str, tuple[str, ...]]) -> set[int]:
    """Indices of breaches (compressor, rule, hour) that another breach inhibits.

    A breach of a rule listed in a firing rule's ``inhibits`` is inhibited when that rule fired
    on the same compressor at the same hour: the stop explains it, and the stop's own alert
    says so. An inhibiting rule is never inhibited itself, and breaches of hours before the
    stop (the unit still ran) are untouched, so alerts that preceded the stop stay as they were.
    """
    stopped: dict[tuple[str, datetime], set[str]] = {}
    for comp, rule, hour in breaches:
        for target in inhibits.get(rule, ()):
            stopped.setdefault((comp, _utc(hour)), set()).add(target)
    return {i for i, (comp, rule, hour) in enumerate(breaches)
            if rule not in inhibits and rule in stopped.get((comp, _utc(hour)), set())}


def stop_spans(rows: Iterable[tuple[str, str, datetime, bool, bool]],
               inhibiting: Iterable[str]) -> dict[str, list[tuple[datetime, datetime | None]]]:
    """When each compressor's stop alert is open and active, from evaluation rows
    (compressor, rule, hour, firing, clear) of the inhibiting rules.

    A span opens at the first hour an inhibiting rule fires on the unit and ends at the hour
    it clears (None: still open), as the stop's alert does in the hourly pipeline: its
    inhibited rules open nothing while it is open and active, even in hours it has no row
    (a unit that stopped and went silent has no data to clear the stop).
    """
    rules = set(inhibiting)
    spans: dict[str, list[tuple[datetime, datetime | None]]] = {}
    open_at: dict[str, datetime] = {}
    for comp, _rule, hour, firing, clear in sorted(
            (r for r in rows if r[1] in rules), key=lambda r: (_utc(r[2]), r[0])):
        at = _utc(hour)
        if firing and comp not in open_at:
            open_at[comp] = at
        elif clear and not firing and comp in open_at:
            spans.setdefault(comp, []).append((open_at.pop(comp), at))
    for comp, at in open_at.items():
        spans.setdefault(comp, []).append((at, None))
    return spans


def in_stop(spans: dict[str, list[tuple[datetime, datetime | None]]], compressor_id: str,
            hour: datetime) -> bool:
    """Whether the unit's stop alert is open and active at ``hour`` (its clear hour
    included: the pipeline reads the open stops before it applies that hour's clears)."""
    at = _utc(hour)
    return any(start <= at and (end is None or at <= end)
               for start, end in spans.get(compressor_id, ()))
