"""Small bar charts as inline SVG: a pure function from a series to markup, for the health page.

Why hand-written SVG: the page is one self-contained document under a strict
Content-Security-Policy (no scripts, no external assets), so a chart library that draws in
the browser is out, and a handful of <rect>s needs no build step.

Accessibility: each chart is an `img` labelled by its <title>, with a <desc> naming the
latest and the highest value; every bar has its own <title> with the hour and the exact
number (a tooltip on hover); and a missing hour is drawn as a hatched stub so it is never
mistaken for a zero. Every text is escaped, and the markup is well-formed XML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Point", "bar_chart", "compact"]

WIDTH, HEIGHT = 240, 56  # the viewBox; the page scales it to the card's width
GAP = 1.0  # between bars
MISSING_H = 3.0  # the stub drawn for an hour with no sample
MIN_BAR_H = 1.5  # a non-zero value stays visible next to a very large one


@dataclass(frozen=True)
class Point:
    label: str  # what the bar stands for, e.g. "14:00 UTC"
    value: float | None  # None: nothing was measured


def compact(value: float) -> str:
    """`value` in at most five characters or so: 950, 12.3k, 4.1M."""
    v = abs(value)
    if v >= 999_500:
        return f"{value / 1_000_000:.1f}M"
    if v >= 9_999.5:
        return f"{value / 1_000:.0f}k" if v >= 99_950 else f"{value / 1_000:.1f}k"
    if v >= 1_000:
        return f"{value:,.0f}"
    return f"{value:.0f}" if float(value).is_integer() or v >= 10 else f"{value:.1f}"


def bar_chart(title: str, ident: str, points: Sequence[Point], *, what: str = "",
              fmt: Callable[[float], str] = compact, css: str = "") -> str:
    """An SVG bar chart of `points` (oldest first), `title` as its accessible name.

    `what` follows each number in the bar titles ("12 synced"); `fmt` writes a number for a
    person; `css` adds a class to the <svg> (its colour). Bars share one scale from zero to the
    highest value; an empty series draws only the baseline and says so.
    """
    ident = escape(ident, quote=True)
    values = [p.value for p in points if p.value is not None]
    top = max(values, default=0.0)
    slot = WIDTH / len(points) if points else WIDTH
    bars: list[str] = []
    for i, p in enumerate(points):
        x = i * slot + GAP / 2
        w = max(slot - GAP, 0.5)
        if p.value is None:
            bars.append(f'<rect class="missing" x="{x:.2f}" y="{HEIGHT - MISSING_H:.2f}" width="{w:.2f}" '
                        f'height="{MISSING_H:.2f}" fill="url(#{ident}-hatch)">'
                        f"<title>{escape(p.label)}: no data</title></rect>")
            continue
        h = 0.0 if top <= 0 or p.value <= 0 else max(MIN_BAR_H, p.value / top * (HEIGHT - 2))
        number = fmt(p.value) + (f" {what}" if what else "")
        bars.append(f'<rect class="col" x="{x:.2f}" y="{HEIGHT - h:.2f}" width="{w:.2f}" height="{h:.2f}" '
                    'fill="currentColor">'
                    f"<title>{escape(p.label)}: {escape(number)}</title></rect>")
    latest = next((p for p in reversed(points) if p.value is not None), None)
    if latest is None or latest.value is None:
        desc = "No data in this period."
    else:
        desc = (f"Latest {escape(latest.label)}: {escape(fmt(latest.value))}; "
                f"highest: {escape(fmt(top))}.")
    return (f'<svg class="chart {escape(css, quote=True)}" id="{ident}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'preserveAspectRatio="none" aria-labelledby="{ident}-t {ident}-d">'
            f'<title id="{ident}-t">{escape(title)}</title><desc id="{ident}-d">{desc}</desc>'
            f'<defs><pattern id="{ident}-hatch" width="4" height="4" patternUnits="userSpaceOnUse">'
            f'<rect width="4" height="4" fill="#eef0f3"/><path d="M0 4L4 0" stroke="#98a2b3" stroke-width="1"/>'
            f"</pattern></defs>"
            f'<line class="base" x1="0" y1="{HEIGHT - 0.5}" x2="{WIDTH}" y2="{HEIGHT - 0.5}" stroke="#d0d5dd"/>'
            f"{''.join(bars)}</svg>")
