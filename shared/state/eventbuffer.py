"""The event buffer: webhook calls leave ids here; a short-lived drain packs them into work.

Why a buffer: a bulk import in Dataverse or a Marketo smart-list change fans out into
thousands of webhook calls in seconds, on as many app instances as Azure scales out to.
One work message per call would mean one Marketo read per person; the appliers want 300.

The design, in one table (`<prefix>events`) and one queue (`leadsync-events`):

    lane        one partition per kind of work: marketo-changed, dynamics-lead-changed,
                dynamics-lead-deleted, dynamics-contact-changed, dynamics-contact-deleted
    receiver    upserts one row per id (RowKey = the id: a burst on one record is one row),
                then tries to insert the lane's marker row `!drain`. Whoever inserts it (one
                caller per quiet lane, atomically, on any instance) sends a drain message
                to `leadsync-events`, invisible for `delay_s` (the coalescing window).
    last        partition `!last`, one row per lane: when a receiver last scheduled its drain
                (once per coalescing window, not per call), for the health page.
    drain       (a queue trigger) first deletes the marker, then reads the lane's rows,
                sends them as work messages of up to 300 ids, and deletes each row it read
                if its ETag is unchanged (a row re-upserted meanwhile stays for the next drain).

Why it loses nothing: the marker goes before the read, so a row written after the read
finds no marker, inserts a new one and schedules another drain; a row written before it is
in the read. A drain that dies is retried by the queue (its message comes back); a marker
left by a receiver that died before sending its drain message, or rows left without a
marker, are drained by `sweep` from the Dataverse poll timer once older than `stale_s`.
And the pollers still run: an event is a latency hint, never the only way a change arrives.

Cost per event, in storage requests: each call upserts its row and tries the marker (a 409
while a drain is pending): 2. Each drain: 1 marker delete, 1 query per 1,000 rows, 1 delete
per distinct id, 1 queue send per 300 ids, the drain message itself and the `!last` upsert
of the receiver that scheduled it (measured before that row existed). Measured once on
Azurite with a request counter, 1,000 Marketo events for 400 people from 8 callers: 2,000
table requests in the receivers, 1 drain message, 402 table requests in the drain, 2 work
messages (a Marketo read each when applied, where one message per call would be 1,000);
2.4 storage requests per event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError, ServiceResponseError

from shared.errors import BadMessage
from shared.state import tablerows
from shared.state.storage import Storage
from shared.state.workqueue import WorkQueues, chunked

log = logging.getLogger("leadsync")

TABLE = "events"
DRAIN_QUEUE = "leadsync-events"
MARKER = "!drain"  # sorts before every id, so a lane's query meets it first
LAST = "!last"  # the partition of the "last event received" rows (no lane's, so no drain or sweep reads it)
DELAY_S = 1  # the coalescing window (LEADSYNC_EVENTS_COALESCE_S): events in it become one drain's work


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
    messages: int


class EventBuffer:
    def __init__(self, storage: Storage, queues: WorkQueues, *, delay_s: int = DELAY_S,
                 batch_size: int = 300) -> None:
        self._storage = storage
        self._queues = queues
        self.delay_s = delay_s
        self.batch_size = batch_size

    def add(self, lane: Lane, ids: Sequence[int | str]) -> bool:
        """Buffer `ids`; True when this call scheduled the lane's drain (it was quiet)."""
        table = self._storage.table(TABLE)
        for record_id in dict.fromkeys(ids):
            tablerows.upsert(table, {"PartitionKey": lane.key, "RowKey": str(record_id)})
        now = datetime.now(UTC).isoformat()
        try:
            if tablerows.create(table, {"PartitionKey": lane.key, "RowKey": MARKER, "at": now}) is None:
                return False  # a drain is scheduled and has not started: it will read our rows
        except ServiceResponseError:
            pass  # the insert (a POST, not retried) may have happened: one drain too many is harmless, none is not
        try:
            self._storage.queue(DRAIN_QUEUE).send_message(json.dumps({"lane": lane.key}),
                                                          visibility_timeout=self.delay_s or None)
        except BaseException:
            delete_row(table, lane.key, MARKER)  # let the next call schedule it (the sweep, if none comes)
            raise
        tablerows.upsert(table, {"PartitionKey": LAST, "RowKey": lane.key, "at": now})
        return True

    def drain(self, lane_key: str) -> Drained:
        """Pack the lane's buffered ids into work messages; the rows read are deleted after."""
        lane = Lane.from_key(lane_key)
        table = self._storage.table(TABLE)
        delete_row(table, lane.key, MARKER)
        rows = [r for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": lane.key},
                                                select=["PartitionKey", "RowKey"]) if r["RowKey"] != MARKER]
        ids: list[int | str] = []
        for row in rows:
            try:
                ids.append(lane.parse_id(row["RowKey"]))
            except ValueError:
                log.warning("event buffer: dropped row %s/%s, not an id", lane.key, row["RowKey"])
        work = chunked(lane.source, lane.kind, ids, entity=lane.entity, reason="event", size=self.batch_size)
        self._queues.send(work)
        for row in rows:  # only after the work is queued: a drain that dies here is retried whole
            delete_row(table, lane.key, row["RowKey"], etag=row.metadata.get("etag"))
        return Drained(lane.key, len(ids), len(work))

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


def parse_drain(body: bytes | str) -> str:
    """The lane a drain message names; BadMessage if it names none."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise BadMessage("drain message is not JSON") from None
    lane = data.get("lane") if isinstance(data, dict) else None
    if not isinstance(lane, str):
        raise BadMessage('drain message must be {"lane": "<lane>"}')
    return Lane.from_key(lane).key


def lane_of(source: str, kind: str, entity: str | None) -> Lane:
    return Lane.from_key(Lane(source, kind, entity).key)


def delete_row(table: Any, partition_key: str, row_key: str, *, etag: str | None = None) -> None:
    """Delete the row (if its ETag is still `etag`, when given); gone or changed rows are left alone."""
    kw: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
    try:
        table.delete_entity(partition_key, row_key, **kw)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass  # gone already (another drain), or re-written since the read (the next drain's)
