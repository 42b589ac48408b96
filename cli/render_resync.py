"""The `leadsync resync` report for people: a summary, and per person and field what would change."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from cli.render import record, short
from shared.ops import resync as resyncs


def report(console: Console, r: resyncs.ResyncReport, *, limit: int) -> None:
    if not r.dry_run:
        console.print(f"Resync: {r.selected} people enqueued in {r.messages} work message(s) "
                      f"(operations {', '.join(r.operation_ids) or '-'}); the background sync merges them.")
        if r.paused:
            console.print(f"Background sync {r.paused}: the messages wait until then.")
        return
    console.print(f"Resync preview (dry run: nothing written): {r.selected} people")
    summary = Table(show_header=False)
    summary.add_column("outcome")
    summary.add_column("people", justify="right")
    for outcome, count in sorted(r.counts.items()):
        summary.add_row(outcome, str(count))
    console.print(summary)
    shown = [p for p in r.people if p.outcome is not resyncs.Outcome.UNCHANGED]
    if not shown:
        console.print("Nothing would change.")
        return
    table = Table(title="What would change, per person and field (who wins, by which rule)", title_justify="left")
    for col in ("marketo id", "record", "field", "Marketo", "Dynamics", "written to", "winner", "why"):
        table.add_column(col)
    for p in shown[:limit]:
        head = (str(p.marketo_id), record(p.entity, p.dynamics_id))
        if p.detail:
            table.add_row(*head, f"({p.outcome.value})", "", "", "", "", p.detail)
            head = ("", "")
        for c in p.changes:
            table.add_row(*head, c.field, _value(c.marketo), _value(c.dynamics), c.to, c.winner, c.reason)
            head = ("", "")
    console.print(table)
    if len(shown) > limit:
        console.print(f"(first {limit} of {len(shown)} people; --json lists all)")


def _value(value: Any) -> str:
    return "(blank)" if value is None or value == "" else short(str(value), 40)
