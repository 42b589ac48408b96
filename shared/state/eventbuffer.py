"""The event buffer: webhook calls leave ids here; a short-lived drain packs them into work.

Why a buffer: a bulk import in Dataverse or a Marketo smart-list change fans out into
thousands of webhook calls in seconds, on as many app instances as Azure scales out to.
One work message per call would mean one Marketo read per person; the appliers want 300.

The design, in one table (`<prefix>events`) and one queue (`leadsync-events`):

    lane        one partition per kind of work: marketo-changed, dynamics-lead-changed,
                dynamics-lead-deleted, dynamics-contact-changed, dynamics-contact-deleted
    receiver    upserts one row per id (RowKey = the id: a burst on one record is one row)
                in one transaction with a touch of the lane's marker row `!drain`
                (`If-Match: *`): while the lane's window is open (its drain pending or
                running) that is the whole call. If the
                marker is gone, nothing was written, and the receiver inserts the rows and
                the marker in one transaction instead. Whoever inserts it (one caller per
                quiet lane, atomically, on any instance) sends a drain message to
                `leadsync-events`, invisible for `delay_s` (the coalescing window).
    last        partition `!last`, one row per lane: when a receiver last scheduled its drain
                (once per coalescing window, not per call), for the health page.
    drain       (a queue trigger) reads the lane's rows, sends them as work messages of up
                to 300 ids, deletes each row it read if its ETag is unchanged (a row
                re-upserted meanwhile stays), and then closes the window: it deletes the
                marker and looks once more; ids that came meanwhile open the next window
                (marker and drain message). The marker stays while the drain works, so no
                second drain reads the same rows (each would send them again).
                A drain finding a burst (BUSY_IDS or more at BUSY_PER_S, fewer than a
                message holds) sends the same window's next drain message instead, and so
                on while ids keep coming, until `max_window_s` from the window's opening;
                a window ending with more than 300 ids sends full messages only and leaves
                the rest to the next window. A lane of
                up to `direct_max` ids is applied in the drain's own invocation when the
                caller passes `apply` (one queue hop fewer); if that fails, the ids go in
                a work message.

Why it loses nothing: a receiver either touched the marker before the drain deleted it
(its rows are then in the drain's last look) or finds it gone (its transaction fails
whole), inserts a new one and schedules another drain. Rows are deleted only once their ids
are on a work queue: a direct apply first sends its work invisible for DIRECT_HOLD_S, and
withdraws it when the apply returned (or makes it visible at once when the apply failed), so
a drain that dies mid-apply leaves its work to the queue trigger. A drain that dies is
retried by the queue (its message comes back); a marker left by a receiver that died before
sending its drain message, or
rows left without a marker, are drained by `sweep` from the Dataverse poll timer once a row
is older than `stale_s` (later receivers touch the marker, but their id rows age).
And the pollers still run: an event is a latency hint, never the only way a change arrives.

Cost per event, in storage requests: while a drain is pending, 1 (the transaction; it was 2,
an upsert and a 409 on the marker, when the figures below were measured). Each drain: 1
query per 1,000 rows, 1 delete per distinct id, 1 queue send per 300 ids, the marker's
delete and one more look (when measured: the marker's delete alone), the drain message
itself and the `!last` upsert of the receiver that scheduled it
(measured before that row existed). Measured once on Azurite with a request counter, 1,000
Marketo events for 400 people from 8 callers: 2,000 table requests in the receivers,
1 drain message, 402 table requests in the drain, 2 work messages (a Marketo read each
when applied, where one message per call would be 1,000); 2.4 storage requests per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError, ServiceResponseError

from shared.errors import BadMessage
from shared.state import tablebatch, tablerows
from shared.state.storage import Storage
from shared.state.workqueue import Work, WorkQueues, chunked

log = logging.getLogger("leadsync")

TABLE = "events"
DRAIN_QUEUE = "leadsync-events"
MARKER = "!drain"  # sorts before every id, so a lane's query meets it first
LAST = "!last"  # the partition of the "last event received" rows (no lane's, so no drain or sweep reads it)
DELAY_S = 1  # the coalescing window (LEADSYNC_EVENTS_COALESCE_S): events in it become one drain's work
MAX_WINDOW_S = 30  # how far a busy lane's window may stretch (LEADSYNC_EVENTS_MAX_WINDOW_S)
# A lane is busy (a burst, not a trickle) when a window's first look finds this many ids, at
# this rate since it opened: steady edits at 4 a second, their echoes and their clumps (8
# ids in a second happen) stay below it and keep the 1 s window's latency; a bulk import's
# webhook calls are far above it.
BUSY_IDS = 20
BUSY_PER_S = 6
# A stretched window stays open while its lane grows; it drains once its lane has not grown
# for this long (a shorter lull may be a stall: every receiver waiting on a busy CPU).
QUIET_S = 3
_WITH_MARKER = tablebatch.TRANSACTION_MAX - 1  # id rows that fit in the marker's transaction
DIRECT_MAX = 300  # a drain applies a lane of up to this many ids itself (one work message's worth)
# While a drain applies its lane itself, the work's copy waits this long on the work queue,
# invisible: the rows can go at once (another drain would read them again while the apply
# runs), and a drain that dies mid-apply leaves its work to the queue trigger.
DIRECT_HOLD_S = 60


@dataclass(frozen=True)
class Lane:
    """One kind of work: its partition in the buffer and the work messages it becomes."""

    source: str  # "marketo" | "dynamics"
    kind: str  # "changed" | "deleted"
    entity: str | None = None

    @property
    def key(self) -> str:
        return "-".join(p for p in (self.source, self.entity, self.kind) if p)

    @classmethod
    def from_key(cls, key: str) -> Lane:
        for lane in LANES:
            if lane.key == key:
                return lane
        raise BadMessage(f"no event lane {key!r}")

    def parse_id(self, text: str) -> int | str:
        return int(text) if self.source == "marketo" else text


LANES = (Lane("marketo", "changed"),
         *(Lane("dynamics", kind, entity) for entity in ("lead", "contact") for kind in ("changed", "deleted")))


@dataclass(frozen=True)
class Drained:
    lane: str
    ids: int
    messages: int  # work messages sent
    applied: int = 0  # work items the drain applied itself (one queue hop fewer)
    stretched: bool = False  # the window was extended instead of drained
    held: int = 0  # ids left for the next window (past the last full message of a burst's window)


@dataclass(frozen=True)
class DrainRequest:
    """A drain message: the lane and when its window opened (None for messages sent before
    windows stretched: those are drained as they come); once the window stretched, the ids
    its last look found and when the lane last grew."""

    lane: str
    opened: datetime | None = None
    seen: int = 0
    grew: datetime | None = None  # when a look last found more ids than the one before

    def to_json(self) -> str:
        body = {"lane": self.lane, **({"opened": self.opened.isoformat()} if self.opened else {}),
                **({"seen": self.seen} if self.seen else {}), **({"grew": self.grew.isoformat()} if self.grew else {})}
        return json.dumps(body)

    def looked(self, ids: int, now: datetime) -> DrainRequest:
        """The same window's next drain, after a look at `now` that found `ids`."""
        return replace(self, seen=ids, grew=now if ids > self.seen or self.grew is None else self.grew)


def should_stretch(ids: int, opened: datetime | None, now: datetime, *, delay_s: int, max_window_s: int,
                   batch_size: int, seen: int = 0, grew: datetime | None = None) -> bool:
    """Whether a drain finding `ids` waiting should wait one more window instead: the lane is
    busy (a burst), its ids do not fill a work message yet, and the window's end stays within
    `max_window_s` of its opening; so a burst's ids go in a few full messages, a trickle at once.

    Busy means a burst's rate at the window's first look; once a window has stretched
    (`seen`: the ids its last look found), it stays open while the lane grows, until the
    lane has not grown for QUIET_S (since `grew`). A burst's webhook
    calls slow down while its first ids are applied (the receivers share the CPU and the
    instances), and a rate rule alone would then drain it in many small windows."""
    if opened is None or delay_s <= 0 or ids < BUSY_IDS or ids >= batch_size:
        return False
    elapsed = (now - opened).total_seconds()
    if elapsed + delay_s > max_window_s:
        return False
    if seen > 0:
        return ids > seen or grew is None or (now - grew).total_seconds() < QUIET_S
    return ids >= BUSY_PER_S * max(elapsed, delay_s)


class EventBuffer:
    def __init__(self, storage: Storage, queues: WorkQueues, *, delay_s: int = DELAY_S,
                 batch_size: int = 300, max_window_s: int = MAX_WINDOW_S, direct_max: int = DIRECT_MAX) -> None:
        self._storage = storage
        self._queues = queues
        self.delay_s = delay_s
        self.batch_size = batch_size
        self.max_window_s = max_window_s
        self.direct_max = direct_max

    def add(self, lane: Lane, ids: Sequence[int | str]) -> bool:
        """Buffer `ids`; True when this call scheduled the lane's drain (it was quiet).

        While a drain is pending (the common case in a burst) this is one storage request: the
        ids' rows and a touch of the marker (`If-Match: *`) in one transaction, which fails
        whole if the marker is gone, i.e. once the window's drain is done with its rows."""
        table = self._storage.table(TABLE)
        rows = [{"PartitionKey": lane.key, "RowKey": str(record_id)} for record_id in dict.fromkeys(ids)]
        head, tail = rows[:-_WITH_MARKER], rows[-_WITH_MARKER:]
        for row in head:  # the marker goes with the last rows: these land before it is checked
            tablerows.upsert(table, row)
        now = datetime.now(UTC).isoformat()
        marker = {"PartitionKey": lane.key, "RowKey": MARKER, "at": now}
        upserts = [tablebatch.Op("upsert", row) for row in tail]
        written = False
        for _ in range(3):  # the marker comes and goes only as often as drains run
            touch = [*upserts, tablebatch.Op("replace", marker, etag="*")]
            if _submit_repeatable(table, touch, unless=404):
                return False  # the window's drain is pending or running: its last look reads our rows
            try:
                written = _submit(table, [*upserts, tablebatch.Op("create", marker)], unless=409)
            except ServiceResponseError:
                break  # the POST (not retried) may have happened: write the rows plainly below
            if written:
                break  # this call opened the window
        if not written:  # still racing drains, or unsure: one drain too many is harmless, none is not
            for row in tail:
                tablerows.upsert(table, row)
        self._schedule(table, lane, datetime.fromisoformat(now))
        tablerows.upsert(table, {"PartitionKey": LAST, "RowKey": lane.key, "at": now})
        return True

    def _schedule(self, table: Any, lane: Lane, opened: datetime) -> None:
        """Send the drain of the window whose marker this caller just inserted; if that fails,
        take the marker back, so the next receiver opens the window (or the sweep drains the rows)."""
        try:
            self._send_drain(DrainRequest(lane.key, opened))
        except BaseException:
            delete_row(table, lane.key, MARKER)
            raise

    def _send_drain(self, request: DrainRequest) -> None:
        self._storage.queue(DRAIN_QUEUE).send_message(request.to_json(), visibility_timeout=self.delay_s or None)

    def drain(self, lane_key: str | DrainRequest, *, apply: Callable[[Work], None] | None = None,
              now: datetime | None = None) -> Drained:
        """Pack the lane's buffered ids into work messages; the rows read are deleted after.

        A busy lane whose window may still stretch (`should_stretch`) gets one more drain
        message instead. A window that ends with more ids than a message
        holds (a burst's) sends full messages only: the rest waits for the next window, which
        the burst is still filling (or which drains it once the burst is over), rather than
        going in a small message of its own. `apply`, when given, applies a lane of up to
        `direct_max` ids in this invocation (no second queue hop), its work held invisible on
        the work queue meanwhile (withdrawn after, released at once if the apply raises), so
        an id read is always queued before its row goes.
        """
        request = lane_key if isinstance(lane_key, DrainRequest) else DrainRequest(lane_key)
        lane = Lane.from_key(request.lane)
        table = self._storage.table(TABLE)
        rows = [r for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": lane.key},
                                                select=["PartitionKey", "RowKey"]) if r["RowKey"] != MARKER]
        now = now or datetime.now(UTC)
        if should_stretch(len(rows), request.opened, now, delay_s=self.delay_s,
                          max_window_s=self.max_window_s, batch_size=self.batch_size, seen=request.seen,
                          grew=request.grew):
            self._send_drain(request.looked(len(rows), now))  # if it fails, the queue retries this drain
            return Drained(lane.key, len(rows), 0, stretched=True)
        held = len(rows) % self.batch_size if request.opened and len(rows) > self.batch_size else 0
        if held:
            rows = rows[:-held]
        ids: list[int | str] = []
        for row in rows:
            try:
                ids.append(lane.parse_id(row["RowKey"]))
            except ValueError:
                log.warning("event buffer: dropped row %s/%s, not an id", lane.key, row["RowKey"])
        work = chunked(lane.source, lane.kind, ids, entity=lane.entity, reason="event", size=self.batch_size)
        direct = apply is not None and len(work) == 1 and len(ids) <= self.direct_max
        copy = self._queues.send_held(work[0], hold_s=DIRECT_HOLD_S) if direct else None
        if not direct:
            self._queues.send(work)
        for row in rows:  # only once the work is queued: a drain that dies before is retried whole
            delete_row(table, lane.key, row["RowKey"], etag=row.metadata.get("etag"))
        self._close(table, lane)  # the held ids, and any that came meanwhile, open the next window
        if apply is None or copy is None:
            return Drained(lane.key, len(ids), len(work), held=held)
        try:
            apply(work[0])
        except Exception:  # the work queue's retries and poison handling take it from here
            log.warning("events %s: applying %d ids in the drain failed; queued instead", lane.key, len(ids),
                        exc_info=True)
            self._queues.release(copy)
            return Drained(lane.key, len(ids), 1, held=held)
        self._queues.withdraw(copy)
        return Drained(lane.key, len(ids), 0, 1, held=held)

    def _close(self, table: Any, lane: Lane) -> None:
        """End the window: delete the marker, then look once more; rows there (written by
        receivers that touched the marker before it went, or held back) open the next window,
        unless a receiver already opened it."""
        delete_row(table, lane.key, MARKER)
        left = table.query_entities("PartitionKey eq @pk", parameters={"pk": lane.key}, select=["RowKey"],
                                    results_per_page=1)
        if next(iter(left), None) is None:
            return
        at = datetime.now(UTC)
        if tablerows.create(table, {"PartitionKey": lane.key, "RowKey": MARKER, "at": at.isoformat()}) is None:
            return  # a receiver opened the next window: its drain reads these rows too
        self._schedule(table, lane, at)

    def sweep(self, *, stale_s: int = 30) -> list[Drained]:
        """Drain every lane holding a row (marker or id) older than `stale_s`: what a receiver or a
        drain message that died left behind. One query per lane when nothing is left."""
        table = self._storage.table(TABLE)
        cutoff = datetime.now(UTC) - timedelta(seconds=stale_s)
        done: list[Drained] = []
        for lane in LANES:
            stale = table.query_entities("PartitionKey eq @pk and Timestamp lt @cutoff",
                                         parameters={"pk": lane.key, "cutoff": cutoff},
                                         select=["RowKey"], results_per_page=1)
            if next(iter(stale), None) is not None:
                done.append(self.drain(lane.key))
        return done

    def pending(self) -> dict[str, int]:
        """Ids waiting per lane (markers not counted): for status pages and tests."""
        table = self._storage.table(TABLE)
        counts: dict[str, int] = {}
        for row in table.list_entities(select=["PartitionKey", "RowKey"]):
            if row["RowKey"] != MARKER and row["PartitionKey"] != LAST:
                counts[row["PartitionKey"]] = counts.get(row["PartitionKey"], 0) + 1
        return counts

    def last_received(self) -> dict[str, datetime]:
        """Per source ("marketo", "dynamics"): when an event last opened a coalescing window
        (within one window of the last event received); sources never heard from are absent."""
        table = self._storage.table(TABLE)
        out: dict[str, datetime] = {}
        for row in table.query_entities("PartitionKey eq @pk", parameters={"pk": LAST}, select=["RowKey", "at"]):
            source = Lane.from_key(row["RowKey"]).source
            at = datetime.fromisoformat(row["at"])
            out[source] = max(at, out.get(source, at))
        return out


def _submit(table: Any, ops: list[tablebatch.Op], *, unless: int) -> bool:
    """Run the transaction; False if the service refused it with status `unless` (nothing written)."""
    try:
        tablebatch.submit(table, ops)
    except tablebatch.TransactionFailed as exc:
        if exc.status != unless:
            raise HttpResponseError(message=f"event buffer: {exc}") from exc
        return False
    return True


def _submit_repeatable(table: Any, ops: list[tablebatch.Op], *, unless: int, tries: int = 3) -> bool:
    """`_submit` for a transaction that may be repeated as is: the SDK retries no POST on a
    dropped connection, as it would the single upserts such a transaction replaces."""
    for _ in range(tries - 1):
        try:
            return _submit(table, ops, unless=unless)
        except ServiceResponseError:
            continue
    return _submit(table, ops, unless=unless)


def parse_drain(body: bytes | str) -> DrainRequest:
    """The lane a drain message names and when its window opened; BadMessage if it names none."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise BadMessage("drain message is not JSON") from None
    lane = data.get("lane") if isinstance(data, dict) else None
    if not isinstance(lane, str):
        raise BadMessage('drain message must be {"lane": "<lane>"}')
    at = _time(data, "opened")
    seen = data.get("seen", 0)
    if not isinstance(seen, int) or isinstance(seen, bool) or seen < 0:
        raise BadMessage(f"drain message's seen {seen!r} is not a count")
    return DrainRequest(Lane.from_key(lane).key, at, seen, _time(data, "grew"))


def _time(data: dict[str, Any], name: str) -> datetime | None:
    value = data.get(name)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        raise BadMessage(f"drain message's {name} {value!r} is not an ISO time") from None


def lane_of(source: str, kind: str, entity: str | None) -> Lane:
    return Lane.from_key(Lane(source, kind, entity).key)


def delete_row(table: Any, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
    """Delete the row (if its ETag is still `etag`, when given); gone or changed rows are left alone."""
    kw: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    try:
        table.delete_entity(partition_key, row_key, **kw)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass  # gone already (another drain), or re-written since the read (the next drain's)
