"""Dynamics records not linked yet: link each to the Marketo person with the same address,
create the people Marketo lacks, and let a contact qualified from a linked lead take its link.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from shared.errors import Problem, StateConflict
from shared.rules import eligibility
from shared.rules.emails import NEAR_MISS, exact_key, loose_key, near_miss_message, same_address
from shared.rules.fieldmap import Value
from shared.runtime import PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.links import CREATING, LINKED, Link
from shared.sync import owners
from shared.sync.batch import D2M, Batch, eligible
from shared.sync.echo import never_modified
from shared.sync.lookups import dereferenced, unsendable_to_marketo


def likely_new(svc: Services, entity: str, record: Mapping[str, Any]) -> bool:
    """Never modified since created, and a record `link_or_create` would link or create
    (so that what `reserve_index` inserts for it is soon a link's pointer)."""
    if not never_modified(record):
        return False
    if entity == "contact" and record.get("_originatingleadid_value"):
        return False
    return eligible(svc, entity, record, linking=True).ok


def link_or_create(batch: Batch, entity: str, records: Sequence[Mapping[str, Any]],
                    buried: Mapping[str, datetime]) -> list[Link]:
    """Link new Dynamics records to Marketo people (same email), creating missing ones.

    `buried`: when the Marketo person of some of these records was deleted in Marketo.
    Returns links that still need a merge (matched by email, no base yet). People created
    here start with a base equal to what was written, so they need no merge.
    """
    svc, out = batch.svc, batch.out
    records = list[Mapping[str, Any]](dereferenced(svc, entity, records))  # lookups, currency: Marketo values
    key = PRIMARY_KEYS[entity]
    email_spec = svc.fields.email
    email_col = email_spec.column(entity)
    candidates: list[Mapping[str, Any]] = []
    to_merge: list[Link] = []
    for record in records:
        rid = record[key].lower()
        who = f"{entity}:{rid}"
        verdict = eligible(svc, entity, record, linking=True, deleted_in_marketo_at=buried.get(rid))
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
        unsendable = unsendable_to_marketo(svc.fields.from_dynamics(entity, record))
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
    payload: list[dict[str, Any]] = [{s.marketo: values[s.marketo] for s in specs if values.get(s.marketo) is not None}
                                     for _, values in items]
    for person, update in zip(payload, owners.owner_email_updates(svc, [(r, None) for r, _ in items]), strict=True):
        person.update(update or {})
    results = svc.marketo.sync_leads(payload, action="createOnly", lookup_field="email",
                                     partition_name=svc.settings.marketo_partition)
    new_links: list[Link] = []
    for (record, values), result in zip(items, results, strict=True):
        rid = record[key].lower()
        if result.status == "created" and result.id is not None:
            base = {s.marketo: values.get(s.marketo) for s in specs}
            owners.remember_owner(svc, base, {}, record, written=True)
            new_links.append(Link(int(result.id), entity, rid, base=base))
        elif any(r.code == "1005" for r in result.reasons):
            batch.retry_dynamics[entity].append(rid)  # created meanwhile by someone else: link next round
        else:
            problems = [Problem("", "rejected", f"Marketo {r.code}: {r.message}", r.code) for r in result.reasons]
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
