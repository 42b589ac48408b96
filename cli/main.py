"""The `leadsync` command: thin wrappers over `shared.ops.commands`, tables for people, `--json` for scripts.

Every command works with a storage connection string alone (`--connection-string`, or
`AzureWebJobsStorage` as in the Function App), except `backfill` and `resync`, which also
talk to Marketo and Dataverse and so read the same app settings the Function App does.
Errors are one line on stderr; exit status 2 for usage and settings, 1 for a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from azure.core.exceptions import AzureError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cli import render, render_failures, render_resync
from shared.config import Settings
from shared.errors import ConfigError, LeadSyncError
from shared.ops import backfill as backfills
from shared.ops import commands as ops
from shared.ops import failures as fails
from shared.ops import preflight, preflight_probe, webhooks
from shared.ops import resync as resyncs
from shared.rules import fieldmap
from shared.runtime import Services
from shared.state.pause import PauseStore

app = typer.Typer(help="Operate LeadSync: status, failures, retry, resync, backfill, explain, check, pause, resume, "
                       "setup.", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
setup_app = typer.Typer(help="Register the services' change events with LeadSync's event receivers.",
                        no_args_is_help=True)
app.add_typer(setup_app, name="setup")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would change; write nothing.")]


@dataclass(frozen=True)
class Context:
    connection_string: str | None
    table_prefix: str

    def state(self) -> ops.StateStores:
        return ops.StateStores.open(self._connection(), table_prefix=self.table_prefix)

    def services(self, *, check: bool = True) -> Services:
        """The app's services, from the app settings (with this storage and prefix).

        `check` refuses a field map naming fields either service lacks, as the app does at start.
        """
        env = {**os.environ, "AzureWebJobsStorage": self._connection(), "LEADSYNC_TABLE_PREFIX": self.table_prefix}
        svc = Services.from_settings(Settings.from_env(env))
        if check:
            svc.check_field_map()
        return svc

    def _connection(self) -> str:
        if not self.connection_string:
            fail("no storage account: pass --connection-string or set AzureWebJobsStorage", code=2)
        return self.connection_string


def fail(message: str, *, code: int = 1) -> NoReturn:
    typer.echo(f"leadsync: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Known failures as one line on stderr, never a traceback (and never a secret)."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), code=2)
    except LeadSyncError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except AzureError as exc:
        first = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).splitlines()[0]
        fail(f"storage: {first}")


def emit(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.callback()
def main(
    ctx: typer.Context,
    connection_string: Annotated[str | None, typer.Option(
        "--connection-string", envvar="AzureWebJobsStorage", show_envvar=True, show_default=False,
        help="Storage account connection string (Azurite or Azure).")] = None,
    table_prefix: Annotated[str, typer.Option(
        "--table-prefix", envvar="LEADSYNC_TABLE_PREFIX", show_envvar=True,
        help="Prefix of LeadSync's state tables.")] = "leadsync",
) -> None:
    ctx.obj = Context(connection_string, table_prefix)


@app.command()
def status(
    ctx: typer.Context,
    storage_only: Annotated[bool, typer.Option(
        "--storage-only", help="Read storage alone: no health verdict, no Marketo quota call.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Health verdict, cursors and last polls, queue depths (poison too), outcomes in the last hour and day."""
    with one_line_errors():
        state = ctx.obj.state()
        svc = None
        if not storage_only:
            try:
                svc = ctx.obj.services(check=False)
            except ConfigError as exc:
                typer.echo(f"leadsync: {exc}: showing what storage alone tells (no health verdict)", err=True)
        result = ops.status(state, svc)
    if as_json:
        emit(result.to_dict())
    else:
        render.status(Console(), result)


Since = Annotated[str | None, typer.Option("--since", help="Only failures since: 30m, 2h, 1d, 1w or ISO 8601.")]
Kinds = Annotated[list[str] | None, typer.Option("--kind", help="Only this failure kind (repeatable).")]
Sides = Annotated[list[str] | None, typer.Option("--side", help="Only this side: marketo, dynamics, queue.")]
Fields = Annotated[list[str] | None, typer.Option("--field", help="Only failures naming this field (repeatable).")]


def failure_filter(since: str | None, kind: list[str] | None, side: list[str] | None,
                   field: list[str] | None) -> fails.Filter:
    try:
        return fails.Filter.parse(since=since, kinds=kind or (), sides=side or (), fields=field or (),
                                  now=datetime.now(UTC))
    except ValueError as exc:
        fail(str(exc), code=2)


@app.command()
def failures(ctx: typer.Context, since: Since = None, kind: Kinds = None, side: Sides = None, field: Fields = None,
             as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV for a spreadsheet.")] = False,
             as_json: JsonFlag = False) -> None:
    """Every record failure (parked, not linked yet, real-time) and poison message, with a suggested fix."""
    flt = failure_filter(since, kind, side, field)
    with one_line_errors():
        state = ctx.obj.state()
        result = fails.collect(state, flt)
        doc = fails.with_views(state, result) if as_json else {}
    if as_json:
        emit(doc)
    elif as_csv:
        typer.echo(result.to_csv(), nl=False)
    else:
        render_failures.failures(Console(), result)


@app.command()
def retry(
    ctx: typer.Context,
    parked: Annotated[bool, typer.Option("--parked", help="Un-park parked people and re-enqueue them.")] = False,
    poison: Annotated[bool, typer.Option("--poison", help="Move poison messages back to their queue.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Both --parked and --poison.")] = False,
    person: Annotated[list[int] | None, typer.Option(
        "--person", help="Only this parked Marketo lead id (repeatable).")] = None,
    people: Annotated[list[str] | None, typer.Argument(
        help="People as `failures` lists them: 1042, m1042, lead:<guid>, contact:<guid>, or a poison message.",
        show_default=False)] = None,
    since: Since = None, kind: Kinds = None, side: Sides = None, field: Fields = None,
    dry_run: DryRun = False,
    as_json: JsonFlag = False,
) -> None:
    """Retry failures: by person or filter (as `failures` lists them), or all parked people / poison messages."""
    flt = failure_filter(since, kind, side, field)
    if people or not flt.empty:
        with one_line_errors():
            state = ctx.obj.state()
            listed = fails.collect(state, flt)
            try:
                chosen, missing = fails.select(listed, people) if people else (list(listed.failures), {})
            except ValueError as exc:
                fail(str(exc), code=2)
            outcome = fails.retry(state, chosen, dry_run=dry_run, not_retried=missing)
        if as_json:
            emit(outcome.to_dict())
        else:
            render_failures.retry(Console(), outcome)
        return
    parked, poison = parked or everything, poison or everything
    if not (parked or poison):
        fail("say what to retry: a person, a filter (--kind, --since, --side, --field), "
             "or --parked, --poison or --all", code=2)
    with one_line_errors():
        state = ctx.obj.state()
        result = ops.RetryResult(dry_run)
        if parked:
            result = ops.retry_parked(state, marketo_ids=person or None, dry_run=dry_run)
        if poison:
            result = replace(result, poison=ops.retry_poison(state, dry_run=dry_run).poison)
    if as_json:
        emit(result.to_dict())
    else:
        render.retry(Console(), result, parked=parked, poison=poison)


@app.command()
def backfill(
    ctx: typer.Context,
    entity: Annotated[list[str] | None, typer.Option(
        "--entity", help="lead and/or contact (repeatable; default both).")] = None,
    create_missing: Annotated[bool, typer.Option(
        "--create-missing", help="Enqueue records no Marketo person matches, so the app creates the person.")] = False,
    dry_run: DryRun = False,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown per table (JSON lists all).")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Link existing Dynamics records to Marketo people by email, and enqueue them for a first merge."""
    entities = entity or ["lead", "contact"]
    for name in entities:
        if name not in ("lead", "contact"):
            fail(f"--entity {name!r} is not 'lead' or 'contact'", code=2)
    with one_line_errors():
        svc = ctx.obj.services()
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True, disable=as_json) as bar:
            tasks = {e: bar.add_task(f"reading {e}s", total=None) for e in entities}
            result = backfills.backfill(svc, entities=entities, dry_run=dry_run, create_missing=create_missing,
                                  progress=lambda stage, n: bar.advance(tasks[stage], n))
    if as_json:
        emit(result.to_dict())
    else:
        render.backfill(Console(), result, limit=limit)


@app.command()
def resync(
    ctx: typer.Context,
    people: Annotated[list[str] | None, typer.Argument(
        help="Marketo lead ids (1042 or m1042), lead:<guid> / contact:<guid>, or email addresses.",
        show_default=False)] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", help="Also the people in this file, one a line (# starts a comment).")] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every linked person.")] = False,
    field: Annotated[str | None, typer.Option(
        "--field", help="Every linked person whose last agreed values lack this mapped field (new to the map).")]
    = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Read both sides and show, per person and field, what would change and who wins; "
                          "write nothing.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="People shown in the preview table (JSON lists all).")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Put linked people back through the background sync (batched, under the app's call budget)."""
    named = bool(people or file)
    if sum((named, everyone, field is not None)) != 1:
        fail("say who to resync: people (ids, records, emails or --file), --all, or --field NAME", code=2)
    try:
        targets = [resyncs.parse_target(p) for p in people or []]
        if file is not None:
            targets += resyncs.parse_lines(file.read_text(encoding="utf-8").splitlines())
    except (ValueError, OSError) as exc:
        fail(f"--file {file}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc), code=2)
    if named and not targets:
        fail(f"--file {file} names nobody", code=2)
    with one_line_errors():
        svc = ctx.obj.services(check=dry_run)
        try:
            chosen = (resyncs.select_all(svc) if everyone else resyncs.select_people(svc, targets) if named
                      else resyncs.select_missing_field(svc, str(field)))
        except ValueError as exc:
            fail(str(exc), code=2)
        if chosen.not_linked:
            fail("nothing resynced: " + "; ".join(f"{n.text}: {n.why}" for n in chosen.not_linked))
        result = (resyncs.preview if dry_run else resyncs.resync)(svc, list(chosen.links))
    if as_json:
        emit(result.to_dict())
    else:
        render_resync.report(Console(), result, limit=limit)


@app.command()
def explain(
    ctx: typer.Context,
    person: Annotated[str, typer.Argument(help="A Marketo lead id, or lead:<guid> / contact:<guid>.")],
    limit: Annotated[int, typer.Option("--limit", help="Activity entries to show.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """One person: the link, the base values both sides last agreed on, and the activity log."""
    try:
        ops.parse_person(person)
    except ValueError as exc:
        fail(str(exc), code=2)
    with one_line_errors():
        result = ops.explain(ctx.obj.state(), person, limit=limit)
    if as_json:
        emit(result.to_dict())
    else:
        render.explain(Console(), result)


@app.command()
def check(
    ctx: typer.Context,
    warnings: Annotated[bool, typer.Option("--warnings", help="Also list warnings (they never fail the check).")]
    = False,
    as_json: JsonFlag = False,
) -> None:
    """Preflight: credentials, permissions, mapped fields, activity type, change tracking, storage, quota."""
    with one_line_errors():
        try:
            svc = ctx.obj.services(check=False)
        except AzureError as exc:  # opening the services creates the tables: nothing else can be checked
            report = preflight.Report([preflight_probe.storage_unreachable(exc)])
        else:
            report = preflight_probe.run(svc)
    if as_json:
        emit(report.to_dict())
    else:
        render.check(Console(), report, warnings=warnings)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def pause(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Why: shown on the health page and by status.")]
    = "paused with `leadsync pause`",
    as_json: JsonFlag = False,
) -> None:
    """Pause the background sync on every instance until `resume` (the real-time endpoint keeps serving)."""
    with one_line_errors():
        stopped = PauseStore(ctx.obj.state().storage).operator_pause(reason)
    if as_json:
        emit({"paused": True, "because": stopped.because, "since": stopped.since.isoformat()})
    else:
        typer.echo(f"Background sync {stopped.describe()}; every instance stops within seconds and work waits "
                   "on its queues. `leadsync resume` ends it.")


@app.command()
def resume(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """End an operator's pause: the background sync picks up what waited, within two minutes."""
    with one_line_errors():
        ended = PauseStore(ctx.obj.state().storage).operator_resume()
    if as_json:
        emit({"resumed": ended})
    else:
        typer.echo("Background sync resumed." if ended else "The background sync was not paused by an operator.")


Key = Annotated[str | None, typer.Option(
    "--key", help="The function key of the receiver (default: ?code= in --url).", show_default=False)]
WebhookSecret = Annotated[str | None, typer.Option(
    "--secret", envvar="LEADSYNC_WEBHOOK_SECRET", show_envvar=True, show_default=False,
    help="The shared secret the app checks in x-leadsync-secret, if it has one.")]


@setup_app.command("dataverse-webhook")
def dataverse_webhook(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="https://<app>/api/events/dataverse", show_default=False)],
    key: Key = None,
    secret: WebhookSecret = None,
    name: Annotated[str, typer.Option("--name", help="Name of the service endpoint; steps are named after it.")]
    = "leadsync",
    as_json: JsonFlag = False,
) -> None:
    """Create or update Dataverse's webhook (service endpoint) and its Create/Update/Delete steps on lead and
    contact; running it again updates them in place."""
    with one_line_errors():
        svc = ctx.obj.services(check=False)
        try:
            result = webhooks.register_dataverse(svc.dataverse, svc.fields, url, key=key, secret=secret,
                                                 sync_filter_field=svc.settings.sync_filter_field, name=name)
        finally:
            svc.close()
    if as_json:
        emit(result.to_dict())
        return
    for change in [result.endpoint, *result.steps]:
        typer.echo(f"{change.action:8} {change.table} {change.name!r} ({change.id})")


@setup_app.command("marketo-webhook")
def marketo_webhook(
    url: Annotated[str, typer.Option("--url", help="https://<app>/api/events/marketo", show_default=False)],
    key: Key = None,
    secret: WebhookSecret = None,
) -> None:
    """Print the Marketo webhook and trigger campaign to create by hand (Marketo has no API for them)."""
    with one_line_errors():
        fields = fieldmap.load(os.environ.get("LEADSYNC_FIELD_MAP"))
        typer.echo(webhooks.marketo_definition(url, fields, key=key, secret=secret))


if __name__ == "__main__":
    app()
