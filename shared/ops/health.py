"""Sync health: one read-only snapshot of how LeadSync is doing, for the health page.

Why one snapshot: the page, its JSON and `leadsync status` must judge the sync the same way.

What a snapshot reads:

    last poll per feed   the heartbeat row of each feed (`shared.state.heartbeat`); the cursor's own
                         `updated_at` is only the fallback when no heartbeat exists yet.
    queue depths         both work queues and their `-poison` queues
    activity             counts of the last hour and day from the by-hour activity partitions,
                         and the latest collisions and failures
    Marketo quota        API calls used today against the daily quota (`shared.ops.quota`).
    trends               the last 24 hours by hour (`shared.ops.trends`)
    change events        ids waiting in the event buffer per lane, and when each source last
                         sent an event (`shared.state.eventbuffer`); shown, never judged
    pause                the shared pause row (`shared.state.pause`), read fresh every time: while
                         it holds, the quota is not asked for (it is used up)
    backlog              people waiting and an ETA at the last hour's pace (`shared.ops.backlog`)

Status, worst first:

    failing   a poller lags more than max(3 x its schedule, 5 minutes) or has never run (the
              deleted-leads feed counts MARKETO_DELETES_EVERY_S as its schedule when longer);
              Marketo's daily quota is used up: "paused until …, because Marketo daily
              quota (607)"
    degraded  messages on a poison queue; failures in the last hour; quota 80 % used
    ok        none of the above

Privacy: entries name people by key only (`m1042`, `lead:<guid>`). Messages are rebuilt
from structured details where they exist, otherwise shown with quoted values and email
addresses redacted, since validation messages quote the offending value.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import telemetry
from shared.clients.marketo import next_reset
from shared.config import poll_schedule
from shared.errors import QuotaExhausted
from shared.jsonable import to_jsonable
from shared.ops import backlog as backlogs
from shared.ops import failkinds
from shared.ops.quota import Quota, forget_reading, marketo_quota
from shared.ops.schedules import schedule_interval
from shared.ops.trends import Trends, collect
from shared.runtime import Services
from shared.state import activity
from shared.state.cursors import MARKETO_CHANGES, MARKETO_DELETES, dataverse_feed
from shared.state.heartbeat import HEARTBEAT_PREFIX
from shared.state.pause import Pause, PauseKind
from shared.state.pending import PENDING_QUEUE
from shared.state.trends import hour_of
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO
from shared.sync.poison import POISON_PERSON

FEEDS: tuple[tuple[str, str], ...] = (  # feed, the setting holding its timer schedule
    (MARKETO_CHANGES, "MARKETO_POLL_SCHEDULE"),
    (MARKETO_DELETES, "MARKETO_POLL_SCHEDULE"),
    (dataverse_feed("lead"), "DATAVERSE_POLL_SCHEDULE"),
    (dataverse_feed("contact"), "DATAVERSE_POLL_SCHEDULE"),
)
QUEUES = (FROM_MARKETO, FROM_DYNAMICS, f"{FROM_MARKETO}-poison", f"{FROM_DYNAMICS}-poison")
QUOTA_WARN = 0.8
LAG_FACTOR = 3
LAG_FLOOR = timedelta(minutes=5)
SYNCED_KINDS = frozenset({activity.SYNCED, activity.CREATED, activity.LINKED, activity.MOVED})

OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}


# --------------------------------------------------------------------------- the snapshot


@dataclass(frozen=True)
class FeedHealth:
    feed: str
    schedule: str
    last_poll: datetime | None  # None: never polled
    lag_s: float | None
    limit_s: float | None  # lag above this is lagging; None: schedule runs less than daily, not judged
    changed: int | None  # what the last poll found (None: no heartbeat, only a cursor)
    deleted: int | None

    @property
    def lagging(self) -> bool:
        if self.limit_s is None:
            return False
        return self.lag_s is None or self.lag_s > self.limit_s


@dataclass(frozen=True)
class QueueHealth:
    name: str
    depth: int

    @property
    def poison(self) -> bool:
        return self.name.endswith("-poison")


@dataclass(frozen=True)
class Counts:
    synced: int = 0
    failed: int = 0
    parked: int = 0
    collisions: int = 0
    by_kind: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    at: datetime
    person: str
    kind: str
    direction: str
    field: str
    message: str
    failure: str = ""  # a failure's kind as `leadsync failures` names it (`shared.ops.failkinds`)
    side: str = ""  # where its fix is made
    fix: str = ""


@dataclass(frozen=True)
class Reason:
    level: str  # DEGRADED | FAILING
    text: str


@dataclass(frozen=True)
class EventsHealth:
    """The change-event buffer: ids waiting per lane, and when each source last sent one."""

    waiting: dict[str, int]
    last_received: dict[str, datetime]


@dataclass(frozen=True)
class HealthSnapshot:
    at: datetime
    status: str
    reasons: tuple[Reason, ...]
    feeds: tuple[FeedHealth, ...]
    queues: tuple[QueueHealth, ...]
    last_hour: Counts
    last_day: Counts
    counts_complete: bool  # False: the day had more entries than a snapshot reads
    collisions: tuple[Event, ...]
    failures: tuple[Event, ...]
    quota: Quota
    paused: Pause | None = None
    trends: Trends | None = None
    backlog: backlogs.Backlog | None = None
    events: EventsHealth | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: datetimes as ISO 8601 UTC strings."""
        body = to_jsonable(self)
        for feed, out in zip(self.feeds, body["feeds"], strict=True):
            out["lagging"] = feed.lagging
        for queue, out in zip(self.queues, body["queues"], strict=True):
            out["poison"] = queue.poison
        body["quota"]["fraction"] = self.quota.fraction
        if self.backlog is not None:
            body["backlog"]["text"] = self.backlog.describe()
        return dict(body)


# --------------------------------------------------------------------------- reading

def snapshot(svc: Services, *, now: datetime | None = None, env: Mapping[str, str] | None = None,
             latest: int = 10, max_entries: int = 100_000) -> HealthSnapshot:
    """How the sync is doing at `now` (default: the current time).

    `env` holds the poll schedule settings (default: the process environment, as the timers
    read them). `latest` bounds the collision and failure lists; at most `max_entries` activity
    entries of the last day are counted (newest first, so the last hour is counted first).
    Raises the storage SDK's errors when storage cannot be read; Marketo errors only make the
    quota unknown.
    """
    now = now or datetime.now(UTC)
    feeds = tuple(_feed(svc, name, poll_schedule(setting, env), now) for name, setting in FEEDS)
    queues = tuple(QueueHealth(name, svc.queues.depth(name)) for name in QUEUES)
    hour, day, complete, collisions, failures, hourly = _activity(svc, now, latest, max_entries)
    paused, quota = _quota(svc, now)
    reasons = _reasons(feeds, queues, hour, quota, paused)
    status = max((r.level for r in reasons), key=_RANK.__getitem__, default=OK)
    trends = collect(svc.storage, now, {h: (c.synced, c.failed) for h, c in hourly.items()},
                     waiting_now=sum(q.depth for q in queues if not q.poison),
                     lag_now={f.feed: f.lag_s for f in feeds})
    waiting = svc.events.pending()
    backlog = backlogs.measure(svc.storage, {q.name: q.depth for q in queues}, hour.by_kind,
                               batch_size=svc.settings.batch_size, buffered=waiting.values(),
                               pending=svc.queues.depth(PENDING_QUEUE), paused=paused is not None)
    events = EventsHealth(waiting, svc.events.last_received())
    return HealthSnapshot(now, status, reasons, feeds, queues, hour, day, complete, collisions, failures, quota,
                          paused, trends, backlog, events)


def _quota(svc: Services, now: datetime) -> tuple[Pause | None, Quota]:
    """The shared pause, else the (cached) usage reading; a 607 seen here pauses the sync too."""
    pauses = svc.pauses
    paused = pauses.current(now, fresh=True)
    if paused is not None and paused.kind == PauseKind.QUOTA:
        return paused, Quota(None, svc.settings.marketo_daily_quota, error=paused.describe(), exhausted=True)
    quota = marketo_quota(svc.marketo, svc.settings.marketo_daily_quota)
    if quota.exhausted:
        # Read before the pause was lifted, or a 607 just now: ask again, then believe it.
        forget_reading(svc.marketo)
        quota = marketo_quota(svc.marketo, svc.settings.marketo_daily_quota)
    if quota.exhausted:
        paused = pauses.quota_exhausted(QuotaExhausted(quota.error or "daily quota reached", next_reset(now)))
        return paused, Quota(None, svc.settings.marketo_daily_quota, error=paused.describe(), exhausted=True)
    return paused, quota


def _feed(svc: Services, name: str, schedule: str, now: datetime) -> FeedHealth:
    beat = svc.cursors.get(HEARTBEAT_PREFIX + name)
    cursor = svc.cursors.get(name)
    changed = deleted = None
    if beat is not None:
        found = json.loads(beat.value)
        changed, deleted = int(found.get("changed", 0)), int(found.get("deleted", 0))
    times = [c.updated_at for c in (beat, cursor) if c is not None]
    last = max(times) if times else None
    interval = schedule_interval(schedule)
    if interval is not None and name == MARKETO_DELETES:
        # polled at most every MARKETO_DELETES_EVERY_S, whatever the timer's schedule
        interval = max(interval, timedelta(seconds=svc.settings.marketo_deletes_every_s))
    limit = max(interval * LAG_FACTOR, LAG_FLOOR).total_seconds() if interval is not None else None
    lag = max(0.0, (now - last).total_seconds()) if last is not None else None
    return FeedHealth(name, schedule, last, lag, limit, changed, deleted)


def _activity(svc: Services, now: datetime, latest: int, max_entries: int
              ) -> tuple[Counts, Counts, bool, tuple[Event, ...], tuple[Event, ...], dict[datetime, Counts]]:
    hour_start, day_start = now - timedelta(hours=1), now - timedelta(days=1)
    hour_kinds: Counter[str] = Counter()
    day_kinds: Counter[str] = Counter()
    by_hour: dict[datetime, Counter[str]] = {}
    collisions: list[Event] = []
    failures: list[Event] = []
    complete = True
    for seen, entry in enumerate(svc.activity.since(day_start), start=1):
        if seen > max_entries:
            complete = False
            break
        if entry.at > now:
            continue
        day_kinds[entry.kind] += entry.count
        by_hour.setdefault(hour_of(entry.at), Counter())[entry.kind] += entry.count
        if entry.at >= hour_start:
            hour_kinds[entry.kind] += entry.count
        if entry.kind == activity.COLLISION and len(collisions) < latest:
            collisions.append(_event(entry))
        elif entry.kind in activity.LISTED_KINDS and len(failures) < latest:
            failures.append(_event(entry))
    return (_counts(hour_kinds), _counts(day_kinds), complete, tuple(collisions), tuple(failures),
            {h: _counts(kinds) for h, kinds in by_hour.items()})


def _counts(kinds: Counter[str]) -> Counts:
    return Counts(
        synced=sum(kinds[k] for k in SYNCED_KINDS),
        failed=sum(kinds[k] for k in activity.FAILURE_KINDS),
        parked=kinds[activity.PARKED],
        collisions=kinds[activity.COLLISION],
        by_kind=dict(sorted(kinds.items())),
    )


def _event(entry: activity.Entry) -> Event:
    d = entry.details
    if entry.kind == activity.COLLISION and {"field", "winner", "rule"} <= d.keys():
        what = "initial link: values differed" if d.get("initial") else "changed on both sides"
        message = f"{what}; {str(d['winner']).capitalize()} wins ({d.get('decided_by') or str(d['rule']) + ' rule'})"
        return Event(entry.at, entry.person, entry.kind, entry.direction, str(d["field"]), message)
    problems = d.get("problems")
    fields = sorted({str(p["field"]) for p in problems if isinstance(p, dict) and p.get("field")}
                    if isinstance(problems, list) else set())
    verdict = (failkinds.Verdict(failkinds.FailureKind.POISON_MESSAGE, failkinds.Side.QUEUE, ())
               if entry.person == POISON_PERSON else
               failkinds.classify(entry.person, entry.kind, entry.direction, d))
    return Event(entry.at, entry.person, entry.kind, entry.direction, ", ".join(fields), redact(entry.message),
                 verdict.kind.value, verdict.side.value, verdict.fix)


def redact(text: str) -> str:
    """`text` without quoted values or email addresses (service messages quote the value)."""
    return telemetry.redact(text, quoted=True)


# --------------------------------------------------------------------------- status


def _reasons(feeds: tuple[FeedHealth, ...], queues: tuple[QueueHealth, ...], hour: Counts,
             quota: Quota, paused: Pause | None) -> tuple[Reason, ...]:
    out: list[Reason] = []
    for f in feeds:
        if not f.lagging:
            continue
        if f.last_poll is None:
            out.append(Reason(FAILING, f"{f.feed} has not polled yet"))
        else:
            out.append(Reason(FAILING, f"{f.feed} last polled {duration(f.lag_s or 0)} ago "
                                       f"(limit {duration(f.limit_s or 0)})"))
    if paused is not None:
        out.append(Reason(FAILING, paused.describe()))
    elif quota.fraction is not None and quota.fraction >= QUOTA_WARN:
        out.append(Reason(DEGRADED, f"Marketo daily API quota {quota.fraction:.0%} used"))
    for q in queues:
        if q.poison and q.depth:
            out.append(Reason(DEGRADED, f"{q.depth} message{'s' if q.depth != 1 else ''} on {q.name}"))
    if hour.failed:
        out.append(Reason(DEGRADED, f"{hour.failed} record failure{'s' if hour.failed != 1 else ''} "
                                    "in the last hour"))
    return tuple(out)


def duration(seconds: float) -> str:
    """`seconds` for a person to read: "45 s", "12 min", "3 h 05 min", "4 days"."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} days"
