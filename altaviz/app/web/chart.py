"""A metric's hourly means as inline SVG, drawn on the server.

No JavaScript and no external file: the chart is part of the HTML, so it shows in a phone's
browser, in a mail client that blocks scripts and under the pages' strict Content-Security-
Policy (presentation attributes, no ``style`` attributes). Hours without a mean leave a gap in
the line instead of a straight segment that would pretend to know them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: A small view box with large text: on a 360 px phone the chart is drawn at about 0.7 scale,
#: and its labels must still read; wide screens cap it (``svg.chart`` max-width in the CSS).
WIDTH, HEIGHT = 480, 230
#: Plot area inside the SVG's view box: room for the value axis on the left and times below.
LEFT, RIGHT, TOP, BOTTOM = 50, 8, 12, 30
FONT = 15

WARNING_COLOUR = "#ef8f00"
CRITICAL_COLOUR = "#c62828"
LINE_COLOUR = "#1565c0"


def fmt_value(value: float) -> str:
    """A reading rounded as a gauge shows it: 3 significant figures, no trailing zeros."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass(frozen=True)
class Scale:
    """Maps times and values to the SVG's coordinates (y grows downwards)."""

    start: datetime
    end: datetime
    low: float
    high: float

    def x(self, t: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        frac = (t - self.start).total_seconds() / span
        return round(LEFT + frac * (WIDTH - LEFT - RIGHT), 1)

    def y(self, v: float) -> float:
        span = (self.high - self.low) or 1.0
        frac = (v - self.low) / span
        return round(HEIGHT - BOTTOM - frac * (HEIGHT - TOP - BOTTOM), 1)


def scale_for(points: Sequence[tuple[datetime, float | None]], start: datetime,
              end: datetime, limits: Sequence[float | None]) -> Scale:
    """A scale showing every point and every limit, with a little headroom."""
    values = [v for _, v in points if v is not None and math.isfinite(v)]
    values += [v for v in limits if v is not None and math.isfinite(v)]
    if not values:
        return Scale(start, end, 0.0, 1.0)
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    low = 0.0 if low >= 0 and low - pad < 0 else low - pad
    return Scale(start, end, low, high + pad)


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    raw = (high - low) / count
    if raw <= 0:
        return [low]
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * step:
            step *= mult
            break
    first = math.ceil(low / step) * step
    out, v = [], first
    while v <= high + 1e-9:
        out.append(round(v, 10))
        v += step
    return out


def _segments(points: Sequence[tuple[datetime, float | None]]
              ) -> list[list[tuple[datetime, float]]]:
    """Runs of consecutive hours with a mean; a missing hour (None or absent) breaks a run."""
    runs: list[list[tuple[datetime, float]]] = []
    prev: datetime | None = None
    for t, v in sorted(points, key=lambda p: p[0]):
        if v is None or not math.isfinite(v):
            prev = None
            continue
        if prev is None or t - prev > timedelta(hours=1):
            runs.append([])
        runs[-1].append((t, v))
        prev = t
    return runs


def render_chart(points: Sequence[tuple[datetime, float | None]], *, start: datetime,
                 end: datetime, unit: str = "", label: str = "",
                 warning: float | None = None, critical: float | None = None,
                 breach_hour: datetime | None = None,
                 acknowledged_at: datetime | None = None) -> str:
    """The inline ``<svg>`` of hourly means between ``start`` and ``end``.

    Args:
        points: (hour, mean) pairs; None where the hour had no reading.
        warning, critical: limits drawn as dashed horizontal lines, when known.
        breach_hour: marked with a vertical line (the hour the alert opened on).
        acknowledged_at: marked with a vertical line and a dot.
    """
    inside = [(t, v) for t, v in points if start <= t <= end]
    scale = scale_for(inside, start, end, [warning, critical])
    esc = html.escape
    title = f"{label} hourly mean" + (f" ({unit})" if unit else "")
    parts = [f"<svg class=chart xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} "
             f"{HEIGHT}' width='100%' role=img aria-label='{esc(title)}'>",
             f"<title>{esc(title)}</title>",
             f"<rect x='{LEFT}' y='{TOP}' width='{WIDTH - LEFT - RIGHT}' "
             f"height='{HEIGHT - TOP - BOTTOM}' fill='#fafbfc' stroke='#d5d9e0'/>"]
    for v in _ticks(scale.low, scale.high):
        y = scale.y(v)
        parts.append(f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y}' y2='{y}' "
                     f"stroke='#e3e6ea'/><text x='{LEFT - 4}' y='{y + 4}' font-size='{FONT}' "
                     f"text-anchor='end' fill='#5b6475'>{esc(fmt_value(v))}</text>")
    day = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    short = (end - start) <= timedelta(hours=24)
    while day <= end:
        if start <= day and (day.hour % 6 == 0 if short else day.hour == 0):
            x = scale.x(day)
            parts.append(f"<line x1='{x}' x2='{x}' y1='{HEIGHT - BOTTOM}' "
                         f"y2='{HEIGHT - BOTTOM + 4}' stroke='#5b6475'/>"
                         f"<text x='{x}' y='{HEIGHT - 8}' font-size='{FONT}' "
                         f"text-anchor='middle' fill='#5b6475'>"
                         f"{day.strftime('%H:%M' if short else '%b %d')}</text>")
        day += timedelta(hours=1)
    for name, value, colour in (("warning", warning, WARNING_COLOUR),
                                ("critical", critical, CRITICAL_COLOUR)):
        if value is None:
            continue
        y = scale.y(value)
        parts.append(f"<line class='limit {name}' data-value='{value}' x1='{LEFT}' "
                     f"x2='{WIDTH - RIGHT}' y1='{y}' y2='{y}' stroke='{colour}' "
                     f"stroke-width='1.5' stroke-dasharray='6 4'/>"
                     f"<text x='{WIDTH - RIGHT - 4}' y='{y - 4}' font-size='{FONT}' "
                     f"text-anchor='end' fill='{colour}'>{name} {esc(fmt_value(value))}</text>")
    for marker, t, colour in (("breach", breach_hour, CRITICAL_COLOUR),
                              ("ack", acknowledged_at, "#2e7d32")):
        if t is None or not start <= t <= end:
            continue
        x = scale.x(t)
        text = "breach" if marker == "breach" else "acknowledged"
        # the label on the side with room: left of a line in the right half
        right_half = x > (LEFT + WIDTH - RIGHT) / 2
        parts.append(f"<line class='marker {marker}' x1='{x}' x2='{x}' y1='{TOP}' "
                     f"y2='{HEIGHT - BOTTOM}' stroke='{colour}' stroke-width='1.5'/>"
                     f"<text x='{x - 4 if right_half else x + 4}' "
                     f"y='{TOP + 14 + (16 if marker == 'ack' else 0)}' font-size='{FONT}' "
                     f"text-anchor='{'end' if right_half else 'start'}' "
                     f"fill='{colour}'>{text}</text>")
    for run in _segments(inside):
        coords = " ".join(f"{scale.x(t)},{scale.y(v)}" for t, v in run)
        if len(run) == 1:
            (t, v), = run
            parts.append(f"<circle class=point cx='{scale.x(t)}' cy='{scale.y(v)}' r='2.5' "
                         f"fill='{LINE_COLOUR}'/>")
        else:
            parts.append(f"<polyline class=series points='{coords}' fill='none' "
                         f"stroke='{LINE_COLOUR}' stroke-width='2'/>")
    if not inside:
        parts.append(f"<text x='{WIDTH / 2}' y='{HEIGHT / 2}' font-size='13' "
                     f"text-anchor='middle' fill='#5b6475'>no hourly data in this window</text>")
    parts.append("</svg>")
    return "".join(parts)
