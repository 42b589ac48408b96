"""The last 24 hours by hour, for the health page and its JSON: people waiting, synced, failed,
API calls (Marketo and Dataverse) and poll lag, and the page section that draws them.

Where each number comes from:

    synced, failed     the activity log's by-hour view, counted in the snapshot's own pass
                       over it (no second read)
    waiting            the largest work-queue depth a process saw in the hour
    API calls          requests sent in the hour, summed over every process's row
    poll lag           the longest gap between two polls of a change feed (the deleted-leads
                       feed is polled every few minutes on purpose, so it is in the JSON only)

The last three are the hourly samples of `shared.state.trends`: one query for all 24 hours.
The current hour also counts what the snapshot sees now (queue depths, time since each
feed's last poll), so a stalled poller shows up before anyone writes a sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape

from shared.ops.charts import Point, bar_chart, compact
from shared.state.cursors import MARKETO_DELETES
from shared.state.storage import Storage
from shared.state.trends import HourSample, TrendStore, hour_of

HOURS = 24


@dataclass(frozen=True)
class HourTrend:
    hour: datetime  # start of the hour, UTC
    synced: int = 0
    failed: int = 0
    waiting: int | None = None  # None here and below: no sample for this hour
    marketo_calls: int | None = None
    dataverse_calls: int | None = None
    poll_lag_s: float | None = None  # the worst change feed
    lag_by_feed: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Trends:
    hours: tuple[HourTrend, ...]  # oldest first; the last is the current hour


def collect(storage: Storage, now: datetime, outcomes: Mapping[datetime, tuple[int, int]], *,
            waiting_now: int | None = None, lag_now: Mapping[str, float | None] | None = None) -> Trends:
    """The `HOURS` hours up to `now`'s: `outcomes` is (synced, failed) by hour start, the rest
    comes from the hourly samples (one query), with the live `waiting_now` and `lag_now` folded
    into the current hour."""
    current = hour_of(now)
    first = current - timedelta(hours=HOURS - 1)
    samples = dict(TrendStore(storage).hours(first, current))
    stored = set(samples)  # hours some process wrote: their call counts are known, even when 0
    live = HourSample(current, backlog=waiting_now,
                      lag={f: s for f, s in (lag_now or {}).items() if s is not None})
    samples[current] = samples[current].merged(live) if current in samples else live
    hours = []
    for n in range(HOURS):
        start = first + timedelta(hours=n)
        synced, failed = outcomes.get(start, (0, 0))
        s = samples.get(start)
        if s is None:
            hours.append(HourTrend(start, synced, failed))
            continue
        recorded = start in stored
        change_lags = [v for f, v in s.lag.items() if f != MARKETO_DELETES]
        hours.append(HourTrend(start, synced, failed, s.backlog,
                               s.marketo_calls if recorded else None, s.dataverse_calls if recorded else None,
                               max(change_lags) if change_lags else None, dict(sorted(s.lag.items()))))
    return Trends(tuple(hours))


# --------------------------------------------------------------------------- the page section


def section(t: Trends | None) -> str:
    """The "Last 24 hours" card: six small charts and, folded, the same numbers as a table."""
    if t is None or not t.hours:
        return ""
    charts = (
        ("People waiting", "waiting", "waiting", [h.waiting for h in t.hours], "", compact),
        ("Synced", "synced", "synced", [h.synced for h in t.hours], "good", compact),
        ("Failed", "failed", "failed", [h.failed for h in t.hours], "bad", compact),
        ("Marketo API calls", "marketo", "calls", [h.marketo_calls for h in t.hours], "", compact),
        ("Dataverse API calls", "dataverse", "calls", [h.dataverse_calls for h in t.hours], "", compact),
        ("Poll lag", "lag", "", [h.poll_lag_s for h in t.hours], "warn", seconds),
    )
    figures = []
    for title, ident, what, values, css, fmt in charts:
        points = [Point(_label(h.hour), v) for h, v in zip(t.hours, values, strict=True)]
        now = values[-1]
        known = [v for v in values if v is not None]
        summary = (f"<b>{escape(fmt(now))}</b> this hour" if now is not None else "no sample this hour")
        peak = f" &middot; peak {escape(fmt(max(known)))}" if known else ""
        chart = bar_chart(f"{title}, last 24 hours by hour", f"trend-{ident}", points, what=what, fmt=fmt, css=css)
        figures.append(f"<figure class=trend><figcaption>{escape(title)}<span>{summary}{peak}</span></figcaption>"
                       f"{chart}<div class=axis aria-hidden=true><span>{escape(_label(t.hours[0].hour))}</span>"
                       "<span>now</span></div></figure>")
    return (f"<section class='card wide' id=trends><h2>Last 24 hours</h2><div class=trends>{''.join(figures)}</div>"
            f"{_table(t)}<p class=note>One bar per hour (UTC), the current hour on the right; a hatched stub: "
            "no sample that hour. API calls count what each instance sent, up to its last sample. Poll lag: "
            "the longest gap between two polls of a change feed.</p></section>")


def _table(t: Trends) -> str:
    def cell(v: float | None, fmt: Callable[[float], str] = "{:,.0f}".format) -> str:
        return f"<td class=num>{'&ndash;' if v is None else escape(fmt(v))}</td>"

    rows = [f"<tr><td>{escape(_label(h.hour))}</td>{cell(h.waiting)}{cell(h.synced)}{cell(h.failed)}"
            f"{cell(h.marketo_calls)}{cell(h.dataverse_calls)}{cell(h.poll_lag_s, seconds)}</tr>"
            for h in reversed(t.hours)]
    return ("<details><summary>The numbers, hour by hour</summary><table class=trendtable><thead><tr>"
            "<th>hour (UTC)</th><th>waiting</th><th>synced</th><th>failed</th><th>Marketo calls</th>"
            f"<th>Dataverse calls</th><th>poll lag</th></tr></thead><tbody>{''.join(rows)}</tbody></table></details>")


def _label(hour: datetime) -> str:
    return f"{hour.astimezone(UTC):%H}:00 UTC"


def seconds(value: float) -> str:
    """A lag for a person: "42 s", "12 min", "3.5 h"."""
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


CSS = """
.trends{display:grid;grid-template-columns:repeat(3,1fr);gap:14px 22px}
@media (max-width:960px){.trends{grid-template-columns:1fr}}
.trend{margin:0}.trend figcaption{display:flex;justify-content:space-between;gap:8px;font-size:12.5px;
 color:var(--muted);margin-bottom:4px}.trend figcaption span{color:var(--ink)}
.chart{display:block;width:100%;height:56px;color:#5b7bb2}.chart.good{color:var(--ok)}.chart.bad{color:var(--bad)}
.chart.warn{color:var(--warn)}.chart rect.col:hover{opacity:.7}
.axis{display:flex;justify-content:space-between;font-size:11px;color:var(--muted);margin-top:2px}
#trends details{margin-top:12px}#trends summary{cursor:pointer;color:var(--muted);font-size:12.5px}
"""
