"""Rich tables for people; the `--json` form of each result is its `to_dict()`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.ops import backfill as backfills
from shared.ops import commands as ops
from shared.ops import preflight

BODY_WIDTH = 60


def when(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = int((now - at).total_seconds())
    if seconds < 120:
        age = f"{seconds}s"
    elif seconds < 7200:
        age = f"{seconds // 60}m"
    elif seconds < 172800:
        age = f"{seconds // 3600}h"
    else:
        age = f"{seconds // 86400}d"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z ({age} ago)"


def short(text: str, width: int = BODY_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def record(entity: str | None, dynamics_id: str | None) -> str:
    return f"{entity}:{dynamics_id}" if entity and dynamics_id else "-"


def status(console: Console, s: ops.Status) -> None:
    snap = s.health
    if snap is not None:
        colour = {"ok": "green", "degraded": "yellow", "failing": "bold red"}.get(snap.status, "")
        console.print(f"Status: [{colour}]{snap.status}[/]")
        for r in snap.reasons:
            console.print(f"  {r.level}: {r.text}")
        quota = snap.quota
        used = (f"{quota.used:,} of {quota.limit:,} calls today" if quota.used is not None
                else f"unknown ({quota.error})")
        console.print(f"Marketo quota: {used}")
    elif s.paused is not None:
        console.print(f"Background sync {s.paused.describe()}")
    if s.backlog is not None:
        console.print(f"Backlog: {s.backlog.describe()}")
    feeds = Table(title="Change feeds", title_justify="left")
    feeds.add_column("feed", no_wrap=True)
    feeds.add_column("cursor last moved")
    if snap is not None:
        feeds.add_column("last poll")
    for f in s.feeds:
        row = [f.name, when(f.last_moved, s.at)]
        if snap is not None:
            row.append(when(f.last_poll, s.at) + (" [bold red]lagging[/]" if f.lagging else ""))
        feeds.add_row(*row)
    queues = Table(title="Queues", title_justify="left")
    queues.add_column("queue", no_wrap=True)
    queues.add_column("depth", justify="right")
    for q in s.queues:
        style = "bold red" if q.poison and q.depth else ""
        queues.add_row(q.name, str(q.depth), style=style)
    outcomes = Table(title="Outcomes", title_justify="left")
    outcomes.add_column("kind")
    outcomes.add_column("last hour", justify="right")
    outcomes.add_column("last day", justify="right")
    for kind in ops.COUNTED:
        label = "parked (poison)" if kind == "parked" else kind
        outcomes.add_row(label, str(s.last_hour[kind]), str(s.last_day[kind]))
    console.print(feeds, queues, outcomes)
    console.print(f"Links: {s.links}, parked now: {s.parked}")


def retry(console: Console, r: ops.RetryResult, *, parked: bool, poison: bool) -> None:
    if parked:
        ids = ", ".join(str(i) for i in r.parked) or "none"
        head = "would un-park and re-enqueue" if r.dry_run else "un-parked and re-enqueued"
        console.print(f"Parked people {head}: {len(r.parked)} ({ids})")
        if r.parked_conflicts:
            console.print(f"Changed while retrying, run again: {', '.join(map(str, r.parked_conflicts))}")
    if poison:
        moved = sum(1 for p in r.poison if p.moved)
        console.print(f"Poison messages {'that would move' if r.dry_run else 'moved'} back: {moved}, "
                      f"left in place: {len(r.poison) - moved}")
        if r.poison:
            table = Table()
            for col in ("poison queue", "message id", "outcome", "note"):
                table.add_column(col)
            for p in r.poison:
                table.add_row(p.queue, p.message_id, p.outcome, p.note)
            console.print(table)


def backfill(console: Console, r: backfills.BackfillReport, *, limit: int) -> None:
    head = "Backfill (dry run: nothing written)" if r.dry_run else "Backfill"
    summary = Table(title=head, title_justify="left", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for entity, count in r.scanned.items():
        summary.add_row(f"{entity}s read", str(count))
    summary.add_row("already linked", str(r.already_linked))
    summary.add_row("new links" + (" (would be made)" if r.dry_run else ""), str(len(r.linked)))
    summary.add_row("no Marketo person with the email", str(len(r.unmatched)))
    summary.add_row("skipped", str(len(r.skipped)))
    console.print(summary)
    if r.linked:
        table = Table(title="New links and their differing fields (winner per merge rules)", title_justify="left")
        for col in ("marketo id", "record", "field", "Marketo", "Dynamics", "winner"):
            table.add_column(col)
        for n in r.linked[:limit]:
            if not n.differences:
                table.add_row(str(n.marketo_id), record(n.entity, n.dynamics_id), "(all equal)", "", "", "")
            for i, d in enumerate(n.differences):
                first = i == 0
                table.add_row(str(n.marketo_id) if first else "", record(n.entity, n.dynamics_id) if first else "",
                              d.field, _value(d.marketo), _value(d.dynamics), f"{d.winner} ({d.rule})")
        console.print(table)
        if len(r.linked) > limit:
            console.print(f"(first {limit} of {len(r.linked)} new links; --json lists all)")
    _skips(console, "Skipped", r.skipped, limit)


def _skips(console: Console, title: str, skips: Sequence[backfills.Skip], limit: int) -> None:
    if not skips:
        return
    table = Table(title=title, title_justify="left")
    table.add_column("record")
    table.add_column("reason")
    for s in skips[:limit]:
        table.add_row(record(s.entity, s.dynamics_id), s.reason)
    console.print(table)


def _value(value: Any) -> str:
    return "(blank)" if value is None or value == "" else short(str(value), 40)


def explain(console: Console, e: ops.Explanation) -> None:
    link = e.link
    head = Table(title=f"Person {e.person}", title_justify="left", show_header=False)
    head.add_column("")
    head.add_column("")
    if link is None:
        head.add_row("link", "none (not linked)")
    else:
        head.add_row("marketo id", str(link.marketo_id))
        head.add_row("dynamics", record(link.entity, link.dynamics_id))
        head.add_row("state", link.state + (f" ({link.parked_reason})" if link.parked_reason else ""))
        head.add_row("updated", when(link.updated_at))
    console.print(head)
    if link is not None:
        base = Table(title="Base values (last agreed by both sides)", title_justify="left")
        base.add_column("field")
        base.add_column("value")
        for name, value in sorted(link.base.items()):
            base.add_row(name, _value(value))
        if not link.base:
            base.add_row("(none yet)", "the next merge reports every difference")
        console.print(base)
    log = Table(title=f"Activity (newest first, {len(e.activity)})", title_justify="left")
    for col in ("at", "kind", "direction", "message", "op"):
        log.add_column(col)
    for a in e.activity:
        log.add_row(f"{a.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z", a.kind, a.direction, a.message, a.operation_id)
    console.print(log)


def check(console: Console, report: preflight.Report, *, warnings: bool) -> None:
    """One line per problem with its fix (never wrapped, so scripts can grep them)."""
    for finding in report.problems:
        console.print(f"PROBLEM {finding.line()}", markup=False, highlight=False, soft_wrap=True)
    if warnings:
        for finding in report.warnings:
            console.print(f"warning {finding.line()}", markup=False, highlight=False, soft_wrap=True)
    used, limit = report.facts.get("marketo_calls_today"), report.facts.get("marketo_daily_quota")
    if used is not None:
        console.print(f"Marketo API calls today: {used} of {limit} (quota left: {max(0, limit - used)})",
                      markup=False, highlight=False, soft_wrap=True)
    hidden = "" if warnings or not report.warnings else " (--warnings to list them)"
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    console.print(f"check: {verdict}, {len(report.warnings)} warning(s){hidden}", markup=False, highlight=False,
                  soft_wrap=True)
