"""Rich tables for `leadsync failures` and `leadsync retry` by person or filter."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.render import short, when
from shared.ops import commands as ops
from shared.ops.failures import FailureList, FailureRetry


def failures(console: Console, listed: FailureList) -> None:
    table = Table(title=f"Failures ({len(listed.failures)})", title_justify="left")
    table.add_column("person / message", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("side", no_wrap=True)
    table.add_column("field")
    table.add_column("when")
    table.add_column("what", ratio=1)
    fixes: dict[tuple[str, str], str] = {}
    for f in listed.failures:
        what = f.message + (" [retry pending]" if f.retry_pending else "") + ("" if f.linked else " (no link)")
        table.add_row(f.ref, f.kind.value, f.side.value, ", ".join(f.fields), when(f.at, listed.at), what)
        fixes.setdefault((f.kind.value, f.side.value), f.fix)
    console.print(table)
    if fixes:
        console.print("Suggested fixes:")
        for (kind, side), text in sorted(fixes.items()):
            console.print(f"  {kind} ({side}): {text}", markup=False)
    console.print(f"(people with no link: failures since {listed.looked_since:%Y-%m-%d %H:%M}Z; --since to change)")
    total = sum(listed.poison_depth.values())
    shown = sum(1 for f in listed.failures if f.kind == "poison_message")
    if total > shown:
        console.print(f"(poison queues hold {total} messages; the first {ops.PEEK_MAX} of each are read)")


def retry(console: Console, r: FailureRetry) -> None:
    head = "Would re-enqueue" if r.dry_run else "Re-enqueued"
    console.print(f"{head}: {len(r.retried)}")
    for ref in r.retried:
        console.print(f"  {ref}")
    if r.not_retried:
        console.print(f"Not retried: {len(r.not_retried)}")
        for ref, why in r.not_retried.items():
            console.print(f"  {ref}: {short(why, 120)}", markup=False)
    if r.operation_ids:
        console.print(f"Operations: {', '.join(r.operation_ids)} (`leadsync explain <person>` shows the outcome)")
