"""Merges on either side: the link follows, the two people become one, no value is lost.

Dynamics (the `Merge` action): the subordinate is deactivated, `merged` is true and
`_masterid_value` names the master. A subordinate's link

- moves to the master when the master has none (its base stays: the next round merges
  the master's values against it, field by field, as for any change);
- otherwise its Marketo person is merged into the master's person with Marketo's merge
  API. Marketo keeps the winner's value wherever both have one, so the loser's own Marketo
  changes (its values that differ from its base) are first written to the winner where
  the winner still holds its agreed value; the winner then goes through the normal merge.

Marketo (the merge API or the UI; seen as a Merge Leads activity, read with the deletes):
the winner keeps its link, or takes the first linked loser's link when it has none. Any
other loser's Dynamics record is neither deleted nor brought back as a new Marketo person
(that would undo the marketer's merge): its link ends with a `merged_into` marker that
keeps it out of linking, and a MERGE_SUGGESTED entry asks for the same merge in Dynamics.

A linked person found missing is left linked until a feed says why (sync/apply), and a
loser whose link the deleted-leads feed ended first is found again through its tombstone.
Our own Marketo merge comes back through the Merge Leads feed; by then the loser has no
link, and a loser still linked to a record that Dynamics already merged only ends its link.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.errors import MarketoError, Problem, QuotaExhausted, StateConflict
from shared.rules.fieldmap import Value
from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.links import CREATING, Link
from shared.state.workqueue import Work
from shared.sync.batch import D2M, M2D, Batch
from shared.sync.report import MarketoNote

log = logging.getLogger("leadsync")

RETRY_DELAY_S = 5  # a merge whose winner is being created waits this long, as other re-enqueued work does
NOT_FOUND = "1004"


def is_merged(record: Mapping[str, Any]) -> bool:
    """Dynamics merged this record into another (its master)."""
    return bool(record.get("merged")) and bool(record.get("_masterid_value"))


def dynamics_merged(batch: Batch, entity: str, records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Follow the merges among these changed records; the records that were not merged."""
    merged = {rid: r for rid, r in records.items() if is_merged(r)}
    if merged:
        links = batch.svc.links.by_dynamics_many(entity, merged)
        follow_dynamics_merges(batch, entity, [(link, merged[rid]) for rid, link in links.items()])
    return {rid: r for rid, r in records.items() if rid not in merged}


def follow_dynamics_merges(batch: Batch, entity: str, pairs: Sequence[tuple[Link, Mapping[str, Any]]]) -> None:
    """Each (link, subordinate record): move the link to the master, or merge the two people."""
    svc, out = batch.svc, batch.out
    for link, record in pairs:
        sub = str(record[PRIMARY_KEYS[entity]]).lower()
        master = str(record["_masterid_value"]).lower()
        holder = svc.links.by_dynamics(entity, master)
        if holder is None:
            try:
                moved = svc.links.move(link, entity, master)
            except StateConflict:
                batch.retry_marketo.append(link.marketo_id)
                continue
            out.add(moved.person, activity.MERGED,
                    f"{entity} {sub} was merged into {entity} {master} in Dynamics: now linked to {master}",
                    direction=D2M, details={"subordinate": sub, "master": master})
            batch.retry_marketo.append(link.marketo_id)  # merge the master's values in a fresh round
        elif holder.marketo_id != link.marketo_id:
            _merge_people(batch, entity, link, holder, sub, master)


def _merge_people(batch: Batch, entity: str, loser: Link, winner: Link, sub: str, master: str) -> None:
    svc, out = batch.svc, batch.out
    carried = _carry(svc, loser, winner)
    if carried:
        res = svc.marketo.sync_leads([{"id": winner.marketo_id, **svc.fields.to_marketo(carried)}],
                                     action="updateOnly", lookup_field="id")[0]
        if res.status not in ("updated", "created"):
            out.failed(winner.person, activity.REJECTED,
                       [Problem("", "rejected", f"Marketo {r.code}: {r.message}") for r in res.reasons],
                       direction=D2M, marketo_id=winner.marketo_id,
                       what=f"carrying Marketo person {loser.marketo_id}'s values before the merge")
            return  # merging now would drop them: the person stays as it is until someone edits
    try:
        svc.marketo.merge_leads(winner.marketo_id, [loser.marketo_id])
    except QuotaExhausted:
        raise  # not a refusal: the message waits for the quota's reset and merges then
    except MarketoError as exc:
        if exc.code != NOT_FOUND:
            out.failed(winner.person, activity.REJECTED,
                       [Problem("", "rejected", f"Marketo {exc.code}: {exc.message}")],
                       direction=D2M, marketo_id=winner.marketo_id,
                       what=f"merging Marketo person {loser.marketo_id} into {winner.marketo_id}")
            return
        # 1004: the loser is gone already (this is a retry after the merge went through).
    try:
        svc.links.delete(loser)
    except StateConflict:
        batch.retry_marketo.append(loser.marketo_id)
        return
    out.add(winner.person, activity.MERGED,
            f"{entity} {sub} was merged into {entity} {master} in Dynamics: Marketo person {loser.marketo_id} "
            f"merged into {winner.marketo_id}" + (f" (carried: {', '.join(sorted(carried))})" if carried else ""),
            direction=D2M, details={"subordinate": sub, "master": master, "loser": loser.marketo_id,
                                    "carried": carried})
    batch.retry_marketo.append(winner.marketo_id)  # the winner against the master: the normal merge


def _carry(svc: Services, loser: Link, winner: Link) -> dict[str, Value]:
    """The loser's own Marketo changes that the winner's merge would drop: fields where the
    loser differs from its base and the winner still holds its agreed value."""
    fields = svc.marketo_fields()
    people = {int(p["id"]): p for p in svc.marketo.get_leads([loser.marketo_id, winner.marketo_id], fields)}
    if loser.marketo_id not in people or winner.marketo_id not in people:
        return {}
    mine = svc.fields.from_marketo(people[loser.marketo_id])
    theirs = svc.fields.from_marketo(people[winner.marketo_id])
    carried: dict[str, Value] = {}
    for name, value in mine.items():
        spec = svc.fields.spec(name)
        if value in (None, "") or name not in loser.base or name not in winner.base:
            continue  # a blank never overwrites; without a base nothing says which side changed
        if spec.comparable(value) == spec.comparable(loser.base[name]):
            continue
        if spec.comparable(theirs.get(name)) == spec.comparable(winner.base[name]):
            carried[name] = value
    return carried


def marketo_merged(batch: Batch, winner: int, losers: Sequence[int]) -> None:
    """Marketo merged `losers` into `winner`: the winner keeps or takes a link, see the module."""
    svc, out = batch.svc, batch.out
    links = svc.links.get_many([winner, *losers])
    holder = links.get(winner)
    if holder is not None and holder.state == CREATING:
        # The real-time endpoint is creating this person's lead right now: decide once it is done.
        svc.queues.send([Work("marketo", "merged", (winner, *losers), reason="retry")], delay_s=RETRY_DELAY_S)
        return
    for loser in losers:
        link = links.get(loser) or _ended_as_deleted(svc, loser)
        if link is None or link.state == CREATING or not (link.entity and link.dynamics_id):
            continue
        entity, did = link.entity, link.dynamics_id
        records = svc.dataverse.get_by_ids(ENTITY_SETS[entity], [did], svc.select(entity))
        if not records or is_merged(records[0]):
            # Deleted in Dynamics, or merged there already (our own Marketo merge coming back).
            _end(batch, link, f"Marketo person {loser} was merged into {winner}")
            continue
        if holder is None:
            try:
                holder = svc.links.transfer(link, winner)
            except StateConflict:
                svc.queues.send([Work("marketo", "merged", (winner, loser), reason="retry")], delay_s=RETRY_DELAY_S)
                continue
            out.add(holder.person, activity.MERGED,
                    f"Marketo person {loser} was merged into {winner} in Marketo: {winner} now linked to "
                    f"{entity} {did}", direction=M2D, details={"loser": loser, "winner": winner})
            continue
        try:
            svc.links.delete(link, tombstone_at=datetime.now(UTC), merged_into=winner)
        except StateConflict:
            svc.queues.send([Work("marketo", "merged", (winner, loser), reason="retry")], delay_s=RETRY_DELAY_S)
            continue
        message = (f"Marketo person {loser} was merged into {winner} in Marketo; {entity} {did} stays in "
                   f"Dynamics, no longer synced: merge it into {holder.entity} {holder.dynamics_id} in Dynamics too")
        out.add(holder.person, activity.MERGE_SUGGESTED, message,
                details={"loser": loser, "winner": winner, "entity": entity, "record": did,
                         "suggested_master": holder.dynamics_id})
        out.notes.append(MarketoNote(winner, "merge in Dynamics too", message))
    if holder is not None:
        batch.retry_marketo.append(winner)  # the winner's values against its record: the normal merge


def _ended_as_deleted(svc: Services, loser: int) -> Link | None:
    """The loser's link as it was, when the deleted-leads feed ended it first (a merge read in
    a later poll than its deletion): rebuilt without a base, if its record is still unlinked."""
    ended = svc.links.ended(loser)
    if ended is None or svc.links.by_dynamics(*ended) is not None:
        return None
    return Link(loser, ended[0], ended[1], base={})


def merged_away(batch: Batch, entity: str, merged: Mapping[str, int]) -> None:
    """Records whose Marketo person was merged into another in Marketo changed: not synced,
    and the suggestion stands."""
    for rid, winner in merged.items():
        batch.out.add(f"{entity}:{rid}", activity.MERGE_SUGGESTED,
                      f"its Marketo person was merged into {winner} in Marketo: not synced; merge {entity} {rid} "
                      f"in Dynamics into the record linked to Marketo person {winner}",
                      details={"winner": winner, "entity": entity, "record": rid})


def _end(batch: Batch, link: Link, why: str) -> None:
    try:
        batch.svc.links.delete(link)
    except StateConflict:
        batch.retry_marketo.append(link.marketo_id)
        return
    batch.out.add(link.person, activity.DELETED, f"link to {link.entity} {link.dynamics_id} ended: {why}")
