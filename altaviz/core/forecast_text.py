"""How a failure forecast reads in a message: "at this rate reaches 350 F (shutdown) in about
2.5 days (1.8-3.4)".

The forecast itself is computed by the rules layer (rules/forecast.py) and stored in
``predictions``; this module only words it, so messages, pages and the CLI say it alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from altaviz.core.db import queries

#: Suffix of the rule id of a forecast-driven warning (``<rule>_forecast``).
FORECAST_RULE_SUFFIX = "_forecast"
#: Below this many hours a forecast is said in hours, above it in days.
_DAYS_FROM_HOURS = 48.0


@dataclass(frozen=True)
class ForecastNote:
    """A forecast as a message quotes it: the limit and the hours to it, with the 80% band
    (``high_hours`` None: the band is open-ended, the trend may stall)."""

    limit: float
    limit_name: str
    unit: str
    hours: float
    low_hours: float
    high_hours: float | None

    def sentence(self) -> str:
        """The one-sentence forecast, e.g. "at this rate reaches 350 F (shutdown) in about
        2.5 days (1.8-3.4)"."""
        limit = f"{self.limit:.1f}".rstrip("0").rstrip(".")
        target = f"{limit} {self.unit}".strip() + f" ({self.limit_name})"
        days = self.hours >= _DAYS_FROM_HOURS
        scale, word = (24.0, "days") if days else (1.0, "h")

        def num(h: float) -> str:
            return f"{h / scale:.1f}" if days else f"{max(h, 1.0):.0f}"

        if self.high_hours is None or math.isinf(self.high_hours):
            band = f"at least {num(self.low_hours)}"
        else:
            band = f"{num(self.low_hours)}-{num(self.high_hours)}"
        return f"at this rate reaches {target} in about {num(self.hours)} {word} ({band})"


def forecast_line(note: ForecastNote | None) -> list[str]:
    """The message line of a forecast (none without one)."""
    if note is None:
        return []
    return [f"Forecast: {note.sentence()}, 80% band, counting running time only."]


def load_forecast(conn: psycopg.Connection[Any], compressor_id: str, rule_id: str,
                  until: datetime, unit: str) -> ForecastNote | None:
    """The stored forecast of a unit's rule (or of the rule a forecast-driven warning
    belongs to) at ``until`` or up to a day before; None without one. Runs inside
    :func:`altaviz.core.db.tenant`."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(queries("predictions")["forecast_for_alert"], {
            "compressor_id": compressor_id,
            "rule_id": rule_id.removesuffix(FORECAST_RULE_SUFFIX), "until": until}).fetchone()
    if row is None:
        return None
    limit, name, _metric, predicted, low, high, hour = row

    def hours(at: datetime) -> float:
        return (at - hour) / timedelta(hours=1)

    return ForecastNote(limit=float(limit), limit_name=str(name), unit=unit,
                        hours=hours(predicted), low_hours=hours(low),
                        high_hours=None if high is None else hours(high))
