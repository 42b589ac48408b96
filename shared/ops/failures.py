"""Every record-level failure in one place: `leadsync failures` and `leadsync retry`.

Three sources, one list (`Failure` rows, classified by `shared.ops.failkinds`):

    parked links     linked people whose write failed (the link row says so); all of them
    unlinked people  the activity log's failure entries for people with no link yet: a
                     blank email, a refused Marketo create, a real-time 422 or pause; the
                     person's latest entry must still be a failure (a later success or skip
                     resolves it); read from the by-hour view back to `--since` (default 7 days)
    poison messages  the first 32 of each poison queue

Retry goes through the same work queues as the background sync: a parked person is
un-parked and enqueued (`commands.retry_parked`); a Dynamics record with no link is
enqueued as changed, so linking runs again; a Marketo person with no link is enqueued
with reason `retry-create`, which the applier sends down the real-time create; a poison
message goes back to its queue. Nothing is deleted: a retry that fails again logs a new
failure entry (or parks again), and the failure is listed again.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.jsonable import to_jsonable
from shared.ops import commands
from shared.ops.commands import PoisonMessage, PoisonRetry, State, link_of, parse_person, redact
from shared.ops.failkinds import FailureKind, Filter, Side, Verdict, classify, fix

__all__ = ["Failure", "FailureList", "FailureRetry", "Filter", "collect", "retry", "select", "with_views"]
from shared.state import activity
from shared.state.activity import Entry
from shared.state.links import Link, person_key
from shared.state.workqueue import chunked
from shared.sync.apply import RETRY_CREATE
from shared.sync.poison import POISON_PERSON

REAL_TIME = "marketo->dynamics"  # the direction of every failure the real-time create logs
LOOKBACK = timedelta(days=7)  # how far back unlinked failures are looked for without --since
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CSV_COLUMNS = ("ref", "kind", "side", "fields", "at", "linked", "marketo_id", "entity", "dynamics_id",
               "operation_id", "message", "fix")


@dataclass(frozen=True)
class Failure:
    ref: str  # the person key ("m1042", "lead:<guid>"), or "<poison queue>/<message id>"
    kind: FailureKind
    side: Side
    fields: tuple[str, ...]
    message: str  # emails masked
    fix: str
    at: datetime | None
    linked: bool  # a parked link; False: a person with no link yet, or a message
    marketo_id: int | None = None
    entity: str | None = None
    dynamics_id: str | None = None
    operation_id: str = ""
    direction: str = ""  # of the failed write ("marketo->dynamics", "dynamics->marketo"), "" when none
    retry_pending: bool = False  # un-parked by `retry`; the applier has not decided yet

    def csv_row(self) -> list[str]:
        return [self.ref, self.kind.value, self.side.value, ";".join(self.fields),
                self.at.isoformat() if self.at else "", "yes" if self.linked else "no",
                "" if self.marketo_id is None else str(self.marketo_id), self.entity or "", self.dynamics_id or "",
                self.operation_id, self.message, self.fix]


@dataclass(frozen=True)
class FailureList:
    at: datetime
    looked_since: datetime  # how far back the activity log was read for people with no link
    failures: tuple[Failure, ...]  # newest first
    poison_depth: dict[str, int] = field(default_factory=dict)  # whole queue, when more than 32 wait

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(f.csv_row() for f in self.failures)
        return out.getvalue()


def collect(state: State, flt: Filter | None = None, *, now: datetime | None = None) -> FailureList:
    """Every open failure that `flt` matches (default: all), newest first."""
    now = now or datetime.now(UTC)
    flt = flt or Filter()
    start = flt.since if flt.since is not None else now - LOOKBACK
    rows = [_parked(state, lk) for lk in commands.parked_links(state)]
    rows += _unlinked(state, start)
    poison, depths = commands.poison_messages(state)
    rows += [_poisoned(m) for m in poison]
    kept = [r for r in rows if flt.matches(r.kind, r.side, r.fields, r.at)]
    kept.sort(key=lambda r: r.at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return FailureList(now, start, tuple(kept), depths)


def _latest_failure(entries: Iterable[Entry]) -> Entry | None:
    return next((e for e in entries if e.kind in activity.LISTED_KINDS), None)


def _row(e: Entry, verdict: Verdict, **link: Any) -> Failure:
    return Failure(e.person, verdict.kind, verdict.side, verdict.fields, redact(e.message), verdict.fix, e.at,
                   operation_id=e.operation_id, direction=e.direction, **link)


def _parked(state: State, link: Link) -> Failure:
    entry = _latest_failure(state.activity.for_person(link.person, limit=50))
    if entry is None:  # its entry is gone from the log: the link still says it is parked
        verdict = Verdict(FailureKind.PARKED, Side.MARKETO, ())
        message, at, operation_id, direction = link.parked_reason or "parked", link.updated_at, "", ""
    else:
        verdict = classify(entry.person, entry.kind, entry.direction, entry.details)
        message, at, operation_id, direction = redact(entry.message), entry.at, entry.operation_id, entry.direction
    return Failure(link.person, verdict.kind, verdict.side, verdict.fields, message, verdict.fix, at, True,
                   link.marketo_id, link.entity, link.dynamics_id, operation_id, direction,
                   retry_pending=link.parked_fingerprint is None)


def _unlinked(state: State, start: datetime) -> list[Failure]:
    seen: set[str] = set()
    out: list[Failure] = []
    for e in state.activity.since(start, kinds=activity.FAILURE_KINDS):
        if e.person in seen or e.person in ("", POISON_PERSON):
            continue
        seen.add(e.person)
        try:
            marketo_id, record = parse_person(e.person)
        except ValueError:
            continue  # not a person's key: nothing to retry it through
        if link_of(state, marketo_id, record) is not None:
            continue  # linked since (a success), being created now, or parked (listed from the link)
        latest = state.activity.for_person(e.person, limit=1)
        if latest and latest[0].kind not in activity.FAILURE_KINDS:
            continue  # a later outcome (a skip, a link that ended) settled it
        where: dict[str, Any] = {"linked": False, "marketo_id": marketo_id}
        if record is not None:
            where.update(entity=record[0], dynamics_id=record[1])
        out.append(_row(e, classify(e.person, e.kind, e.direction, e.details), **where))
    return out


def _poisoned(m: PoisonMessage) -> Failure:
    return Failure(f"{m.queue}/{m.message_id}", FailureKind.POISON_MESSAGE, Side.QUEUE, (), m.reason,
                   fix(FailureKind.POISON_MESSAGE, Side.QUEUE), m.inserted_on, False)


def with_views(state: State, listed: FailureList) -> dict[str, Any]:
    """`listed` as JSON, with the parked people and poison messages among it as `commands.failures`
    shows them (`parked`, `poison`: the shapes scripts already read)."""
    refs = {f.ref for f in listed.failures}
    views = commands.failures(state)
    parked = [p for p in views.parked if person_key(p.marketo_id) in refs]
    poison = [m for m in views.poison if f"{m.queue}/{m.message_id}" in refs]
    return {**listed.to_dict(), "parked": to_jsonable(parked), "poison": to_jsonable(poison)}


# -- retry ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FailureRetry:
    dry_run: bool
    retried: tuple[str, ...] = ()  # refs re-enqueued (or that would be)
    not_retried: dict[str, str] = field(default_factory=dict)  # ref -> why not
    parked_conflicts: tuple[int, ...] = ()  # changed while we worked: run retry again
    poison: tuple[PoisonRetry, ...] = ()
    operation_ids: tuple[str, ...] = ()  # of the work messages sent

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


def select(listed: FailureList, people: Sequence[str]) -> tuple[list[Failure], dict[str, str]]:
    """The listed failures of `people` (Marketo ids, person keys, records or poison refs), and
    why each one matching nothing was left out. ValueError for text naming no person."""
    chosen: list[Failure] = []
    missing: dict[str, str] = {}
    for text in people:
        if "/" not in text and not _GUID.fullmatch(text.strip()):
            parse_person(text)  # raises for text that names no person
        hits = [f for f in listed.failures if _names(f, text)]
        if not hits:
            missing[text] = "no open failure for this person (widen --since to look further back)"
        chosen += [f for f in hits if f not in chosen]
    return chosen, missing


def _names(f: Failure, text: str) -> bool:
    if f.kind is FailureKind.POISON_MESSAGE:
        return text.strip() in (f.ref, f.ref.rsplit("/", 1)[-1])
    try:
        marketo_id, record = parse_person(text)
    except ValueError:
        return False  # a poison message's id
    if marketo_id is not None:
        return f.marketo_id == marketo_id or f.ref == person_key(marketo_id)
    return record is not None and (f.entity, (f.dynamics_id or "").lower()) == record


def retry(state: State, chosen: Sequence[Failure], *, dry_run: bool = False,
          not_retried: dict[str, str] | None = None) -> FailureRetry:
    """Re-enqueue `chosen` through the work queues (see the module's docstring); a dry run writes nothing."""
    skipped = dict(not_retried or {})
    parked = [f.marketo_id for f in chosen if f.linked and f.marketo_id is not None]
    marketo = [f.marketo_id for f in chosen if not f.linked and f.marketo_id is not None]
    dynamics: dict[str, list[str]] = {"lead": [], "contact": []}
    for f in chosen:
        if not f.linked and f.entity in dynamics and f.dynamics_id:
            dynamics[f.entity].append(f.dynamics_id)
    for f in chosen:
        if not f.linked and f.marketo_id is not None and f.direction != REAL_TIME:
            # The real-time create is the only path that makes a Dynamics record for a Marketo person.
            skipped[f.ref] = "no link, and not a failed create: nothing to re-send (see `leadsync explain`)"
            marketo.remove(f.marketo_id)
    messages = [f.ref.rsplit("/", 1)[-1] for f in chosen if f.kind is FailureKind.POISON_MESSAGE]
    refs = tuple(f.ref for f in chosen if f.ref not in skipped and f.kind is not FailureKind.POISON_MESSAGE)
    poison = commands.retry_poison(state, dry_run=dry_run, message_ids=messages).poison if messages else ()
    refs += tuple(f"{p.queue}/{p.message_id}" for p in poison if p.moved)
    skipped.update({f"{p.queue}/{p.message_id}": p.note for p in poison if not p.moved})
    if dry_run:
        return FailureRetry(True, refs, skipped, poison=poison)
    done = commands.retry_parked(state, marketo_ids=parked) if parked else commands.RetryResult(False)
    work = chunked("marketo", "changed", marketo, reason=RETRY_CREATE)
    for entity, ids in dynamics.items():
        work += chunked("dynamics", "changed", ids, entity=entity, reason="retry")
    state.queues.send(work)
    for marketo_id in done.parked_conflicts:
        skipped[person_key(marketo_id)] = "the link changed while retrying: run retry again"
    return FailureRetry(False, tuple(r for r in refs if r not in skipped), skipped, done.parked_conflicts, poison,
                        done.operation_ids + tuple(w.operation_id for w in work))
