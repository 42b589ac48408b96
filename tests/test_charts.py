"""The health page's trend charts as a pure function (series -> SVG), and the merge of hourly
samples written by many instances. No I/O: part of `make test-fast`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ops.charts import HEIGHT, MIN_BAR_H, MISSING_H, Point, bar_chart, compact
from shared.ops.trends import seconds
from shared.state.trends import HourSample, merge

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    """The chart as XML (inline SVG in HTML needs no namespace; a parser does)."""
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") in {"col", "missing"}]


def titles(root: ET.Element) -> list[str]:
    return [r.findtext(f"{SVG}title") or "" for r in bars(root)]


def heights(root: ET.Element) -> list[float]:
    return [float(r.get("height") or "nan") for r in bars(root)]


def hours(*values: float | None) -> list[Point]:
    return [Point(f"{h:02d}:00 UTC", v) for h, v in enumerate(values)]


def test_an_empty_series_is_a_titled_chart_that_says_it_has_no_data() -> None:
    root = parse(bar_chart("Synced, last 24 hours", "trend-synced", []))
    assert root.get("role") == "img" and root.get("aria-labelledby") == "trend-synced-t trend-synced-d"
    assert root.findtext(f"{SVG}title") == "Synced, last 24 hours"
    assert root.findtext(f"{SVG}desc") == "No data in this period."
    assert bars(root) == []


def test_a_single_point_fills_the_chart_and_names_its_hour_and_number() -> None:
    root = parse(bar_chart("Synced", "s", [Point("14:00 UTC", 5)], what="synced"))
    (bar,) = bars(root)
    assert bar.get("class") == "col" and float(bar.get("height") or 0) == HEIGHT - 2
    assert titles(root) == ["14:00 UTC: 5 synced"]
    assert root.findtext(f"{SVG}desc") == "Latest 14:00 UTC: 5; highest: 5."


def test_a_missing_hour_is_a_hatched_stub_and_a_zero_is_no_bar() -> None:
    root = parse(bar_chart("Waiting", "w", hours(3, None, 0, 6), what="waiting"))
    assert [b.get("class") for b in bars(root)] == ["col", "missing", "col", "col"]
    assert heights(root) == [(HEIGHT - 2) / 2, MISSING_H, 0.0, HEIGHT - 2]
    assert titles(root) == ["00:00 UTC: 3 waiting", "01:00 UTC: no data", "02:00 UTC: 0 waiting",
                            "03:00 UTC: 6 waiting"]
    assert bars(root)[1].get("fill") == "url(#w-hatch)"


def test_the_latest_known_hour_is_described_when_the_current_one_is_missing() -> None:
    root = parse(bar_chart("Lag", "l", hours(40, 95, None), fmt=seconds))
    assert root.findtext(f"{SVG}desc") == "Latest 01:00 UTC: 95 s; highest: 95 s."


def test_large_values_keep_small_ones_visible_and_read_compactly() -> None:
    root = parse(bar_chart("Calls", "c", hours(1, 12_345_678, 49_999), what="calls"))
    low, high, mid = heights(root)
    assert high == HEIGHT - 2 and low == MIN_BAR_H and MIN_BAR_H <= mid < high
    assert titles(root) == ["00:00 UTC: 1 calls", "01:00 UTC: 12.3M calls", "02:00 UTC: 50.0k calls"]


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (7, "7"), (0.5, "0.5"), (42.4, "42"), (999, "999"), (1_000, "1,000"), (9_999, "9,999"),
    (12_345, "12.3k"), (99_949, "99.9k"), (123_456, "123k"), (999_499, "999k"), (999_949, "1.0M"), (1_000_000, "1.0M"),
    (12_345_678, "12.3M"),
])
def test_compact_numbers(value: float, text: str) -> None:
    assert compact(value) == text


def test_every_text_is_escaped() -> None:
    svg = bar_chart('<script>alert("t")</script>', 'x" onload="alert(1)', [Point("<b>&", 3)], what="<i>",
                    css='"><script>')
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg and '" onload="' not in svg
    root = parse(svg)
    assert root.findtext(f"{SVG}title") == '<script>alert("t")</script>'
    assert titles(root) == ["<b>&: 3 <i>"]
    assert root.get("id") == 'x" onload="alert(1)' and root.get("onload") is None


@given(st.lists(st.none() | st.integers(0, 10**9), max_size=48))
def test_any_series_is_well_formed_with_one_bar_per_point_taller_for_more(values: list[int | None]) -> None:
    root = parse(bar_chart("t", "t", hours(*values)))
    drawn = heights(root)
    assert len(drawn) == len(values)
    assert all(0 <= h <= HEIGHT for h in drawn)
    known = [(v, h) for v, h in zip(values, drawn, strict=True) if v is not None]
    for (v1, h1) in known:
        for (v2, h2) in known:
            if v1 < v2:
                assert h1 <= h2
        assert (h1 > 0) == (v1 > 0)


# -- merging the rows of many instances ----------------------------------------------------
HOUR = datetime(2026, 11, 30, 4, tzinfo=UTC)


def test_instances_rows_of_one_hour_add_their_calls_and_keep_the_worst_backlog_and_lag() -> None:
    a = HourSample(HOUR, 100, 40, 7, {"marketo-leadchanges": 31.0, "dataverse-lead": 30.0})
    b = HourSample(HOUR, 5, 2, None, {"marketo-leadchanges": 95.0})
    c = HourSample(HOUR, 1, 0, 12, {})
    other = HourSample(datetime(2026, 11, 30, 3, tzinfo=UTC), 9, 9, 0, {})
    merged = merge([a, other, b, c])
    assert merged[HOUR] == HourSample(HOUR, 106, 42, 12, {"marketo-leadchanges": 95.0, "dataverse-lead": 30.0})
    assert merged[other.hour] == other
    assert merge([b])[HOUR].backlog is None  # nobody looked at the queues: unknown, not zero
