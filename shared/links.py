"""Links: which Marketo person is which Dynamics record, and the values both last agreed on.

Table `<prefix>links` holds two kinds of rows:

    link row   PK "m<lead id mod 100, 2 digits>"  RK "<lead id>"
               entity, dynamics_id, base (JSON of canonical values), state, parked_*
    index row  PK "d<first 2 hex digits of the GUID>"  RK "<entity>:<guid>"
               marketo_id
    tombstone  PK "t<first 2 hex digits of the GUID>"  RK "<entity>:<guid>"
               ended_at: the Marketo person was deleted then; the record is not
               re-created in Marketo until Dynamics changes it after that moment

Why these keys: a sync batch touches hundreds of unrelated people at once; hashing the
lead id into 100 partitions and the GUID into 256 spreads those writes over many
partition servers instead of one hot partition, while each lookup stays a point read
(PK + RK known). The link row is the truth; an index row is a pointer that is checked
against the link row on every read, so a crash between the two writes never yields a
wrong link: a stale pointer is ignored, and a missing one is restored when the record
next comes through the Dynamics feed (it is then found by email, already linked).

Every save of a link row is conditional on the ETag it was read with: two appliers
racing on one person cannot both store a base; the loser raises StateConflict and its
queue message is retried against fresh state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.errors import StateConflict
from shared.fieldmap import Value
from shared.storage import Storage

LINKED = "linked"
CREATING = "creating"  # the real-time endpoint holds this person while it creates the lead
PARKED = "parked"  # a validation failure; not retried until either side changes
CLAIM_STALE_AFTER = timedelta(minutes=2)  # a creating claim older than this lost its holder


def link_key(marketo_id: int) -> tuple[str, str]:
    return f"m{marketo_id % 100:02d}", str(marketo_id)


def index_key(entity: str, dynamics_id: str) -> tuple[str, str]:
    return f"d{dynamics_id[:2].lower()}", f"{entity}:{dynamics_id.lower()}"


@dataclass(frozen=True)
class Link:
    marketo_id: int
    entity: str | None = None
    dynamics_id: str | None = None
    base: dict[str, Value] = field(default_factory=dict)
    state: str = LINKED
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
        state=e.get("state") or LINKED,
        parked_reason=e.get("parked_reason") or None,
        parked_fingerprint=e.get("parked_fingerprint") or None,
        updated_at=e.get("updated_at"),
        etag=e.metadata.get("etag"),
    )


class LinkStore:
    def __init__(self, storage: Storage, *, workers: int = 16) -> None:
        self._table = storage.table("links")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="links")

    # -- reads -------------------------------------------------------------------------
    def get(self, marketo_id: int) -> Link | None:
        try:
            return _from_entity(self._table.get_entity(*link_key(marketo_id)))
        except ResourceNotFoundError:
            return None

    def get_many(self, marketo_ids: Iterable[int]) -> dict[int, Link]:
        ids = list(dict.fromkeys(marketo_ids))
        return {i: link for i, link in zip(ids, self._pool.map(self.get, ids), strict=True) if link}

    def by_dynamics(self, entity: str, dynamics_id: str) -> Link | None:
        try:
            pointer = self._table.get_entity(*index_key(entity, dynamics_id))
        except ResourceNotFoundError:
            return None
        link = self.get(int(pointer["marketo_id"]))
        if link is None or link.entity != entity or (link.dynamics_id or "").lower() != dynamics_id.lower():
            return None  # a pointer left behind by a crash or a moved link
        return link

    def by_dynamics_many(self, entity: str, dynamics_ids: Iterable[str]) -> dict[str, Link]:
        ids = list(dict.fromkeys(dynamics_ids))
        found = self._pool.map(lambda i: self.by_dynamics(entity, i), ids)
        return {i: link for i, link in zip(ids, found, strict=True) if link}

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
        try:
            meta = self._table.create_entity(_to_entity(link))
            return replace(link, etag=meta.get("etag"))
        except ResourceExistsError:
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
        try:
            if link.etag is None:
                meta = self._table.create_entity(entity)
            else:
                meta = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=link.etag,
                                                 match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise StateConflict(f"link of Marketo person {link.marketo_id} changed concurrently") from exc
        if index and link.entity and link.dynamics_id:
            pk, rk = index_key(link.entity, link.dynamics_id)
            self._table.upsert_entity({"PartitionKey": pk, "RowKey": rk, "marketo_id": link.marketo_id})
        return replace(link, etag=meta.get("etag"), updated_at=entity["updated_at"])

    def save_many(self, links: Iterable[Link], *, index: bool = True) -> list[Link | StateConflict]:
        """Save each link; a conflict is returned in its place instead of raised."""

        def one(link: Link) -> Link | StateConflict:
            try:
                return self.save(link, index=index)
            except StateConflict as exc:
                return exc

        return list(self._pool.map(one, links))

    def move(self, link: Link, entity: str, dynamics_id: str) -> Link:
        """Point the link at another record (a lead qualified into a contact)."""
        moved = self.save(replace(link, entity=entity, dynamics_id=dynamics_id))
        if link.entity and link.dynamics_id:
            self._delete_index(link.entity, link.dynamics_id)
        return moved

    def delete(self, link: Link) -> None:
        """End the link: the row (conditional on its ETag) and its index pointer."""
        pk, rk = link_key(link.marketo_id)
        try:
            self._table.delete_entity(pk, rk, etag=link.etag,
                                      match_condition=MatchConditions.IfNotModified if link.etag else
                                      MatchConditions.Unconditionally)
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError as exc:
            raise StateConflict(f"link of Marketo person {link.marketo_id} changed concurrently") from exc
        if link.entity and link.dynamics_id:
            self._delete_index(link.entity, link.dynamics_id)

    def bury(self, entity: str, dynamics_id: str) -> None:
        """Remember that this record's Marketo person was deleted in Marketo."""
        _, rk = index_key(entity, dynamics_id)
        self._table.upsert_entity({"PartitionKey": "t" + rk.split(":")[1][:2], "RowKey": rk,
                                   "ended_at": datetime.now(UTC)})

    def buried(self, entity: str, dynamics_ids: Iterable[str]) -> dict[str, datetime]:
        """When each of these records' Marketo person was deleted, for those that were."""

        def one(dynamics_id: str) -> datetime | None:
            _, rk = index_key(entity, dynamics_id)
            try:
                return self._table.get_entity("t" + rk.split(":")[1][:2], rk)["ended_at"]  # type: ignore[no-any-return]
            except ResourceNotFoundError:
                return None

        ids = list(dict.fromkeys(dynamics_ids))
        return {i: at for i, at in zip(ids, self._pool.map(one, ids), strict=True) if at is not None}

    def _delete_index(self, entity: str, dynamics_id: str) -> None:
        try:
            self._table.delete_entity(*index_key(entity, dynamics_id))
        except ResourceNotFoundError:
            pass
