"""Links: which Marketo person is which Dynamics record, and the values both last agreed on.

Table `<prefix>links` holds two kinds of rows:

    link row   PK "m<lead id mod 16, 2 digits>"  RK "<lead id>"
               entity, dynamics_id, base (JSON of canonical values), state, parked_*
    index row  PK "d<first hex digit of the GUID>"  RK "<entity>:<guid>"
               marketo_id: the person this record is linked to (none: a reservation,
               see `reserve_index`, which reads as "not linked")
               ended_at: set (and the link row deleted) when that person was deleted in
               Marketo; the record is not re-created in Marketo until Dynamics changes it
               after that moment
               merged_into: set (with ended_at) when that person was merged into another
               in Marketo; the record is then never linked again or re-created in Marketo
    ended row  PK "e<lead id mod 16, 2 digits>"  RK "<lead id>"
               entity, dynamics_id, ended_at: the record a tombstone was left for, so that
               a merge reported after the deletion still finds the loser's record

Why these keys: every lookup stays a point read (PK + RK known), and a batch of up to 300
people spreads over 16 partitions per kind, so its writes go as entity-group
transactions (all rows of one transaction share a partition): about 32 requests for 300
new links instead of 600. 16 partitions carry far more than Marketo's rate limit lets a
sync write. The link row is the truth; an index row is a pointer that is checked
against the link row on every read, so a crash between the two writes never yields a
wrong link: a stale pointer is ignored, and a missing one is restored when the record
next comes through the Dynamics feed (it is then found by email, already linked). The
tombstone lives in the index row so that one read answers both "linked?" and "deleted
in Marketo?" for a record the Dynamics feed brings in.

Every save of a link row is conditional on the ETag it was read with: two appliers
racing on one person cannot both store a base; the loser raises StateConflict and its
queue message is retried against fresh state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.errors import StateConflict
from shared.rules.fieldmap import Value
from shared.state import tablebatch, tablerows
from shared.state.storage import Storage


class LinkState(StrEnum):
    """A link row's `state`, stored as its value."""

    LINKED = "linked"
    CREATING = "creating"  # the real-time endpoint holds this person while it creates the lead
    PARKED = "parked"  # a validation failure; not retried until either side changes


LINKED, CREATING, PARKED = LinkState.LINKED, LinkState.CREATING, LinkState.PARKED
CLAIM_STALE_AFTER = timedelta(minutes=2)  # a creating claim older than this lost its holder
PARTITIONS = 16


def link_key(marketo_id: int) -> tuple[str, str]:
    return f"m{marketo_id % PARTITIONS:02d}", str(marketo_id)


def ended_key(marketo_id: int) -> tuple[str, str]:
    return f"e{marketo_id % PARTITIONS:02d}", str(marketo_id)


def index_key(entity: str, dynamics_id: str) -> tuple[str, str]:
    return f"d{dynamics_id[:1].lower()}", f"{entity}:{dynamics_id.lower()}"


@dataclass(frozen=True)
class Link:
    marketo_id: int
    entity: str | None = None
    dynamics_id: str | None = None
    base: dict[str, Value] = field(default_factory=dict)
    state: LinkState = LINKED
    parked_reason: str | None = None
    parked_fingerprint: str | None = None
    updated_at: datetime | None = None
    etag: str | None = None

    @property
    def person(self) -> str:
        """The activity-log key of this person."""
        return person_key(self.marketo_id)

    def stale_claim(self, now: datetime | None = None) -> bool:
        """A creating claim whose holder must have died (older than CLAIM_STALE_AFTER)."""
        if self.state != CREATING or self.updated_at is None:
            return False
        return (now or datetime.now(UTC)) - self.updated_at >= CLAIM_STALE_AFTER

    def parked(self, reason: str, fingerprint: str) -> Link:
        return replace(self, state=PARKED, parked_reason=reason, parked_fingerprint=fingerprint)

    def agreed(self, base: dict[str, Value]) -> Link:
        return replace(self, state=LINKED, base=base, parked_reason=None, parked_fingerprint=None)


def person_key(marketo_id: int) -> str:
    return f"m{marketo_id}"


@dataclass
class Lookup:
    """What the index says about some Dynamics records: their links, and tombstones."""

    links: dict[str, Link] = field(default_factory=dict)
    buried: dict[str, datetime] = field(default_factory=dict)  # record id -> when its person was deleted
    merged: dict[str, int] = field(default_factory=dict)  # record id -> winner its person was merged into


def _pointer(link: Link) -> dict[str, Any]:
    pk, rk = index_key(str(link.entity), str(link.dynamics_id))
    return {"PartitionKey": pk, "RowKey": rk, "marketo_id": link.marketo_id}


def _write_op(link: Link, row: dict[str, Any]) -> tablebatch.Op:
    return tablebatch.Op("create", row) if link.etag is None else tablebatch.Op("replace", row, link.etag)


def _to_entity(link: Link) -> dict[str, Any]:
    pk, rk = link_key(link.marketo_id)
    return {
        "PartitionKey": pk, "RowKey": rk,
        "entity": link.entity or "", "dynamics_id": link.dynamics_id or "",
        "base": json.dumps(link.base, separators=(",", ":"), sort_keys=True),
        "state": link.state, "parked_reason": link.parked_reason or "",
        "parked_fingerprint": link.parked_fingerprint or "",
        "updated_at": datetime.now(UTC),
    }


def _from_entity(e: Any) -> Link:
    return Link(
        marketo_id=int(e["RowKey"]),
        entity=e.get("entity") or None,
        dynamics_id=e.get("dynamics_id") or None,
        base=json.loads(e.get("base") or "{}"),
        state=LinkState(e.get("state") or LINKED),
        parked_reason=e.get("parked_reason") or None,
        parked_fingerprint=e.get("parked_fingerprint") or None,
        updated_at=e.get("updated_at"),
        etag=e.metadata.get("etag"),
    )


class LinkStore:
    def __init__(self, storage: Storage, *, workers: int = 16) -> None:
        self._table = storage.table("links")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="links")
        self._count_lock = threading.Lock()
        self.index_reads = 0
        """Index rows read by this store (what a lookup by Dynamics id costs), for tests and metrics."""

    def close(self) -> None:
        """Stop the read/write threads (after the calls in flight finish)."""
        self._pool.shutdown(wait=True)

    # -- reads -------------------------------------------------------------------------
    def get(self, marketo_id: int) -> Link | None:
        row = tablerows.get(self._table, *link_key(marketo_id))
        return _from_entity(row) if row is not None else None

    def get_many(self, marketo_ids: Iterable[int]) -> dict[int, Link]:
        ids = list(dict.fromkeys(marketo_ids))
        return {i: link for i, link in zip(ids, self._pool.map(self.get, ids), strict=True) if link}

    def by_dynamics(self, entity: str, dynamics_id: str) -> Link | None:
        return self._resolve(entity, dynamics_id)[0]

    def by_dynamics_many(self, entity: str, dynamics_ids: Iterable[str]) -> dict[str, Link]:
        return self.lookup(entity, dynamics_ids).links

    def lookup(self, entity: str, dynamics_ids: Iterable[str]) -> Lookup:
        """The links of these Dynamics records, and when each unlinked one's Marketo person
        was deleted in Marketo (if it was): one index read per record, plus the link row."""
        ids = list(dict.fromkeys(dynamics_ids))
        found = Lookup()
        for did, (link, ended_at, merged_into) in zip(ids, self._pool.map(lambda i: self._resolve(entity, i), ids),
                                                      strict=True):
            if link is not None:
                found.links[did] = link
            elif merged_into:
                found.merged[did] = merged_into
            elif ended_at is not None:
                found.buried[did] = ended_at
        return found

    def _resolve(self, entity: str, dynamics_id: str) -> tuple[Link | None, datetime | None, int | None]:
        with self._count_lock:
            self.index_reads += 1
        pointer = tablerows.get(self._table, *index_key(entity, dynamics_id))
        if pointer is None:
            return None, None, None
        marketo_id = int(pointer.get("marketo_id") or 0)
        link = self.get(marketo_id) if marketo_id else None
        if link is None or link.entity != entity or (link.dynamics_id or "").lower() != dynamics_id.lower():
            # A pointer left behind by a crash, a move, a deletion or a merge.
            return None, pointer.get("ended_at"), pointer.get("merged_into") or None
        return link, None, None

    def all(self) -> Iterator[Link]:
        for e in self._table.query_entities("PartitionKey ge 'm' and PartitionKey lt 'n'"):
            yield _from_entity(e)

    # -- writes ------------------------------------------------------------------------
    def claim(self, marketo_id: int, *, stale_after: timedelta = CLAIM_STALE_AFTER) -> Link | None:
        """Reserve a not-yet-linked person for creation; None if someone holds or links it.

        Insert-if-absent is atomic in Table Storage, so of two concurrent callers exactly
        one gets the claim. A claim older than `stale_after` (its holder died) is taken over.
        """
        link = Link(marketo_id, state=CREATING)
        etag = tablerows.create(self._table, _to_entity(link))
        if etag is not None:
            return replace(link, etag=etag)
        current = self.get(marketo_id)
        if (current is None or current.state != CREATING or current.updated_at is None
                or datetime.now(UTC) - current.updated_at < stale_after):
            return None
        try:
            return self.save(replace(current, state=CREATING))
        except StateConflict:
            return None

    def save(self, link: Link, *, index: bool = True) -> Link:
        """Store the link row (conditional on its ETag), then its index row.

        `index=False` skips the index row: for a save that changes only the base or the
        state of a link whose Dynamics record is unchanged (most saves).
        """
        entity = _to_entity(link)
        if link.etag is None:
            etag = tablerows.create(self._table, entity)  # None: the row exists
        else:
            try:
                etag = tablerows.replace(self._table, entity, link.etag)
            except tablerows.Conflict:
                etag = None
        if etag is None:
            raise StateConflict(f"link of Marketo person {link.marketo_id} changed concurrently")
        if index and link.entity and link.dynamics_id:
            tablerows.upsert(self._table, _pointer(link))
        return replace(link, etag=etag, updated_at=entity["updated_at"])

    def save_many(self, links: Iterable[Link], *, index: bool = True) -> list[Link | StateConflict]:
        """Save each link, as `save` does, in one transaction per partition and 100 rows.

        A conflict is returned in its link's place instead of raised. A transaction that
        fails writes nothing, so its links are then saved one by one to tell the
        conflicting ones from the rest (the rare path: a race on one person).
        """
        links = list(links)
        rows = [_to_entity(link) for link in links]
        results: list[Link | StateConflict] = [StateConflict("not saved")] * len(links)

        def one(i: int) -> None:
            try:
                results[i] = self.save(links[i], index=False)
            except StateConflict as exc:
                results[i] = exc

        def group(chunk: list[int]) -> None:
            if len(chunk) < tablebatch.TRANSACTION_MIN:
                for i in chunk:
                    one(i)
                return
            try:
                etags = tablebatch.submit(self._table, [_write_op(links[i], rows[i]) for i in chunk])
            except tablebatch.TransactionFailed:
                for i in chunk:
                    one(i)
                return
            for i, etag in zip(chunk, etags, strict=True):
                results[i] = replace(links[i], etag=etag, updated_at=rows[i]["updated_at"])

        list(self._pool.map(group, tablebatch.partition_chunks(rows)))
        if index:
            pointers = {(p["PartitionKey"], p["RowKey"]): p for r in results
                        if isinstance(r, Link) and r.entity and r.dynamics_id for p in [_pointer(r)]}
            tablebatch.upsert_all(self._table, list(pointers.values()), self._pool)
        return results

    def reserve_index(self, entity: str, dynamics_ids: Iterable[str]) -> set[str]:
        """Insert an index row without a person for each of these records that has none;
        the ids reserved (they had no index row: not linked, no tombstone).

        For records Dynamics reports as never modified since they were created, of which
        almost none has an index row yet: inserts in one transaction per partition answer
        "indexed?" for all of them, where reads cost a request each. An insert is atomic,
        so this answers exactly what a read would, and a concurrent save of a link for
        the record simply replaces the reservation. A reservation left behind (the record
        was not linked after all) reads as "not linked", like a pointer left by a crash.
        """
        ids = list(dict.fromkeys(dynamics_ids))
        rows = [{"PartitionKey": pk, "RowKey": rk} for pk, rk in (index_key(entity, i) for i in ids)]
        reserved: list[set[int]] = list(self._pool.map(lambda chunk: self._reserve(rows, chunk),
                                                       tablebatch.partition_chunks(rows)))
        return {ids[i] for found in reserved for i in found}

    def _reserve(self, rows: list[dict[str, Any]], chunk: list[int]) -> set[int]:
        left = list(chunk)
        while len(left) >= tablebatch.TRANSACTION_MIN:
            try:
                tablebatch.submit(self._table, [tablebatch.Op("create", rows[i]) for i in left])
                return set(left)
            except tablebatch.TransactionFailed as exc:
                # Nothing was written. A row that exists is dropped and the rest sent again;
                # without the service naming the row, each row goes on its own.
                if exc.status != 409 or exc.index is None or not 0 <= exc.index < len(left):
                    break
                del left[exc.index]
        return {i for i in left if tablerows.create(self._table, rows[i]) is not None}

    def move(self, link: Link, entity: str, dynamics_id: str) -> Link:
        """Point the link at another record (a lead qualified into a contact)."""
        moved = self.save(replace(link, entity=entity, dynamics_id=dynamics_id))
        if link.entity and link.dynamics_id:
            self._delete_index(link.entity, link.dynamics_id)
        return moved

    def transfer(self, link: Link, marketo_id: int) -> Link:
        """Hand the link to another Marketo person (who won a merge over the linked one).

        The new row is created first (StateConflict if that person has a row already), so a
        crash in between leaves the record linked to the winner, plus a loser row that no
        index row points at any more.
        """
        taken = self.save(replace(link, marketo_id=marketo_id, etag=None))
        try:
            self._table.delete_entity(*link_key(link.marketo_id))
        except ResourceNotFoundError:
            pass
        return taken

    def delete(self, link: Link, *, tombstone_at: datetime | None = None, merged_into: int | None = None) -> None:
        """End the link: the row (conditional on its ETag) and its index pointer.

        `tombstone_at` (the person was deleted in Marketo) keeps the index row as a
        tombstone instead; `merged_into` (the person was merged into another) marks it so
        that the record is neither linked again nor re-created in Marketo. It is written
        first: a crash before the link row goes leaves a live link whose stale `ended_at`
        is ignored, never a deletion without its tombstone.
        """
        if tombstone_at is not None and link.entity and link.dynamics_id:
            marker = {"merged_into": merged_into} if merged_into else {}
            tablerows.upsert(self._table, {**_pointer(link), "ended_at": tombstone_at, **marker})
            pk, rk = ended_key(link.marketo_id)
            tablerows.upsert(self._table, {"PartitionKey": pk, "RowKey": rk, "entity": link.entity,
                                           "dynamics_id": link.dynamics_id, "ended_at": tombstone_at})
        pk, rk = link_key(link.marketo_id)
        try:
            self._table.delete_entity(pk, rk, etag=link.etag,
                                      match_condition=MatchConditions.IfNotModified if link.etag else
                                      MatchConditions.Unconditionally)
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError as exc:
            raise StateConflict(f"link of Marketo person {link.marketo_id} changed concurrently") from exc
        if tombstone_at is None and link.entity and link.dynamics_id:
            self._delete_index(link.entity, link.dynamics_id)

    def ended(self, marketo_id: int) -> tuple[str, str] | None:
        """(entity, record id) whose link ended with a tombstone when this person left Marketo."""
        row = tablerows.get(self._table, *ended_key(marketo_id))
        return (str(row["entity"]), str(row["dynamics_id"])) if row is not None else None

    def _delete_index(self, entity: str, dynamics_id: str) -> None:
        try:
            self._table.delete_entity(*index_key(entity, dynamics_id))
        except ResourceNotFoundError:
            pass
