"""The inline SVG chart: values land on the right coordinates, limits and markers are drawn,
missing hours break the line, and the markup is well-formed SVG without scripts."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from altaviz.app.web.chart import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Scale,
    fmt_value,
    render_chart,
    scale_for,
)

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 3, 2, 0, tzinfo=UTC)


def _parse(svg: str) -> ET.Element:
    # the markup uses HTML-style unquoted attributes for class/role: quote them for XML
    fixed = (svg.replace("class=chart", "class='chart'").replace("role=img", "role='img'")
             .replace("class=point", "class='point'").replace("class=series", "class='series'"))
    return ET.fromstring(fixed)


def _points(poly: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in poly.attrib["points"].split()]  # type: ignore[misc]


def test_scale_maps_the_window_and_the_range_onto_the_plot_area() -> None:
    s = Scale(T0, T0 + timedelta(hours=72), 0.0, 20.0)
    assert s.x(T0) == LEFT
    assert s.x(T0 + timedelta(hours=72)) == WIDTH - RIGHT
    assert s.x(T0 + timedelta(hours=36)) == (LEFT + WIDTH - RIGHT) / 2
    assert s.y(0.0) == HEIGHT - BOTTOM
    assert s.y(20.0) == TOP
    assert s.y(10.0) == (TOP + HEIGHT - BOTTOM) / 2


def test_scale_includes_the_limits_even_when_the_values_stay_below_them() -> None:
    s = scale_for([(T0, 5.0), (T0 + timedelta(hours=1), 6.0)], T0, T0 + timedelta(hours=2),
                  [8.0, 12.0])
    assert s.low <= 5.0 and s.high >= 12.0


def test_values_map_to_coordinates_and_limits_and_markers_are_drawn() -> None:
    start, end = T0, T0 + timedelta(hours=72)
    points = [(T0 + timedelta(hours=h), 4.0 + h * 0.1) for h in range(1, 73)]
    svg = render_chart(points, start=start, end=end, unit="mm/s RMS", label="vibration",
                       warning=8.0, critical=12.0, breach_hour=T0 + timedelta(hours=60),
                       acknowledged_at=T0 + timedelta(hours=62, minutes=30))
    root = _parse(svg)
    scale = scale_for(points, start, end, [8.0, 12.0])
    (poly,) = root.findall("s:polyline", NS)
    coords = _points(poly)
    assert len(coords) == 72
    for (t, v), (x, y) in zip(points, coords, strict=True):
        assert (x, y) == (scale.x(t), scale.y(v))
    # a larger value is drawn higher (smaller y)
    assert coords[-1][1] < coords[0][1]
    lines = {tuple(sorted(ln.attrib.get("class", "").split())): ln
             for ln in root.findall("s:line", NS) if ln.attrib.get("class")}
    warning, critical = lines[("limit", "warning")], lines[("critical", "limit")]
    assert float(warning.attrib["y1"]) == scale.y(8.0) == float(warning.attrib["y2"])
    assert float(critical.attrib["y1"]) == scale.y(12.0)
    assert float(critical.attrib["y1"]) < float(warning.attrib["y1"])
    breach, ack = lines[("breach", "marker")], lines[("ack", "marker")]
    assert float(breach.attrib["x1"]) == scale.x(T0 + timedelta(hours=60))
    assert float(ack.attrib["x1"]) == scale.x(T0 + timedelta(hours=62, minutes=30))
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "warning 8" in texts and "critical 12" in texts
    assert "breach" in texts and "acknowledged" in texts
    assert root.find("s:title", NS).text == "vibration hourly mean (mm/s RMS)"  # type: ignore[union-attr]
    assert "<script" not in svg and "style=" not in svg


def test_missing_hours_break_the_line_and_a_lone_hour_is_a_dot() -> None:
    h = lambda n: T0 + timedelta(hours=n)  # noqa: E731
    points: list[tuple[datetime, float | None]] = [
        (h(1), 5.0), (h(2), 5.5), (h(3), None), (h(4), 6.0), (h(5), 6.5), (h(8), 7.0)]
    root = _parse(render_chart(points, start=h(0), end=h(10)))
    polys = root.findall("s:polyline", NS)
    assert [len(_points(p)) for p in polys] == [2, 2]
    assert len(root.findall("s:circle", NS)) == 1
    assert not [ln for ln in root.findall("s:line", NS) if "limit" in ln.attrib.get("class", "")]


def test_points_outside_the_window_are_left_out_and_no_data_says_so() -> None:
    svg = render_chart([(T0 - timedelta(hours=1), 100.0)], start=T0,
                       end=T0 + timedelta(hours=72), warning=8.0)
    assert "no hourly data in this window" in svg
    assert "<polyline" not in svg


def test_label_text_is_escaped() -> None:
    svg = render_chart([], start=T0, end=T0 + timedelta(hours=1), label="<b>x</b>")
    assert "<b>" not in svg and "&lt;b&gt;" in svg


def test_values_are_rounded_to_three_significant_figures() -> None:
    assert [fmt_value(v) for v in (10.823333333333332, 350.0, 0.016666666, 12.0, 0.0,
                                   1234.4)] == ["10.8", "350", "0.0167", "12", "0", "1234"]


def test_alert_window_keeps_the_breach_and_a_timely_acknowledgement_in_view() -> None:
    from altaviz.app.web.console_store import alert_window

    breach = T0 + timedelta(hours=100)
    # newest data 5 h after the breach: the window ends there
    assert alert_window(breach, breach + timedelta(hours=5)) == (
        breach - timedelta(hours=67), breach + timedelta(hours=5))
    # an acknowledgement after the newest data stretches the window to show it
    ack = breach + timedelta(hours=9)
    assert alert_window(breach, breach + timedelta(hours=5), ack)[1] == ack
    # data long after the breach: the breach stays in view, 48 h from the end
    assert alert_window(breach, breach + timedelta(days=30))[1] == breach + timedelta(hours=48)
    # an acknowledgement months later does not move the window
    assert alert_window(breach, breach, breach + timedelta(days=90))[1] == breach
    # no data at all: the window ends at the breach
    assert alert_window(breach, None) == (breach - timedelta(hours=72), breach)

