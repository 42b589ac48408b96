"""Apply one work message: read both sides fresh, merge per field, write only what differs.

The steps for a batch of up to 300 people:

1. resolve the people: Marketo ids -> links; Dynamics ids -> current records -> links,
   and for Dynamics records not linked yet, link them to a Marketo person with the same
   email or create one (a new Marketo person is never pushed to Dynamics here);
2. read the other side in bulk (one Marketo call per 300, Dataverse In() queries);
3. merge each person against its base (`merge.merge`), validate what goes to Dynamics;
4. write in bulk: Marketo `updateOnly` by id (300 per call), Dataverse `$batch` with each
   record's ETag (If-Match), continue-on-error so one bad record cannot sink the rest;
5. store each new base (conditional on the link's ETag), then the activity log.

Writes happen before the base is stored, so a crash in between leaves both sides equal
and the next run stores the base without writing anything. Conflicts on one record
(a Dataverse 412, a link saved by someone else) re-enqueue that record alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.clients.dataverse import WriteOp
from shared.errors import Problem, StateConflict
from shared.rules import eligibility
from shared.rules.emails import NEAR_MISS, exact_key, loose_key, near_miss_message, same_address
from shared.rules.fieldmap import Value
from shared.rules.merge import MergeResult, merge
from shared.rules.validation import unencodable, validate
from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.links import CREATING, LINKED, PARKED, Link
from shared.state.workqueue import Work, chunked
from shared.sync.echo import never_modified
from shared.sync.report import Outcomes, flush

log = logging.getLogger("leadsync")

M2D = activity.Direction.MARKETO_TO_DYNAMICS
D2M = activity.Direction.DYNAMICS_TO_MARKETO
RETRY_DELAY_S = 5  # a re-enqueued record waits this long: the conflict that sent it back usually clears by then


@dataclass
class Pending:
    """One person on its way through a batch."""

    link: Link
    marketo: dict[str, Any]
    dynamics: dict[str, Any]
    result: MergeResult | None = None
    dynamics_failed: bool = False
    marketo_failed: bool = False
    conflict: bool = False


@dataclass
class Batch:
    svc: Services
    out: Outcomes
    retry_marketo: list[int] = field(default_factory=list)
    retry_dynamics: dict[str, list[str]] = field(default_factory=lambda: {"lead": [], "contact": []})


def apply_work(svc: Services, work: Work) -> Outcomes:
    """Apply one message. Transient errors propagate (the queue retries the message)."""
    batch = Batch(svc, Outcomes(work.operation_id))
    if work.kind == "deleted":
        if work.source == "marketo":
            _marketo_deleted(batch, [int(i) for i in work.ids])
        else:
            assert work.entity is not None
            _dynamics_deleted(batch, work.entity, [str(i) for i in work.ids])
    elif work.source == "marketo":
        links = [lk for lk in svc.links.get_many(int(i) for i in work.ids).values() if lk.state != "creating"]
        _reconcile(batch, links, prefetched={})
    else:
        assert work.entity is not None
        _dynamics_changed(batch, work.entity, [str(i) for i in work.ids])
    _requeue(batch)
    flush(svc, batch.out)
    return batch.out


# -- resolving people ------------------------------------------------------------------
def _dynamics_changed(batch: Batch, entity: str, ids: list[str]) -> None:
    svc = batch.svc
    key = PRIMARY_KEYS[entity]
    records = {r[key].lower(): r for r in svc.dataverse.get_by_ids(ENTITY_SETS[entity], ids, svc.select(entity))}
    # Records never modified since created are almost all new: one insert each, in
    # transactions, tells which have no index row, where a lookup reads each one.
    reserved = svc.links.reserve_index(entity, [i for i, r in records.items() if _likely_new(svc, entity, r)])
    found = svc.links.lookup(entity, [i for i in records if i not in reserved])
    unlinked = [r for i, r in records.items() if i not in found.links]
    new_links = _link_or_create(batch, entity, unlinked, found.buried)
    prefetched = {(entity, i): r for i, r in records.items()}
    _reconcile(batch, [*found.links.values(), *new_links], prefetched)


def _likely_new(svc: Services, entity: str, record: Mapping[str, Any]) -> bool:
    """Never modified since created, and a record `_link_or_create` would link or create
    (so that what `reserve_index` inserts for it is soon a link's pointer)."""
    if not never_modified(record):
        return False
    if entity == "contact" and record.get("_originatingleadid_value"):
        return False
    return _eligible(svc, entity, record, linking=True).ok


def _eligible(svc: Services, entity: str, record: Mapping[str, Any], *, linking: bool,
              deleted_in_marketo_at: datetime | None = None) -> eligibility.Verdict:
    email = svc.fields.email.canonical(record.get(svc.fields.email.column(entity) or ""))
    return eligibility.check(record, entity=entity, sync_filter_field=svc.settings.sync_filter_field,
                             email=email if isinstance(email, str) else None, linking=linking,
                             deleted_in_marketo_at=deleted_in_marketo_at)


def _link_or_create(batch: Batch, entity: str, records: Sequence[Mapping[str, Any]],
                    buried: Mapping[str, datetime]) -> list[Link]:
    """Link new Dynamics records to Marketo people (same email), creating missing ones.

    `buried`: when the Marketo person of some of these records was deleted in Marketo.
    Returns links that still need a merge (matched by email, no base yet). People created
    here start with a base equal to what was written, so they need no merge.
    """
    svc, out = batch.svc, batch.out
    key = PRIMARY_KEYS[entity]
    email_spec = svc.fields.email
    email_col = email_spec.column(entity)
    candidates: list[Mapping[str, Any]] = []
    to_merge: list[Link] = []
    for record in records:
        rid = record[key].lower()
        who = f"{entity}:{rid}"
        verdict = _eligible(svc, entity, record, linking=True, deleted_in_marketo_at=buried.get(rid))
        if verdict.reason is eligibility.Reason.SYNC_FILTER_OFF:
            continue  # not ours to sync
        if entity == "contact" and record.get("_originatingleadid_value"):
            handled, moved = _follow_qualification(batch, record)
            if moved is not None:
                to_merge.append(moved)
            if handled:
                continue
        if verdict.reason is eligibility.Reason.NO_EMAIL:
            out.failed(who, activity.VALIDATION_FAILED, [Problem(email_col or "email", "required", verdict.message)],
                       direction=D2M, marketo_id=None, what=f"linking {entity}")
            continue
        if not verdict.ok:
            continue  # a lead no longer open, or a person deleted in Marketo: not a new Marketo person
        # A value no encoder can write would sink the lookup or the create for the whole batch.
        unsendable = unencodable(svc.fields.from_dynamics(entity, record))
        if unsendable:
            out.failed(who, activity.VALIDATION_FAILED, unsendable, direction=D2M, marketo_id=None,
                       what=f"linking {entity}")
            continue
        candidates.append(record)
    if not candidates:
        return to_merge
    emails = [str(email_spec.canonical(r.get(email_col or ""))) for r in candidates]
    # Marketo's lookup may also return look-alike addresses: each hit is grouped under the
    # wanted address it resembles, and only the same address (ASCII case aside) matches.
    found: dict[str, list[dict[str, Any]]] = {}
    for lead in svc.marketo.find_leads("email", list(dict.fromkeys(emails)), ["id", "email"]):
        found.setdefault(loose_key(str(lead.get("email") or "")), []).append(lead)
    to_match: list[Link] = []
    to_create: list[tuple[Mapping[str, Any], dict[str, Value]]] = []
    claimed: set[str] = set()
    for record, email in zip(candidates, emails, strict=True):
        rid = record[key].lower()
        hits = sorted(found.get(loose_key(email), []), key=lambda lead: int(lead["id"]))
        matches = [lead for lead in hits if same_address(lead.get("email"), email)]
        if exact_key(email) in claimed:
            batch.retry_dynamics[entity].append(rid)  # a twin in this batch: link it next round
            continue
        claimed.add(exact_key(email))
        if hits and not matches:
            out.failed(f"{entity}:{rid}", activity.VALIDATION_FAILED,
                       [Problem(email_col or "email", NEAR_MISS, near_miss_message(f"Marketo person {lead['id']}"))
                        for lead in hits], direction=D2M, marketo_id=None, what=f"linking {entity}")
            continue
        if matches:
            marketo_id = int(matches[0]["id"])
            existing = svc.links.get(marketo_id)
            if existing is not None and existing.state == CREATING:
                taken = svc.links.claim(marketo_id) if existing.stale_claim() else None
                if taken is None:
                    batch.retry_dynamics[entity].append(rid)  # the webhook is creating it right now
                else:  # its holder died: this record takes the person over
                    to_match.append(replace(taken, entity=entity, dynamics_id=rid, base={}, state=LINKED))
                continue
            if existing is not None and (existing.entity, existing.dynamics_id) == (entity, rid):
                # Linked already, but its index row was lost (a crash between the two
                # writes): saving the link again restores it.
                try:
                    to_merge.append(svc.links.save(existing))
                except StateConflict:
                    batch.retry_dynamics[entity].append(rid)
                continue
            if existing is not None:
                batch.out.add(f"{entity}:{rid}", activity.SKIPPED,
                              f"Marketo person {marketo_id} with the same email is already linked to "
                              f"{existing.entity} {existing.dynamics_id}; not linking a second record",
                              direction=D2M)
                continue
            to_match.append(Link(marketo_id, entity, rid, base={}))
        else:
            to_create.append((record, svc.fields.from_dynamics(entity, record)))
    to_merge += _save_new(batch, entity, to_match)
    if to_create:
        _create_marketo_people(batch, entity, to_create)
    return to_merge


def _save_new(batch: Batch, entity: str, links: Iterable[Link]) -> list[Link]:
    saved: list[Link] = []
    for link, result in zip(links, batch.svc.links.save_many(links), strict=True):
        if isinstance(result, StateConflict):
            batch.retry_dynamics[entity].append(str(link.dynamics_id))
        else:
            batch.out.add(link.person, activity.LINKED,
                          f"linked to Dynamics {entity} {link.dynamics_id} by email", direction=D2M)
            saved.append(result)
    return saved


def _create_marketo_people(batch: Batch, entity: str, items: list[tuple[Mapping[str, Any], dict[str, Value]]]) -> None:
    svc = batch.svc
    key = PRIMARY_KEYS[entity]
    specs = svc.fields.for_entity(entity)
    payload = [{s.marketo: values[s.marketo] for s in specs if values.get(s.marketo) is not None}
               for _, values in items]
    results = svc.marketo.sync_leads(payload, action="createOnly", lookup_field="email")
    new_links: list[Link] = []
    for (record, values), result in zip(items, results, strict=True):
        rid = record[key].lower()
        if result.status == "created" and result.id is not None:
            base = {s.marketo: values.get(s.marketo) for s in specs}
            new_links.append(Link(int(result.id), entity, rid, base=base))
        elif any(r.code == "1005" for r in result.reasons):
            batch.retry_dynamics[entity].append(rid)  # created meanwhile by someone else: link next round
        else:
            problems = [Problem("", "rejected", f"Marketo {r.code}: {r.message}") for r in result.reasons]
            batch.out.failed(f"{entity}:{rid}", activity.REJECTED, problems, direction=D2M, marketo_id=None,
                             what="creating the Marketo person")
    for link, saved in zip(new_links, svc.links.save_many(new_links), strict=True):
        if isinstance(saved, StateConflict):
            batch.retry_dynamics[entity].append(str(link.dynamics_id))
        else:
            batch.out.add(link.person, activity.CREATED,
                          f"created Marketo person {link.marketo_id} from Dynamics {entity} {link.dynamics_id}",
                          direction=D2M)


def _follow_qualification(batch: Batch, contact: Mapping[str, Any]) -> tuple[bool, Link | None]:
    """A contact made by qualifying a linked lead takes over that lead's link.

    Returns (handled, moved link): handled is False when the originating lead was never
    linked, so the contact is an ordinary new record.
    """
    svc = batch.svc
    lead_id = str(contact["_originatingleadid_value"]).lower()
    contact_id = contact["contactid"].lower()
    link = svc.links.by_dynamics("lead", lead_id)
    if link is None:
        return False, None
    try:
        moved = svc.links.move(link, "contact", contact_id)
    except StateConflict:
        batch.retry_dynamics["contact"].append(contact_id)
        return True, None
    batch.out.add(moved.person, activity.MOVED,
                  f"lead {lead_id} was qualified: now linked to contact {contact_id}; contact rules apply")
    return True, moved


# -- reconciling linked people ---------------------------------------------------------
def _reconcile(batch: Batch, links: Sequence[Link], prefetched: Mapping[tuple[str, str], Mapping[str, Any]]) -> None:
    svc = batch.svc
    if not links:
        return
    links = [lk for lk in links if lk.entity and lk.dynamics_id]
    marketo = {int(r["id"]): r for r in svc.marketo.get_leads([lk.marketo_id for lk in links], svc.marketo_fields())}
    dynamics: dict[tuple[str, str], Mapping[str, Any]] = dict(prefetched)
    for entity in ("lead", "contact"):
        missing = [str(lk.dynamics_id) for lk in links if lk.entity == entity
                   and (entity, str(lk.dynamics_id)) not in dynamics]
        if missing:
            key = PRIMARY_KEYS[entity]
            for r in svc.dataverse.get_by_ids(ENTITY_SETS[entity], missing, svc.select(entity)):
                dynamics[(entity, r[key].lower())] = r
    pending: list[Pending] = []
    gone_marketo: list[Link] = []
    gone_dynamics: list[Link] = []
    for link in links:
        entity, did = str(link.entity), str(link.dynamics_id)
        m = marketo.get(link.marketo_id)
        d = dynamics.get((entity, did))
        if m is None:
            gone_marketo.append(link)
            continue
        if d is None:
            gone_dynamics.append(link)
            continue
        verdict = _eligible(svc, entity, d, linking=False)
        if verdict.reason is eligibility.Reason.SYNC_FILTER_OFF:
            batch.out.add(link.person, activity.SKIPPED, f"sync filter is No on {entity} {did}: not synced")
            continue
        if verdict.reason is eligibility.Reason.LEAD_NOT_OPEN:
            _qualified_lead(batch, link, did)
            continue
        pending.append(Pending(link, m, dict(d)))
    if gone_marketo:
        _end_links(batch, gone_marketo, "the Marketo person no longer exists")
    if gone_dynamics:
        _mark_deleted_in_marketo(batch, gone_dynamics)
    _merge_and_write(batch, pending)


def _qualified_lead(batch: Batch, link: Link, lead_id: str) -> None:
    """A linked lead is no longer open: move the link to its contact once that exists.

    A qualified lead is read-only in Dynamics, so it is never written to here.
    """
    svc = batch.svc
    contacts = svc.dataverse.find_by("contacts", "_originatingleadid_value", [lead_id], ["contactid"])
    if not contacts:
        batch.out.add(link.person, activity.SKIPPED, f"lead {lead_id} is no longer open and has no contact")
        return
    contact_id = contacts[0]["contactid"].lower()
    try:
        moved = svc.links.move(link, "contact", contact_id)
    except StateConflict:
        batch.retry_marketo.append(link.marketo_id)
        return
    batch.out.add(moved.person, activity.MOVED,
                  f"lead {lead_id} was qualified: now linked to contact {contact_id}; contact rules apply")
    batch.retry_marketo.append(link.marketo_id)  # merge the contact in a fresh round


def _fingerprint(p: Pending, entity: str, svc: Services) -> str:
    data = [svc.fields.from_marketo(p.marketo), svc.fields.from_dynamics(entity, p.dynamics)]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _merge_and_write(batch: Batch, pending: list[Pending]) -> None:
    svc, out = batch.svc, batch.out
    to_marketo: list[tuple[Pending, dict[str, Any]]] = []
    to_dynamics: list[tuple[Pending, WriteOp]] = []
    for p in pending:
        link = p.link
        entity = str(link.entity)
        if link.state == PARKED and link.parked_fingerprint == _fingerprint(p, entity, svc):
            continue  # still the values that failed: no retry loop until someone edits
        specs = svc.fields.for_entity(entity)
        p.result = merge(specs, entity, link.base, svc.fields.from_marketo(p.marketo),
                         svc.fields.from_dynamics(entity, p.dynamics))
        if p.result.to_dynamics:
            body = svc.fields.to_dynamics(entity, p.result.to_dynamics)
            problems = validate(svc.rules(entity), body, creating=False)
            if problems:
                p.dynamics_failed = True
                out.failed(link.person, activity.VALIDATION_FAILED, problems, direction=M2D,
                           marketo_id=link.marketo_id, what=f"updating Dynamics {entity}")
            else:
                etag = p.dynamics.get("@odata.etag")
                to_dynamics.append((p, WriteOp.update(ENTITY_SETS[entity], str(link.dynamics_id), body, etag)))
        if p.result.to_marketo:
            unsendable = unencodable(p.result.to_marketo)
            if unsendable:
                p.marketo_failed = True
                out.failed(link.person, activity.VALIDATION_FAILED, unsendable, direction=D2M,
                           marketo_id=link.marketo_id, what="updating the Marketo person")
            else:
                to_marketo.append((p, {"id": link.marketo_id, **svc.fields.to_marketo(p.result.to_marketo)}))
    if to_dynamics:
        results = svc.dataverse.batch_write([op for _, op in to_dynamics])
        for (p, _), res in zip(to_dynamics, results, strict=True):
            if res.ok:
                continue
            if res.status == 412:
                p.conflict = True
            else:
                p.dynamics_failed = True
                out.failed(p.link.person, activity.REJECTED,
                           [Problem("", "rejected", f"Dynamics {res.error_code}: {res.error_message}")], direction=M2D,
                           marketo_id=p.link.marketo_id, what=f"updating Dynamics {p.link.entity}")
    if to_marketo:
        ready = [(p, rec) for p, rec in to_marketo if not p.conflict]
        results_m = svc.marketo.sync_leads([rec for _, rec in ready], action="updateOnly", lookup_field="id")
        for (p, _), outcome in zip(ready, results_m, strict=True):
            if outcome.status not in ("updated", "created"):
                p.marketo_failed = True
                out.failed(p.link.person, activity.REJECTED,
                           [Problem("", "rejected", f"Marketo {r.code}: {r.message}") for r in outcome.reasons],
                           direction=D2M, marketo_id=p.link.marketo_id, what="updating the Marketo person")
    _store_bases(batch, [p for p in pending if p.result is not None])


def _store_bases(batch: Batch, done: list[Pending]) -> None:
    svc, out = batch.svc, batch.out
    updates: list[tuple[Pending, Link]] = []
    for p in done:
        assert p.result is not None
        link, entity = p.link, str(p.link.entity)
        if p.conflict:
            batch.retry_marketo.append(link.marketo_id)
            continue  # its collisions are logged by the round that lands them, once
        if not (p.dynamics_failed or p.marketo_failed):
            for c in p.result.collisions:
                out.collision(link.person, entity, c)
        base = dict(p.result.base)
        # A direction that failed keeps its old base, so it is retried when the person changes.
        for failed, fields in ((p.dynamics_failed, p.result.to_dynamics), (p.marketo_failed, p.result.to_marketo)):
            if failed:
                for name in fields:
                    if name in link.base:
                        base[name] = link.base[name]
                    else:
                        base.pop(name, None)
        if p.dynamics_failed or p.marketo_failed:
            new = replace(link, base=base).parked("write failed", _fingerprint(p, entity, svc))
        elif base == link.base and link.state == LINKED:
            continue  # our own echo, or nothing mapped changed: no write at all
        else:
            new = link.agreed(base)
        updates.append((p, new))
        if p.result.changed and not (p.dynamics_failed or p.marketo_failed):
            out.add(link.person, activity.SYNCED, _describe(p.result), direction=_direction(p.result),
                    details={"to_dynamics": p.result.to_dynamics, "to_marketo": p.result.to_marketo})
    # These links point where they did when read: their index rows are already right.
    for (p, _), saved in zip(updates, svc.links.save_many([lk for _, lk in updates], index=False), strict=True):
        if isinstance(saved, StateConflict):
            batch.retry_marketo.append(p.link.marketo_id)


def _describe(result: MergeResult) -> str:
    parts = []
    if result.to_dynamics:
        parts.append("to Dynamics: " + ", ".join(sorted(result.to_dynamics)))
    if result.to_marketo:
        parts.append("to Marketo: " + ", ".join(sorted(result.to_marketo)))
    return "; ".join(parts)


def _direction(result: MergeResult) -> str:
    if result.to_dynamics and result.to_marketo:
        return "both"
    return M2D if result.to_dynamics else D2M


# -- deletes ---------------------------------------------------------------------------
def _marketo_deleted(batch: Batch, ids: list[int]) -> None:
    links = list(batch.svc.links.get_many(ids).values())
    _end_links(batch, links, "the person was deleted in Marketo; the Dynamics record is kept",
               tombstone_at=datetime.now(UTC))


def _dynamics_deleted(batch: Batch, entity: str, ids: list[str]) -> None:
    links = list(batch.svc.links.by_dynamics_many(entity, ids).values())
    _mark_deleted_in_marketo(batch, links)


def _mark_deleted_in_marketo(batch: Batch, links: list[Link]) -> None:
    """Dynamics deleted the record: flag the Marketo person (never delete it), end the link."""
    svc = batch.svc
    if not links:
        return
    field_name = svc.settings.marketo_deleted_field
    results = svc.marketo.sync_leads([{"id": lk.marketo_id, field_name: True} for lk in links],
                                     action="updateOnly", lookup_field="id")
    for link, res in zip(links, results, strict=True):
        if res.status not in ("updated", "created") and not any(r.code == "1004" for r in res.reasons):
            batch.out.failed(link.person, activity.REJECTED,
                             [Problem(field_name, "rejected", f"Marketo {r.code}: {r.message}") for r in res.reasons],
                             direction=D2M, marketo_id=link.marketo_id, what=f"marking {field_name}")
    _end_links(batch, links, f"deleted in Dynamics: Marketo person flagged {field_name}=true")


def _end_links(batch: Batch, links: list[Link], why: str, *, tombstone_at: datetime | None = None) -> None:
    for link in links:
        try:
            batch.svc.links.delete(link, tombstone_at=tombstone_at)
        except StateConflict:
            batch.retry_marketo.append(link.marketo_id)
            continue
        batch.out.add(link.person, activity.DELETED, f"link to {link.entity} {link.dynamics_id} ended: {why}")


def _requeue(batch: Batch) -> None:
    items: list[Work] = []
    if batch.retry_marketo:
        items += chunked("marketo", "changed", batch.retry_marketo, reason="retry")
    for entity, ids in batch.retry_dynamics.items():
        if ids:
            items += chunked("dynamics", "changed", ids, entity=entity, reason="retry")
    if items:
        log.info("op=%s re-enqueued %d records for another round", batch.out.operation_id,
                 len(batch.retry_marketo) + sum(len(v) for v in batch.retry_dynamics.values()))
        batch.svc.queues.send(items, delay_s=RETRY_DELAY_S)
