"""The event buffer: webhook calls leave ids here; a short-lived drain packs them into work.

Why a buffer: a bulk import in Dataverse or a Marketo smart-list change fans out into
thousands of webhook calls in seconds, on as many app instances as Azure scales out to.
One work message per call would mean one Marketo read per person; the appliers want 300.

The design, in one table (`<prefix>events`) and one queue (`leadsync-events`):

    lane        one partition per kind of work: marketo-changed, dynamics-lead-changed,
                dynamics-lead-deleted, dynamics-contact-changed, dynamics-contact-deleted
    receiver    upserts one row per id (RowKey = the id: a burst on one record is one row)
                in one transaction with a touch of the lane's marker row `!drain`
                (`If-Match: *`): while a drain is pending that is the whole call. If the
                marker is gone, nothing was written, and the receiver inserts the rows and
                the marker in one transaction instead. Whoever inserts it (one caller per
                quiet lane, atomically, on any instance) sends a drain message to
                `leadsync-events`, invisible for `delay_s` (the coalescing window).
    last        partition `!last`, one row per lane: when a receiver last scheduled its drain
                (once per coalescing window, not per call), for the health page.
    drain       (a queue trigger) first deletes the marker, then reads the lane's rows,
                sends them as work messages of up to 300 ids, and deletes each row it read
                if its ETag is unchanged (a row re-upserted meanwhile stays for the next drain).
                A drain finding a burst (BUSY_IDS or more at BUSY_PER_S, fewer than a
                message holds) puts the marker back and sends the same window's next drain
                message instead, until `max_window_s` from the window's opening. A lane of
                up to `direct_max` ids is applied in the drain's own invocation when the
                caller passes `apply` (one queue hop fewer); if that fails, the ids go in
                a work message.

Why it loses nothing: the marker goes before the read, so a row written after the read
finds no marker (its transaction fails whole), inserts a new one and schedules another
drain; a row written before it is in the read. A direct apply deletes its rows only once it
returned or its ids were queued. A drain that dies is retried by the queue (its message
comes back); a marker left by a receiver that died before sending its drain message, or
rows left without a marker, are drained by `sweep` from the Dataverse poll timer once a row
is older than `stale_s` (later receivers touch the marker, but their id rows age).
And the pollers still run: an event is a latency hint, never the only way a change arrives.

Cost per event, in storage requests: while a drain is pending, 1 (the transaction; it was 2,
an upsert and a 409 on the marker, when the figures below were measured). Each drain: 1
marker delete, 1 query per 1,000 rows, 1 delete per distinct id, 1 queue send per 300 ids,
the drain message itself and the `!last` upsert of the receiver that scheduled it
(measured before that row existed). Measured once on Azurite with a request counter, 1,000
Marketo events for 400 people from 8 callers: 2,000 table requests in the receivers,
1 drain message, 402 table requests in the drain, 2 work messages (a Marketo read each
when applied, where one message per call would be 1,000); 2.4 storage requests per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
# A lane is busy (a burst, not a trickle) from this many ids at this rate since its window
# opened: steady edits at 4 a second, and their echoes, stay below it and keep the 1 s
# window's latency; a bulk import's webhook calls are far above it.
BUSY_IDS = 8
BUSY_PER_S = 6
_WITH_MARKER = tablebatch.TRANSACTION_MAX - 1  # id rows that fit in the marker's transaction
DIRECT_MAX = 300  # a drain applies a lane of up to this many ids itself (one work message's worth)


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


@dataclass(frozen=True)
class DrainRequest:
    """A drain message: the lane and when its window opened (None for messages sent before
    windows stretched: those are drained as they come)."""

    lane: str
    opened: datetime | None = None

    def to_json(self) -> str:
        body = {"lane": self.lane, **({"opened": self.opened.isoformat()} if self.opened else {})}
        return json.dumps(body)


def should_stretch(ids: int, opened: datetime | None, now: datetime, *, delay_s: int, max_window_s: int,
                   batch_size: int) -> bool:
    """Whether a drain finding `ids` waiting should wait one more window instead: the lane is
    busy (a burst), its ids do not fill a work message yet, and the window's end stays within
    `max_window_s` of its opening; so a burst's ids go in a few full messages, a trickle at once."""
    if opened is None or delay_s <= 0 or ids < BUSY_IDS or ids >= batch_size:
        return False
    elapsed = (now - opened).total_seconds()
    return ids >= BUSY_PER_S * max(elapsed, delay_s) and elapsed + delay_s <= max_window_s


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
        whole if the marker is gone, i.e. if a drain has already started reading."""
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
                return False  # a drain is scheduled and has not started: it will read our rows
            try:
                written = _submit(table, [*upserts, tablebatch.Op("create", marker)], unless=409)
            except ServiceResponseError:
                break  # the POST (not retried) may have happened: write the rows plainly below
            if written:
                break  # this call opened the window
        if not written:  # still racing drains, or unsure: one drain too many is harmless, none is not
            for row in tail:
                tablerows.upsert(table, row)
        try:
            self._send_drain(DrainRequest(lane.key, datetime.fromisoformat(now)))
        except BaseException:
            delete_row(table, lane.key, MARKER)  # let the next call schedule it (the sweep, if none comes)
            raise
        tablerows.upsert(table, {"PartitionKey": LAST, "RowKey": lane.key, "at": now})
        return True

    def _send_drain(self, request: DrainRequest) -> None:
        self._storage.queue(DRAIN_QUEUE).send_message(request.to_json(), visibility_timeout=self.delay_s or None)

    def drain(self, lane_key: str | DrainRequest, *, apply: Callable[[Work], None] | None = None,
              now: datetime | None = None) -> Drained:
        """Pack the lane's buffered ids into work messages; the rows read are deleted after.

        A busy lane whose window may still stretch (`should_stretch`) gets its marker back and
        one more drain message instead. `apply`, when given, applies a lane of up to
        `direct_max` ids in this invocation (no second queue hop); if it raises, that work is
        sent as a message instead, so an id read is always applied or queued before its row goes.
        """
        request = lane_key if isinstance(lane_key, DrainRequest) else DrainRequest(lane_key)
        lane = Lane.from_key(request.lane)
        table = self._storage.table(TABLE)
        delete_row(table, lane.key, MARKER)
        rows = [r for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": lane.key},
                                                select=["PartitionKey", "RowKey"]) if r["RowKey"] != MARKER]
        if should_stretch(len(rows), request.opened, now or datetime.now(UTC), delay_s=self.delay_s,
                          max_window_s=self.max_window_s, batch_size=self.batch_size):
            return self._stretch(table, lane, request, len(rows))
        ids: list[int | str] = []
        for row in rows:
            try:
                ids.append(lane.parse_id(row["RowKey"]))
            except ValueError:
                log.warning("event buffer: dropped row %s/%s, not an id", lane.key, row["RowKey"])
        work = chunked(lane.source, lane.kind, ids, entity=lane.entity, reason="event", size=self.batch_size)
        applied = 0
        if apply is not None and len(work) == 1 and len(ids) <= self.direct_max:
            try:
                apply(work[0])
                applied, work = 1, []
            except Exception:  # the work queue's retries and poison handling take it from here
                log.warning("events %s: applying %d ids in the drain failed; queued instead", lane.key, len(ids),
                            exc_info=True)
        self._queues.send(work)
        for row in rows:  # only after the work is applied or queued: a drain that dies here is retried whole
            delete_row(table, lane.key, row["RowKey"], etag=row.metadata.get("etag"))
        return Drained(lane.key, len(ids), len(work), applied)

    def _stretch(self, table: Any, lane: Lane, request: DrainRequest, ids: int) -> Drained:
        """Put the marker back and schedule the next drain of the same window; if a receiver
        opened a new window meanwhile, its drain reads these rows too."""
        if tablerows.create(table, {"PartitionKey": lane.key, "RowKey": MARKER,
                                    "at": datetime.now(UTC).isoformat()}) is None:
            return Drained(lane.key, ids, 0, stretched=True)
        try:
            self._send_drain(request)
        except BaseException:
            delete_row(table, lane.key, MARKER)  # the queue retries this drain, which then drains the rows
            raise
        return Drained(lane.key, ids, 0, stretched=True)

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
    opened = data.get("opened")
    try:
        at = datetime.fromisoformat(opened) if isinstance(opened, str) else None
    except ValueError:
        raise BadMessage(f"drain message's opened {opened!r} is not an ISO time") from None
    return DrainRequest(Lane.from_key(lane).key, at)


def lane_of(source: str, kind: str, entity: str | None) -> Lane:
    return Lane.from_key(Lane(source, kind, entity).key)


def delete_row(table: Any, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
    """Delete the row (if its ETag is still `etag`, when given); gone or changed rows are left alone."""
    kw: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    try:
        table.delete_entity(partition_key, row_key, **kw)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass  # gone already (another drain), or re-written since the read (the next drain's)
