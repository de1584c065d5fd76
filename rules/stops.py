"""When and how a unit stopped, from its 10-minute readings, for the stop rule's alert.

The hourly aggregates say that an hour's mean speed fell under the stop rule's limit, not
when in the hour the unit stopped nor how hot it ran just before. The lake's silver table
holds every 10-minute reading, so the stop is found there: the first reading under the limit
after the last one at or above it, and the hottest stage's discharge temperature last read
while it ran, within :data:`STOP_LOOKBACK` before the end of the breach
hour. Only breaches of a rule that ``inhibits`` others (a stop rule) are looked up, a handful
an hour at most, and each reads only the date partitions of its unit's window. A stop that
cannot be read (no lake on this worker, a read error) leaves the breach as it was: the alert
goes out with the reading and limit instead, never later or not at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

import duckdb

from altaviz.core.payloads import Breach, UnitStop
from altaviz.core.telemetry import METRIC_BY_NAME
from rules.schema import RuleSet
from rules.sources import connect_duckdb

log = logging.getLogger("altaviz.rules.stops")

#: How far before the end of the breach hour the last running reading is looked for. A stop
#: older than this (the unit had been down a day when its first breach was evaluated, e.g.
#: data that arrived late) is not described.
STOP_LOOKBACK = timedelta(hours=24)

#: (time, speed rpm, hottest stage discharge temperature °F) of one 10-minute reading.
Reading = tuple[datetime, float | None, float | None]
StopReader = Callable[[Breach], UnitStop | None]


def find_stop(readings: Sequence[Reading], limit: float) -> UnitStop | None:
    """The stop in time-ordered ``readings``: the first reading with a speed under ``limit``
    after the last reading at or above it (None when the unit never ran in them, or runs at
    the last of them). Readings without a speed are passed over; the discharge temperature
    is the last one read while the unit still ran (a stopped unit's gas cools at once)."""
    with_speed = [r for r in readings if r[1] is not None]
    last_run = max((i for i, r in enumerate(with_speed) if (r[1] or 0.0) >= limit),
                   default=None)
    if last_run is None or last_run + 1 >= len(with_speed):
        return None
    ran_until = with_speed[last_run][0]
    at, speed, _ = with_speed[last_run + 1]
    temps = [r[2] for r in readings if r[0] <= ran_until and r[2] is not None]
    return UnitStop(stopped_at=at, speed_rpm=speed, discharge_temp_f=temps[-1] if temps else None)


class SilverStops:
    """Reads a unit's readings around a stop from the silver Delta table at ``silver_uri``."""

    def __init__(self, silver_uri: str, duck: duckdb.DuckDBPyConnection | None = None) -> None:
        self._uri = silver_uri
        self._duck = duck

    def readings(self, org_id: str, compressor_id: str, start: datetime,
                 end: datetime) -> list[Reading]:
        """The unit's readings in ``[start, end)``, oldest first (only those date partitions
        are opened)."""
        days: list[str] = []
        day = start.astimezone(UTC).date()
        while day <= end.astimezone(UTC).date():
            days.append(day.isoformat())
            day += timedelta(days=1)
        uri = "'" + self._uri.replace("'", "''") + "'"
        dates = ", ".join(f"'{d}'" for d in days)  # ISO dates made above: no quoting issue
        hottest = METRIC_BY_NAME["discharge_temp_max_f"].sql
        # a cursor of the given connection, or a connection of its own: the pipeline
        # evaluates organizations on several threads, and a DuckDB connection is one thread's
        con = self._duck.cursor() if self._duck is not None else connect_duckdb(
            threads=1, memory_limit="256MB")
        try:
            rows = con.execute(
                f"SELECT ts, speed_rpm, {hottest} FROM delta_scan({uri})"
                f" WHERE date IN ({dates}) AND org_id = ? AND compressor_id = ?"
                " AND ts >= ? AND ts < ? ORDER BY ts",
                [org_id, compressor_id, start, end]).fetchall()
        finally:
            con.close()
        return [(r[0].astimezone(UTC), r[1], r[2]) for r in rows]

    def __call__(self, breach: Breach) -> UnitStop | None:
        """The stop behind a stop rule's breach (its threshold is the speed limit)."""
        if breach.threshold is None:
            return None
        end = breach.hour + timedelta(hours=1)
        return find_stop(self.readings(breach.org_id, breach.compressor_id,
                                       end - STOP_LOOKBACK, end), breach.threshold)


def with_stops(breaches: list[Breach], rule_set: RuleSet, reader: StopReader,
               open_stops: Collection[str] = ()) -> list[Breach]:
    """``breaches`` with the stop detail set on those of stop rules (rules that ``inhibits``
    others); a stop that cannot be read leaves its breach unchanged (logged).

    Units in ``open_stops`` already have their stop's alert open, which keeps the stop of its
    opening breach: a unit down for days is read once, not every hour.
    """
    stop_rules = {r.id for r in rule_set.rules if r.inhibits}
    out: list[Breach] = []
    for b in breaches:
        if b.rule_id in stop_rules and b.stop is None and b.compressor_id not in open_stops:
            try:
                stop = reader(b)
            except (duckdb.Error, OSError) as exc:
                log.warning("stop of %s at %s not read from the lake (%s); its alert shows "
                            "the hourly reading", b.compressor_id, b.hour, exc)
                stop = None
            if stop is not None:
                b = b.model_copy(update={"stop": stop})
        out.append(b)
    return out


__all__ = ["STOP_LOOKBACK", "SilverStops", "find_stop", "with_stops"]
