"""A linked lead that is no longer open: follow it to its contact, or report how it ended.

    qualified into a contact (a new one, or an existing contact     -> the link moves to that contact
    chosen as the lead's Existing Contact: `parentcontactid`)           (MOVED); contact rules apply
    ... into a contact another Marketo person is linked to          -> LINK_CONFLICT, the link stays, parked
    disqualified (Lost, Cannot Contact, No Longer Interested)       -> DISQUALIFIED, the link is parked
    cancelled                                                       -> CANCELLED, the link is parked

A parked closed lead is listed by `leadsync failures` and on the health page, and is
reported once (until it changes the way it ended); reopening the lead syncs it again.
What happens to the Marketo person is LEADSYNC_CLOSED_LEAD_ACTION: `keep` writes nothing,
`mark:<field>` writes the status reason (e.g. "Canceled") to that Marketo field.
A qualified lead is read-only in Dynamics, so it is never written to here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import MarketoError, Problem, QuotaExhausted, StateConflict, TransientError, ValidationRule
from shared.rules.leadstate import Closed, Ending, closed
from shared.state import activity
from shared.state.links import PARKED, Link
from shared.sync.batch import D2M, Batch

KINDS = {Ending.DISQUALIFIED: activity.DISQUALIFIED, Ending.CANCELLED: activity.CANCELLED}


def closed_lead(batch: Batch, link: Link, lead: Mapping[str, Any]) -> None:
    """Handle one linked lead whose statecode is not Open."""
    ending = closed(lead)
    if ending is None:
        return
    if ending.ending is Ending.QUALIFIED:
        _qualified(batch, link, lead)
    else:
        _ended(batch, link, ending)


def _qualified(batch: Batch, link: Link, lead: Mapping[str, Any]) -> None:
    svc = batch.svc
    lead_id = str(link.dynamics_id)
    # QualifyLead sets parentcontactid to the contact it made, and an existing contact stays there.
    contact_id = str(lead.get("_parentcontactid_value") or "").lower()
    if not contact_id:
        contacts = svc.dataverse.find_by("contacts", "_originatingleadid_value", [lead_id], ["contactid"])
        if not contacts:
            batch.out.add(link.person, activity.SKIPPED, f"lead {lead_id} was qualified without a contact: "
                          "nothing to link to")
            return
        contact_id = contacts[0]["contactid"].lower()
    other = svc.links.by_dynamics("contact", contact_id)
    if other is not None and other.marketo_id != link.marketo_id:
        conflict = f"link_conflict:{contact_id}:{other.marketo_id}"
        if link.state == PARKED and link.parked_fingerprint == conflict:
            return  # reported already; listed as parked until the people are merged
        try:  # parked, so that `leadsync failures` lists it until someone merges the two people
            svc.links.save(link.parked(f"qualified into contact {contact_id}, linked to another person", conflict),
                           index=False)
        except StateConflict:
            batch.retry_marketo.append(link.marketo_id)
            return
        batch.out.add(link.person, activity.LINK_CONFLICT,
                      f"lead {lead_id} was qualified into contact {contact_id}, which is linked to Marketo person "
                      f"{other.marketo_id}: two people for one contact; merge them in Marketo",
                      details={"lead": lead_id, "contact": contact_id, "other": other.marketo_id})
        return
    try:
        moved = svc.links.move(link, "contact", contact_id)
    except StateConflict:
        batch.retry_marketo.append(link.marketo_id)
        return
    batch.out.add(moved.person, activity.MOVED,
                  f"lead {lead_id} was qualified: now linked to contact {contact_id}; contact rules apply",
                  details={"lead": lead_id, "contact": contact_id})
    batch.retry_marketo.append(link.marketo_id)  # merge the contact in a fresh round


def _ended(batch: Batch, link: Link, ending: Closed) -> None:
    svc = batch.svc
    if link.state == PARKED and link.parked_fingerprint == ending.fingerprint:
        return  # reported when it closed; still listed as parked
    action = svc.settings.closed_lead_action
    then = "the Marketo person is kept as it is"
    # Mark before parking: a 607 here defers the message, and its replay must still find the link open.
    if action.action == "mark" and action.field:
        then = _mark(batch, link, action.field, ending)
    try:
        svc.links.save(link.parked(f"lead {ending.ending} ({ending.label})", ending.fingerprint), index=False)
    except StateConflict:
        batch.retry_marketo.append(link.marketo_id)
        return
    batch.out.add(link.person, KINDS[ending.ending],
                  f"lead {link.dynamics_id} was {ending.ending} in Dynamics ({ending.label}): no longer synced "
                  f"until it is reopened; {then}",
                  details={"lead": link.dynamics_id, "status": ending.status, "label": ending.label,
                           "action": action.action})


def _mark(batch: Batch, link: Link, field_name: str, ending: Closed) -> str:
    try:
        results = batch.svc.marketo.sync_leads([{"id": link.marketo_id, field_name: ending.label}],
                                               action="updateOnly", lookup_field="id")
    except QuotaExhausted:
        raise  # not a refusal: the message waits for the quota's reset and marks then
    except (MarketoError, TransientError) as exc:
        why = str(exc)
    else:
        reasons = [r for res in results if res.status not in ("updated", "created") for r in res.reasons]
        if not reasons:
            return f"Marketo {field_name} set to {ending.label!r}"
        why = "; ".join(f"Marketo {r.code}: {r.message}" for r in reasons)
    batch.out.failed(link.person, activity.REJECTED, [Problem(field_name, ValidationRule.REJECTED, why)],
                     direction=D2M, marketo_id=None, what=f"marking the Marketo person's {field_name}")
    return f"Marketo {field_name} could not be set"
