"""The health page as one self-contained HTML document: inline CSS, no scripts, no external assets.

Why here and not in the trigger adapter: the page is a view of a `HealthSnapshot` that tests
and the CLI can render without an HTTP request. Every value is escaped; people appear by
key only; it reloads itself every 30 seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape

from shared.ops.backlog import Backlog, eta_text
from shared.ops.health import Counts, Event, EventsHealth, FeedHealth, HealthSnapshot, QueueHealth, duration
from shared.ops.quota import Quota
from shared.ops.trends import CSS as TRENDS_CSS
from shared.ops.trends import section as trends_section

__all__ = ["REFRESH_S", "render", "render_unavailable"]

REFRESH_S = 30


def render_unavailable(reason: str, *, nonce: str = "") -> str:
    """The page when no snapshot could be taken, saying why (`reason` is escaped)."""
    body = f"<section class=card><h2>Cannot take a snapshot</h2><p>{escape(reason)}</p></section>"
    return _shell("unknown", body, nonce=nonce)


def render(s: HealthSnapshot, *, nonce: str = "") -> str:
    """The health page for `s`; `nonce` marks its style block for the Content-Security-Policy."""
    reasons = "".join(f"<li class={r.level}>{escape(r.text)}</li>" for r in s.reasons)
    body = f"""
<section class="summary {s.status}">
  <div class=pill id=status>{escape(s.status.upper())}</div>
  <div>{f"<ul class=reasons>{reasons}</ul>" if reasons else "<p class=calm>Every poller is on time, nothing is "
                                                            "poisoned and no record failed in the last hour.</p>"}</div>
</section>
<div class=grid>
  {_feeds(s.feeds, s.at)}
  {_queues(s.queues, s.backlog)}
  {_change_events(s.events, s.at)}
  {_activity(s.last_hour, s.last_day, s.counts_complete)}
  {_quota(s.quota)}
</div>
{trends_section(s.trends)}
{_events("Latest collisions", "collisions", s.collisions, s.at, "No collisions in the last 24 hours.")}
{_events("Latest failures", "failures", s.failures, s.at, "No failures in the last 24 hours.")}
"""
    return _shell(s.status, body, at=s.at, nonce=nonce)


def _shell(status: str, body: str, *, at: datetime | None = None, nonce: str = "") -> str:
    stamp = f"{(at or datetime.now(UTC)).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<meta http-equiv=refresh content="{REFRESH_S}">
<meta name=referrer content=no-referrer>
<title>LeadSync health: {escape(status)}</title>
<style nonce="{escape(nonce)}">{_CSS}{TRENDS_CSS}</style></head>
<body><header><h1>LeadSync <span>sync health</span></h1>
<p class=stamp>as of {stamp} &middot; refreshes every {REFRESH_S} s &middot; JSON at <code>/api/health.json</code></p>
</header><main>{body}</main></body></html>
"""


def _feeds(feeds: Iterable[FeedHealth], at: datetime) -> str:
    rows = []
    for f in feeds:
        if f.last_poll is None:
            last, lag = "never", "&ndash;"
        else:
            last, lag = _time(f.last_poll, at), escape(duration(f.lag_s or 0))
        changed = "&ndash;" if f.changed is None else f"{f.changed:,}"
        deleted = "&ndash;" if f.deleted is None else f"{f.deleted:,}"
        limit = "not judged" if f.limit_s is None else escape(duration(f.limit_s))
        rows.append(f"<tr class={'bad' if f.lagging else 'good'}><td class=name><span class=dot></span>"
                    f"{escape(f.feed)}</td><td class=num>{last}</td><td class=num>{lag}</td><td class=num>{limit}</td>"
                    f"<td class=num>{changed}</td><td class=num>{deleted}</td></tr>")
    return _card("Pollers", "feeds", "<tr><th>feed</th><th>last poll (UTC)</th><th>lag</th><th>lag limit</th>"
                                     "<th>changed</th><th>deleted</th></tr>", rows,
                 "<p class=note>Changed and deleted: what each feed's last poll found.</p>", cls="card span2")


def _queues(queues: Iterable[QueueHealth], backlog: Backlog | None) -> str:
    rows = [f"<tr class={'bad' if q.poison and q.depth else 'good'}><td class=name>{escape(q.name)}</td>"
            f"<td class='num depth'>{q.depth:,}</td></tr>" for q in queues]
    return _card("Queues", "queues", "<tr><th>queue</th><th>messages</th></tr>", rows, _backlog(backlog))


def _backlog(b: Backlog | None) -> str:
    if b is None:
        return ""
    about = "" if b.exact else "about "
    rate = (" (paused)" if b.paused and b.people else f" at {b.rate_per_h:,.0f} people/h (last hour)"
            if b.rate_per_h else " (nothing handled in the last hour)")
    return (f"<p class=note id=backlog>Backlog: <b>{about}{b.people:,}</b> {'person' if b.people == 1 else 'people'} "
            f"waiting &middot; ETA <b>{escape(eta_text(b.eta_s))}</b>{escape(rate)}</p>")


def _change_events(events: EventsHealth | None, at: datetime) -> str:
    """Per source: ids waiting in the event buffer and when an event last arrived."""
    if events is None:
        return ""
    rows = []
    for source, label in (("dynamics", "Dynamics webhook"), ("marketo", "Marketo campaign")):
        waiting = sum(n for lane, n in events.waiting.items() if lane.startswith(source))
        last = events.last_received.get(source)
        when = (f"<td class=when title='{_time(last, at)} UTC'>{escape(duration((at - last).total_seconds()))} ago</td>"
                if last else "<td class=when>never</td>")
        rows.append(f"<tr><td class=name>{label}</td><td class='num depth'>{waiting:,}</td>{when}</tr>")
    return _card("Change events", "change-events", "<tr><th>source</th><th>waiting</th><th>last received</th></tr>",
                 rows)


def _activity(hour: Counts, day: Counts, complete: bool) -> str:
    rows = [f"<tr class={cls}><td>{label}</td><td class=num>{a:,}</td><td class=num>{b:,}</td></tr>"
            for label, cls, a, b in (("synced", "good", hour.synced, day.synced),
                                     ("failed", "bad" if hour.failed else "", hour.failed, day.failed),
                                     ("parked", "", hour.parked, day.parked),
                                     ("collisions", "", hour.collisions, day.collisions))]
    note = "" if complete else "<p class=note>More entries than one snapshot reads: day counts are partial.</p>"
    return _card("Records", "activity", "<tr><th></th><th>last hour</th><th>last 24 h</th></tr>", rows, note)


def _quota(q: Quota) -> str:
    fraction = q.fraction
    if fraction is None:
        figure = "<p class=big>unknown</p>"
    else:
        used = "used up" if q.exhausted else f"{q.used or 0:,}"
        level = "bad" if fraction >= 1 else "warn" if fraction >= 0.8 else "good"
        width = min(100.0, fraction * 100)
        share = "under 0.1%" if 0 < fraction < 0.001 else f"{fraction:.1%}"
        figure = (f"<p class=big>{used} <small>of {q.limit:,} calls today ({share})</small></p>"
                  f"<div class='bar {level}'><div style='width:{width:.1f}%'></div></div>")
    error = f"<p class=note>{escape(q.error)}</p>" if q.error else ""
    return (f"<section class='card span2' id=quota><h2>Marketo API quota</h2>{figure}{error}"
            "<p class=note>Shared by every API user of the instance; resets at midnight US Central.</p></section>")


def _events(title: str, ident: str, events: Iterable[Event], at: datetime, empty: str) -> str:
    events = list(events)
    fixes = any(e.fix for e in events)  # failures carry a side and a fix; collisions do not
    rows = [f"<tr><td class=when title='{_time(e.at, at)} UTC'>{escape(duration((at - e.at).total_seconds()))} ago</td>"
            f"<td><code>{escape(e.person)}</code></td><td>{escape((e.failure or e.kind).replace('_', ' '))}</td>"
            + (f"<td class=side>{escape(e.side)}</td>" if fixes else "")
            + f"<td>{escape(e.field)}</td><td class=msg>{escape(e.message)}</td>"
            + (f"<td class=fix>{escape(e.fix)}</td>" if fixes else "") + "</tr>" for e in events]
    if not rows:
        return f"<section class='card wide' id={ident}><h2>{title}</h2><p class=calm>{empty}</p></section>"
    head = ("<tr><th>when</th><th>person</th><th>kind</th>" + ("<th>side</th>" if fixes else "")
            + "<th>field</th><th>what</th>" + ("<th>suggested fix</th>" if fixes else "") + "</tr>")
    return _card(title, ident, head, rows, cls="card wide")


def _card(title: str, ident: str, head: str, rows: list[str], after: str = "", *, cls: str = "card") -> str:
    return (f"<section class='{cls}' id={ident}><h2>{title}</h2>"
            f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>{after}</section>")


def _time(moment: datetime, today: datetime) -> str:
    """UTC time of day, with the date when it is not `today`'s."""
    moment = moment.astimezone(UTC)
    same_day = moment.date() == today.astimezone(UTC).date()
    return f"{moment:%H:%M:%S}" if same_day else f"{moment:%Y-%m-%d %H:%M:%S}"


_CSS = """
:root{--ok:#1a7f4b;--warn:#b26a00;--bad:#c0392b;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f5f6f8}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 28px;display:flex;align-items:baseline;
 gap:18px;flex-wrap:wrap}
h1{font-size:20px;margin:0}h1 span{font-weight:400;color:var(--muted)}
.stamp{margin:0;color:var(--muted);font-size:13px}
main{padding:20px 28px;max-width:1280px;margin:0 auto}
.summary{display:flex;align-items:center;gap:20px;background:#fff;border:1px solid var(--line);
 border-left:6px solid var(--ok);border-radius:10px;padding:14px 20px;margin-bottom:18px}
.summary.degraded{border-left-color:var(--warn)}.summary.failing{border-left-color:var(--bad)}
.pill{font-weight:700;letter-spacing:.06em;color:#fff;background:var(--ok);border-radius:999px;padding:6px 16px;
 font-size:15px}
.degraded .pill{background:var(--warn)}.failing .pill{background:var(--bad)}
.reasons{margin:0;padding-left:18px}.reasons li.failing{color:var(--bad);font-weight:600}
.reasons li.degraded{color:#7a4a00}
.calm{color:var(--muted);margin:0}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:18px;margin-bottom:18px}
.span2{grid-column:span 2}
@media (max-width:960px){.grid{grid-template-columns:1fr}.span2{grid-column:auto}}
td.name,td.when{white-space:nowrap}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 18px;margin-bottom:18px}
.grid .card{margin-bottom:0}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.07em;color:var(--muted);margin:0 0 10px}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;padding:4px 8px 6px 0;
 border-bottom:1px solid var(--line)}
td{padding:6px 8px 6px 0;border-bottom:1px solid #f0f2f5;vertical-align:top}
tr:last-child td{border-bottom:0}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th:not(:first-child){text-align:right}
.wide th{text-align:left !important}
tr.bad td{color:var(--bad);font-weight:600}
.dot{display:inline-block;width:8px;height:8px;border-radius:50%;background:var(--ok);margin-right:8px}
tr.bad .dot{background:var(--bad)}
code{font:12.5px ui-monospace,"DejaVu Sans Mono",monospace;background:#f0f2f5;padding:1px 5px;border-radius:4px}
.msg{color:#344054}
.big{font-size:22px;font-weight:600;margin:4px 0 10px}.big small{font-size:13px;font-weight:400;color:var(--muted)}
.bar{height:10px;background:#eef0f3;border-radius:5px;overflow:hidden}
.bar div{height:100%;background:var(--ok)}.bar.warn div{background:var(--warn)}.bar.bad div{background:var(--bad)}
.note{color:var(--muted);font-size:12.5px;margin:10px 0 0}
"""
