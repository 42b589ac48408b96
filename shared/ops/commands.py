"""Operations an operator runs against a deployment: typed functions, no UI (`leadsync` is the UI).

    status     cursors, queue depths, outcome counts          storage only
    failures   parked people and poison messages, with why    storage only
    retry      un-park and re-enqueue; poison back to queue   storage only
    explain    one person: link, base values, activity        storage only
    backfill   link existing pairs by email and enqueue them  storage + Marketo + Dataverse

Storage-only operations take any `State` (an opened `StateStores`, or the app's
`Services`), so they work with nothing but a connection string. Listings meant for a
screen (status, failures) never carry email addresses: `redact` masks them. `explain`
is the operator looking at one person, so it shows values as stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared import telemetry
from shared.errors import BadMessage, StateConflict
from shared.jsonable import to_jsonable
from shared.ops import backlog as backlogs
from shared.ops import health
from shared.ops.health import HealthSnapshot
from shared.runtime import Services
from shared.state import activity
from shared.state.activity import ActivityLog, Entry
from shared.state.cursors import MARKETO_CHANGES, MARKETO_DELETES, CursorStore, dataverse_feed
from shared.state.eventbuffer import EventBuffer
from shared.state.links import PARKED, Link, LinkStore, person_key
from shared.state.pause import Pause, PauseStore
from shared.state.pending import PENDING_QUEUE, Pending
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, MAX_IDS, Work, WorkQueues, chunked
from shared.sync.poison import POISON_PERSON, decode_stored, fingerprint

FEEDS = (MARKETO_CHANGES, MARKETO_DELETES, dataverse_feed("lead"), dataverse_feed("contact"))
WORK_QUEUES = (FROM_MARKETO, FROM_DYNAMICS)
POISONED_QUEUES = (*WORK_QUEUES, PENDING_QUEUE)  # every queue whose unreadable messages go to `<queue>-poison`
POISON_SUFFIX = "-poison"
PEEK_MAX = 32  # Azure Queue Storage returns at most 32 messages per peek
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PERSON = re.compile(rf"^(?:m?(?P<id>\d+)|(?P<entity>lead|contact):(?P<guid>{_GUID}))$")
Progress = Callable[[str, int], None]  # (stage, records just done)


class State(Protocol):
    """The stores an operation reads and writes; `Services` is one."""

    @property
    def storage(self) -> Storage: ...
    @property
    def links(self) -> LinkStore: ...
    @property
    def cursors(self) -> CursorStore: ...
    @property
    def activity(self) -> ActivityLog: ...
    @property
    def queues(self) -> WorkQueues: ...


@dataclass(frozen=True)
class StateStores:
    storage: Storage
    links: LinkStore
    cursors: CursorStore
    activity: ActivityLog
    queues: WorkQueues

    @classmethod
    def open(cls, connection_string: str, *, table_prefix: str = "leadsync") -> StateStores:
        storage = Storage(connection_string, table_prefix=table_prefix)
        return cls(storage, LinkStore(storage), CursorStore(storage), ActivityLog(storage), WorkQueues(storage))


def redact(text: str) -> str:
    """`text` with every email address replaced."""
    return telemetry.redact(text)


# -- status ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedStatus:
    name: str
    last_moved: datetime | None  # the cursor's last save; None: the feed was never polled
    last_poll: datetime | None = None  # from the health snapshot (a quiet poll moves no cursor)
    lagging: bool | None = None  # None: unknown (no health snapshot)


@dataclass(frozen=True)
class QueueStatus:
    name: str
    depth: int  # approximate, as the service reports it
    poison: bool


@dataclass(frozen=True)
class Status:
    at: datetime
    feeds: tuple[FeedStatus, ...]
    queues: tuple[QueueStatus, ...]
    links: int
    parked: int  # links parked now
    last_hour: dict[str, int]
    last_day: dict[str, int]
    health: HealthSnapshot | None = None  # the health page's verdict, when the app settings were there
    paused: Pause | None = None  # the background sync's pause (Marketo daily quota), from storage
    backlog: backlogs.Backlog | None = None  # people waiting and the ETA (`shared.ops.backlog`)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = to_jsonable(replace(self, health=None))
        body["health"] = self.health.to_dict() if self.health is not None else None
        if self.backlog is not None:
            body["backlog"]["text"] = self.backlog.describe()
        return body


COUNTED = ("synced", "created", "linked", "collision", "failed", "parked", "moved", "deleted")


def _counted(kinds: Mapping[str, int]) -> dict[str, int]:
    failed = sum(kinds.get(k, 0) for k in (activity.VALIDATION_FAILED, activity.REJECTED))
    return {k: failed if k == "failed" else kinds.get(k, 0) for k in COUNTED}


def status(state: State, svc: Services | None = None) -> Status:
    """One look at the whole deployment; reads every link row once (to count parked ones).

    With the app's services, the health snapshot (`shared.ops.health`) supplies the queue
    depths, outcome counts, last polls and the verdict; without, they come from storage.
    """
    now = datetime.now(UTC)
    cursors = {c.name: c for c in state.cursors.all()}
    total = parked = 0
    for link in state.links.all():
        total += 1
        parked += link.state == PARKED
    if svc is not None:
        snap = health.snapshot(svc, now=now)
        polls = {f.feed: f for f in snap.feeds}
        feeds = tuple(FeedStatus(name, cursors[name].updated_at if name in cursors else None,
                                 polls[name].last_poll if name in polls else None,
                                 polls[name].lagging if name in polls else None) for name in FEEDS)
        queues = tuple(QueueStatus(q.name, q.depth, q.poison) for q in snap.queues)
        return Status(now, feeds, queues, total, parked, _counted(snap.last_hour.by_kind),
                      _counted(snap.last_day.by_kind), snap, snap.paused, snap.backlog)
    feeds = tuple(FeedStatus(name, cursors[name].updated_at if name in cursors else None) for name in FEEDS)
    queues = tuple(QueueStatus(name + suffix, state.queues.depth(name + suffix), bool(suffix))
                   for suffix in ("", POISON_SUFFIX) for name in WORK_QUEUES)
    day = list(state.activity.since(now - timedelta(days=1)))
    hour = activity.counted(e for e in day if e.at >= now - timedelta(hours=1))
    paused = PauseStore(state.storage).current(now, fresh=True)
    waiting = backlogs.measure(state.storage, {q.name: q.depth for q in queues}, hour, batch_size=MAX_IDS,
                               buffered=EventBuffer(state.storage, state.queues).pending().values(),
                               pending=state.queues.depth(PENDING_QUEUE), paused=paused is not None)
    return Status(now, feeds, queues, total, parked, _counted(hour), _counted(activity.counted(day)),
                  paused=paused, backlog=waiting)


# -- failures --------------------------------------------------------------------------
@dataclass(frozen=True)
class ParkedRecord:
    marketo_id: int
    entity: str | None
    dynamics_id: str | None
    since: datetime | None
    retry_pending: bool  # un-parked by `retry`; the applier has not decided yet
    kind: str | None  # of the latest failure entry
    reason: str  # the latest failure's message (emails masked)
    at: datetime | None  # when that failure was logged
    operation_id: str | None


@dataclass(frozen=True)
class PoisonMessage:
    queue: str  # the poison queue
    source_queue: str
    message_id: str
    inserted_on: datetime | None
    body: str  # emails masked
    reason: str  # why it was poisoned: the logged reason, or what we can tell


@dataclass(frozen=True)
class Failures:
    parked: tuple[ParkedRecord, ...]
    poison: tuple[PoisonMessage, ...]
    poison_depth: dict[str, int]  # whole queue, when more than PEEK_MAX wait

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


def _parked_record(state: State, link: Link) -> ParkedRecord:
    last = next((e for e in state.activity.for_person(link.person, limit=50) if e.kind in activity.LISTED_KINDS),
                None)
    return ParkedRecord(
        link.marketo_id, link.entity, link.dynamics_id, link.updated_at, link.parked_fingerprint is None,
        last.kind if last else None, redact(last.message) if last else (link.parked_reason or "parked"),
        last.at if last else None, (last.operation_id or None) if last else None)


def parked_links(state: State, marketo_ids: Iterable[int] | None = None) -> list[Link]:
    wanted = set(marketo_ids) if marketo_ids is not None else None
    return [lk for lk in state.links.all() if lk.state == PARKED and (wanted is None or lk.marketo_id in wanted)]


def poison_reasons(state: State) -> dict[tuple[str, str], str]:
    """(work queue, body) -> the reason logged when the message was poisoned as unreadable;
    ("id", poison message id) -> the reason noted for a message the host poisoned by itself."""
    reasons: dict[tuple[str, str], str] = {}
    for e in reversed(state.activity.for_person(POISON_PERSON, limit=1000)):  # newest wins
        queue, body, noted = e.details.get("queue"), e.details.get("body"), e.details.get("poison_message_id")
        if isinstance(queue, str) and isinstance(body, str):
            reasons[(queue, body)] = e.message
        if isinstance(noted, str):
            reasons[("id", noted)] = e.message
    return reasons


def _why_poisoned(source: str, message_id: str, text: str | None, logged: Mapping[tuple[str, str], str]) -> str:
    if ("id", message_id) in logged:
        return logged[("id", message_id)]
    if text is None:
        return "unreadable: not base64-encoded UTF-8 (the host moved it without running the function)"
    for key in ((source, telemetry.redact_body(text)[:2000]), (source, text[:2000])):  # entries before masking
        if key in logged:
            return logged[key]
    try:
        op = _operation_id(source, text)
    except BadMessage as exc:
        return f"unreadable: {exc.reason}"
    return f"failed on every delivery (retries exhausted): see the function logs for op={op}"


def _operation_id(source: str, text: str) -> str:
    """The operation id of a readable message of `source`'s kind; BadMessage when it is not one."""
    return (Pending.from_json(text) if source == PENDING_QUEUE else Work.from_json(text)).operation_id


def failures(state: State) -> Failures:
    parked = tuple(_parked_record(state, lk) for lk in parked_links(state))
    poison, depths = poison_messages(state)
    return Failures(parked, poison, depths)


def poison_messages(state: State) -> tuple[tuple[PoisonMessage, ...], dict[str, int]]:
    """The first PEEK_MAX messages of each poison queue, with why; and each poison queue's depth."""
    logged = poison_reasons(state)
    poison: list[PoisonMessage] = []
    depths: dict[str, int] = {}
    for source in POISONED_QUEUES:
        name = source + POISON_SUFFIX
        depths[name] = state.queues.depth(name)
        # Raw: a message the host could not decode is not base64, and the base64 client fails on it.
        for m in state.storage.raw_queue(name).peek_messages(max_messages=PEEK_MAX):
            stored = str(m.content or "")
            text = decode_stored(stored)
            shown = (text if text is not None else
                     f"(not base64, {len(stored)} characters, sha256 {fingerprint(stored)})")
            poison.append(PoisonMessage(name, source, m.id, m.inserted_on, redact(shown[:2000]),
                                        redact(_why_poisoned(source, m.id, text, logged))))
    return tuple(poison), depths


# -- retry -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PoisonRetry:
    queue: str
    message_id: str
    outcome: str  # "moved" | "would move" | "left" (unreadable: it would only be poisoned again)
    note: str

    @property
    def moved(self) -> bool:
        return self.outcome != "left"


@dataclass(frozen=True)
class RetryResult:
    dry_run: bool
    parked: tuple[int, ...] = ()  # Marketo ids un-parked and re-enqueued (or that would be)
    parked_conflicts: tuple[int, ...] = ()  # changed while we worked; run retry again
    poison: tuple[PoisonRetry, ...] = ()
    operation_ids: tuple[str, ...] = ()  # of the work messages sent for parked people

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


def retry_parked(state: State, *, marketo_ids: Iterable[int] | None = None, dry_run: bool = False) -> RetryResult:
    """Un-park parked people (clear the fingerprint, ETag-checked) and enqueue them, reason "retry".

    The link keeps state "parked" until the applier merges the person again: it then
    stores the agreed base, or parks the person again with the new failure.
    """
    links = parked_links(state, marketo_ids)
    if dry_run:
        return RetryResult(True, tuple(lk.marketo_id for lk in links))
    done: list[int] = []
    conflicts: list[int] = []
    for link in links:
        current: Link | None = link
        for _ in range(3):  # an applier may be saving this very row
            if current is None or current.state != PARKED:
                break
            try:
                state.links.save(replace(current, parked_fingerprint=None))
            except StateConflict:
                current = state.links.get(link.marketo_id)
                continue
            done.append(link.marketo_id)
            break
        else:
            conflicts.append(link.marketo_id)
    work = chunked("marketo", "changed", done, reason="retry")
    state.queues.send(work)  # after the un-park, so the applier cannot skip the person
    return RetryResult(False, tuple(done), tuple(conflicts), operation_ids=tuple(w.operation_id for w in work))


def retry_poison(state: State, *, dry_run: bool = False, hold_s: int = 120,
                 message_ids: Iterable[str] | None = None) -> RetryResult:
    """Move readable poison messages (only `message_ids`, when given) back to their work queue;
    unreadable ones stay.

    Readable: base64 of a valid work message, or a valid work message stored without its
    base64 (sent by hand); it is re-sent base64-encoded, so the trigger can read it. Each
    message is deleted from the poison queue only after its re-send succeeded, so a crash
    in between duplicates a message (harmless: messages carry ids) but never loses one. A
    dry run peeks (at most 32 per queue) and changes nothing.
    """
    out: list[PoisonRetry] = []
    wanted = set(message_ids) if message_ids is not None else None
    for source in POISONED_QUEUES:
        poison = state.storage.raw_queue(source + POISON_SUFFIX)
        if dry_run:
            for m in poison.peek_messages(max_messages=PEEK_MAX):
                if wanted is None or m.id in wanted:
                    out.append(_poison_verdict(source, m.id, str(m.content or ""), moved=False)[0])
            continue
        held = []
        while True:
            batch = list(poison.receive_messages(messages_per_page=PEEK_MAX, max_messages=PEEK_MAX,
                                                 visibility_timeout=hold_s))
            if not batch:
                break
            for m in batch:
                if wanted is not None and m.id not in wanted:
                    held.append(m)
                    continue
                verdict, text = _poison_verdict(source, m.id, str(m.content or ""), moved=True)
                if text is not None:
                    state.storage.queue(source).send_message(text)
                    poison.delete_message(m)
                else:
                    held.append(m)
                out.append(verdict)
        for m in held:  # visible again at once, for the next look
            poison.update_message(m, visibility_timeout=0)
    return RetryResult(dry_run, poison=tuple(out))


def _poison_verdict(source: str, message_id: str, stored: str, *, moved: bool) -> tuple[PoisonRetry, str | None]:
    """The verdict on one stored poison message, and the work message text to re-send (None: leave it)."""
    decoded = decode_stored(stored)
    text = decoded if decoded is not None else stored  # a work message sent by hand without its base64
    try:
        op = _operation_id(source, text)
    except BadMessage as exc:
        reason = exc.reason if decoded is not None else "not base64-encoded UTF-8, nor a work message"
        return PoisonRetry(source + POISON_SUFFIX, message_id, "left", f"unreadable: {reason}"), None
    outcome = "moved" if moved else "would move"
    note = f"{outcome} to {source} (op={op})"
    return PoisonRetry(source + POISON_SUFFIX, message_id, outcome, note), text


# -- explain ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Explanation:
    person: str  # as asked
    link: Link | None
    activity: tuple[Entry, ...]  # newest first

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


def parse_person(text: str) -> tuple[int | None, tuple[str, str] | None]:
    """A Marketo id ("1042", "m1042") or a Dynamics record ("lead:<guid>", "contact:<guid>")."""
    m = _PERSON.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a Marketo lead id, lead:<guid> or contact:<guid>")
    if m["id"]:
        return int(m["id"]), None
    return None, (m["entity"], m["guid"].lower())


def link_of(state: State, marketo_id: int | None, record: tuple[str, str] | None) -> Link | None:
    """The link of a person as `parse_person` read it: by Marketo id, else by Dynamics record."""
    if marketo_id is not None:
        return state.links.get(marketo_id)
    assert record is not None
    return state.links.by_dynamics(*record)


def explain(state: State, person: str, *, limit: int = 50) -> Explanation:
    marketo_id, record = parse_person(person)
    link = link_of(state, marketo_id, record)
    if link is not None:
        marketo_id = link.marketo_id
        if record is None and link.entity and link.dynamics_id:
            record = (link.entity, link.dynamics_id.lower())
    keys = [person_key(marketo_id)] if marketo_id is not None else []
    if record is not None:
        keys.append(f"{record[0]}:{record[1]}")  # outcomes logged before a Marketo id existed
    entries = [e for key in keys for e in state.activity.for_person(key, limit=limit)]
    entries.sort(key=lambda e: e.at, reverse=True)
    return Explanation(person, link, tuple(entries[:limit]))
