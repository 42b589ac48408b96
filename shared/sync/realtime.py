"""Real-time lead creation, called by a Marketo campaign's webhook ("Sync Person to Microsoft").

The webhook sends only `{"leadId": {{lead.Id}}}`; the person's fields are read from
Marketo, so a forged body cannot inject values. Outcomes:

    linked already, or a Dynamics lead/contact has the email  -> "exists" (link if needed;
                                                                  nothing is written to either side)
    otherwise, valid                                          -> the lead is created now ("created")
    otherwise, invalid                                        -> "invalid" with the reasons, also
                                                                  written to the person's activity logs
    a record has only a look-alike email (the lookup's        -> "invalid" (rule near_miss): never linked,
    collation matched e.g. ß to ss; see shared.rules.emails)           never a second lead for that address
    a field holds a value no encoder can write                -> "invalid" (rule encoding)
    the lead's owner names no Dynamics user or team           -> "invalid" (rule owner; see sync/owners)
    Dynamics refuses the create: a plug-in, a duplicate       -> 422 "rejected" with Dynamics' code and
    detection rule                                               reason, in both activity logs
    ... a missing privilege (403)                             -> 502 "rejected" (the app's security role
                                                                  must change, not the person)
    Dynamics is unavailable (5xx, throttled, after retries)   -> 503 "unavailable", logged as well
    Marketo's daily quota is used up (`shared.state.pause`)         -> 503 "paused" with Retry-After (the
                                                                  reset), and an activity entry
It never forces an update sync: an existing lead is left to the background sync.

Concurrent calls for one person: the first claims the person's link row (an atomic
insert); the others wait briefly for it and then report what it did, so exactly one lead
is created.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.config import Secret
from shared.errors import (
    BadMessage,
    DataverseError,
    MarketoError,
    Problem,
    QuotaExhausted,
    TransientError,
    ValidationRule,
)
from shared.rules.emails import NEAR_MISS, near_miss_message, same_address
from shared.rules.validation import unencodable, validate
from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.activity import Direction
from shared.state.links import CREATING, Link, person_key
from shared.state.pause import Pause
from shared.sync import owners
from shared.sync.lookups import Binder
from shared.sync.report import MarketoNote, Outcomes, flush

MAX_BODY = 4096
M2D, D2M = Direction.MARKETO_TO_DYNAMICS, Direction.DYNAMICS_TO_MARKETO
SECRET_HEADER = "x-leadsync-secret"


def webhook_secret_ok(expected: Secret, given: str | None) -> bool:
    """True when no secret is configured, or the header carries it (constant-time compare)."""
    secret = expected.reveal()
    if not secret:
        return True
    return hmac.compare_digest((given or "").encode("utf-8"), secret.encode("utf-8"))


@dataclass(frozen=True)
class Result:
    status: str  # "created" | "exists" | "invalid" | "rejected" | "unavailable" | "not_found" | "busy" | "paused"
    http_status: int
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: int | None = None  # seconds, for a 503
    look_again_s: int | None = None  # when the app itself tries a paused request again (the pause's next look)


def parse_body(raw: bytes) -> int:
    """The Marketo lead id from a webhook body; BadMessage says what is wrong.

    The body must be exactly the webhook template `{"leadId": {{lead.Id}}}` as Marketo
    renders it: UTF-8 JSON (no byte-order mark) of at most MAX_BODY bytes, one object whose
    only key is `leadId`, once, holding a JSON integer in 1..2**31-1. JSON whitespace
    between tokens is allowed; strings, floats, booleans, extra or repeated keys are not.
    """
    if len(raw) > MAX_BODY:
        raise BadMessage(f"body is larger than {MAX_BODY} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("body is not UTF-8") from None
    if text.startswith("\ufeff"):
        raise BadMessage("body starts with a byte-order mark; send plain UTF-8 JSON")
    # Checked before parsing, because json.loads recurses once per level and a 4 KiB body
    # can nest deep enough to exhaust the stack.
    if _nesting(text) > 1:
        raise BadMessage('body must be a flat JSON object like {"leadId": 1234}')
    try:
        body = json.loads(text, object_pairs_hook=_pairs)
    except ValueError:
        raise BadMessage('body must be JSON like {"leadId": 1234}') from None
    if not isinstance(body, dict) or list(body) != ["leadId"]:
        raise BadMessage('body must be a JSON object with the one key "leadId"')
    lead_id = body["leadId"]
    if type(lead_id) is not int or not 0 < lead_id < 2**31:
        raise BadMessage('"leadId" must be a JSON integer from 1 to 2147483647 (the webhook token {{lead.Id}})')
    return lead_id


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadMessage("body repeats a key")
    return dict(pairs)


def _nesting(text: str) -> int:
    """The deepest nesting of JSON arrays and objects in `text`, brackets inside strings ignored."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def sync_person(svc: Services, lead_id: int, *, operation_id: str, wait_s: float = 20.0) -> Result:
    return sync_linked(svc, lead_id, svc.links.get(lead_id), operation_id=operation_id, wait_s=wait_s)


def sync_linked(svc: Services, lead_id: int, existing: Link | None, *, operation_id: str,
                wait_s: float = 20.0) -> Result:
    """`sync_person` for a caller that has just read the person's link (`existing`, None if none)."""
    out = Outcomes(operation_id)
    try:
        if existing is not None and not existing.stale_claim():
            # Answered from the link, with no Marketo call: so it says nothing about the quota
            # and must not take (and spend) a pause's re-check turn.
            return _wait_for(svc, existing, wait_s)
        gate = svc.pauses.gate(realtime=True)
        if not gate.go and gate.pause is not None:
            return _paused(out, lead_id, gate.pause)
        try:
            result = _sync_person(svc, lead_id, out, wait_s)
        except QuotaExhausted as exc:
            return _paused(out, lead_id, svc.pauses.quota_exhausted(exc))
        except DataverseError as exc:  # a lookup, the metadata or the owner refused or unavailable
            return _refused(out, lead_id, exc)
        svc.pauses.resumed(gate)
        return result
    finally:
        flush(svc, out, marketo_later=True)


def _paused(out: Outcomes, lead_id: int, pause: Pause) -> Result:
    """Nothing was written now: the app finishes the request after the pause (`shared.sync.finish`)."""
    now = datetime.now(UTC)
    out.add(f"m{lead_id}", activity.PAUSED, f"real-time sync not done yet: {pause.describe()}; "
            "nothing was written, LeadSync finishes it after the pause", direction="marketo->dynamics",
            details={"code": pause.code, "until": pause.until.isoformat()})
    return Result("paused", 503, {"status": "paused", "leadId": lead_id, "error": pause.describe(),
                                  "until": pause.until.astimezone(UTC).isoformat().replace("+00:00", "Z")},
                  retry_after=pause.seconds_to_reset(now), look_again_s=pause.seconds_to_recheck(now))


def _sync_person(svc: Services, lead_id: int, out: Outcomes, wait_s: float) -> Result:
    # No link, or a claim left by a call that died mid-create: look again from the start
    # (if that call did create the lead, the email lookup below finds and links it).
    leads = svc.marketo.get_leads([lead_id], svc.marketo_fields())
    if not leads:
        return Result("not_found", 404, {"status": "not_found", "error": f"Marketo has no person {lead_id}"})
    values = svc.fields.from_marketo(leads[0])
    unsendable = unencodable(values)
    if unsendable:  # before the lookup: such a value cannot even be put in a query
        return _invalid(out, lead_id, unsendable, "creating the Dynamics lead")
    email_spec = svc.fields.email
    email = values.get(email_spec.marketo)
    if email is not None:
        # Leads and contacts at once: the webhook waits for both lookups, not their sum.
        lookups = {entity: (column, svc.lookups.submit(svc.dataverse.find_by, ENTITY_SETS[entity], column,
                                                       [str(email)], [PRIMARY_KEYS[entity], column]))
                   for entity in ("lead", "contact") if (column := email_spec.column(entity)) is not None}
        near: list[str] = []
        for entity, (column, lookup) in lookups.items():  # a lead with the email wins over a contact with it
            key = PRIMARY_KEYS[entity]
            # The lookup's collation also finds look-alike addresses: only the same address links.
            matches = lookup.result()
            exact = [m for m in matches if same_address(m.get(column), email)]
            if exact:
                return _link_existing(svc, out, lead_id, entity, exact[0][key].lower(), wait_s)
            near += [f"Dynamics {entity} {m[key].lower()}" for m in matches]
        if near:
            problems = [Problem(email_spec.marketo, NEAR_MISS, near_miss_message(where)) for where in near]
            return _invalid(out, lead_id, problems, "linking to an existing Dynamics record")
    claim = svc.links.claim(lead_id)
    if claim is None:
        current = svc.links.get(lead_id)
        return _wait_for(svc, current, wait_s) if current else Result("busy", 409, {"status": "busy"})
    try:
        return _create_lead(svc, out, claim, values, leads[0])
    except BaseException:
        svc.links.delete(claim)  # let a retry of the webhook try again
        raise


def _create_lead(svc: Services, out: Outcomes, claim: Link, values: dict[str, Any],
                 person: dict[str, Any]) -> Result:
    specs = svc.fields.for_entity("lead")
    body = {k: v for k, v in svc.fields.to_dynamics("lead", values).items() if v is not None}
    for column, default in svc.fields.create_defaults.get("lead", {}).items():
        body.setdefault(column, default)
    body, problems = Binder(svc, "lead", [values]).bind(body, None)
    problems += validate(svc.rules("lead"), body, creating=True)
    owner = owners.for_new_lead(svc, person)
    if isinstance(owner, Problem):
        problems.append(owner)
    if problems:
        svc.links.delete(claim)
        return _invalid(out, claim.marketo_id, problems, "creating the Dynamics lead")
    if isinstance(owner, owners.Owner):
        body.update(owner.bind())
    try:
        lead_id = svc.dataverse.create(ENTITY_SETS["lead"], body, detect_duplicates=svc.settings.duplicate_detection)
    except DataverseError as exc:
        svc.links.delete(claim)
        return _refused(out, claim.marketo_id, exc)
    base = {s.marketo: values.get(s.marketo) for s in specs}
    svc.links.save(Link(claim.marketo_id, "lead", lead_id.lower(), base=base, etag=claim.etag))
    owned = f", owned by {owner.table} {owner.name or owner.id}" if isinstance(owner, owners.Owner) else ""
    out.add(claim.person, activity.CREATED, f"created Dynamics lead {lead_id} (real-time){owned}",
            direction="marketo->dynamics")
    # A marketer looks for the create where Marketo's own sync puts it: the person's Activity Log.
    out.notes.append(MarketoNote(claim.marketo_id, "created Dynamics lead", f"Dynamics lead {lead_id.lower()}{owned}"))
    if isinstance(owner, owners.Owner):
        _owner_email_to_marketo(svc, out, claim.marketo_id, owner, person)
    return Result("created", 201, {"status": "created", "leadId": claim.marketo_id, "dynamicsId": lead_id.lower(),
                                   "entity": "lead", **({"owner": {"table": owner.table, "id": owner.id}}
                                                        if isinstance(owner, owners.Owner) else {})})


def _owner_email_to_marketo(svc: Services, out: Outcomes, marketo_id: int, owner: owners.Owner,
                            person: dict[str, Any]) -> None:
    """Best effort: the lead exists; a failed write is logged and the background sync retries
    it the next time the lead changes."""
    field_name = svc.settings.owner_email_field
    if not field_name or not owner.email or (person.get(field_name) or "").lower() == owner.email.lower():
        return
    try:
        results = svc.marketo.sync_leads([{"id": marketo_id, field_name: owner.email}], action="updateOnly",
                                         lookup_field="id")
        reasons = [r for res in results if res.status not in ("updated", "created") for r in res.reasons]
    except (TransientError, MarketoError) as exc:
        reasons_text = str(exc)
    else:
        if not reasons:
            return
        reasons_text = "; ".join(f"Marketo {r.code}: {r.message}" for r in reasons)
    out.failed(person_key(marketo_id), activity.REJECTED,
               [Problem(field_name, ValidationRule.REJECTED, reasons_text)], direction=D2M,
               marketo_id=None, what="writing the owner's email to Marketo")


# Dataverse codes of refusals a marketer can act on, in words (spec §7 and §11).
REFUSALS = {"0x80040220": "missing privilege", "0x80040265": "a plug-in refused the record",
            "0x80040333": "a duplicate detection rule matched an existing record"}


def _refused(out: Outcomes, marketo_id: int, exc: DataverseError) -> Result:
    """Dynamics would not create the lead: a JSON answer with its code and reason, logged in
    both activity logs and listed as a failure. A transient outage answers 503 (call again);
    a 401/403 is the app's own setup (502); anything about the record is a 422."""
    transient = isinstance(exc, TransientError)
    reason = "Dynamics is unavailable" if transient else \
        REFUSALS.get(exc.code.lower(), "missing privilege" if exc.status == 403 else "Dynamics refused the lead")
    problem = Problem("", ValidationRule.REJECTED, f"Dynamics {exc.status} {exc.code or '-'}: {exc.message}",
                      exc.code)
    out.failed(person_key(marketo_id), activity.REJECTED, [problem], direction=M2D, marketo_id=marketo_id,
               what=f"creating the Dynamics lead ({reason})")
    status = 503 if transient else 502 if exc.status in (401, 403) or exc.status >= 500 else 422
    return Result("unavailable" if transient else "rejected", status,
                  {"status": "unavailable" if transient else "rejected", "leadId": marketo_id, "reason": reason,
                   "error": exc.message, "dynamics": {"status": exc.status, "code": exc.code}},
                  retry_after=30 if transient else None)


def _invalid(out: Outcomes, lead_id: int, problems: list[Problem], what: str) -> Result:
    """A 422 with the reasons, which also go to the person's activity logs (ours and Marketo's)."""
    out.failed(person_key(lead_id), activity.VALIDATION_FAILED, problems, direction="marketo->dynamics",
               marketo_id=lead_id, what=what)
    return Result("invalid", 422, {"status": "invalid", "leadId": lead_id,
                                   "problems": [{"field": p.field, "rule": p.rule, "message": p.message}
                                                for p in problems]})


def _link_existing(svc: Services, out: Outcomes, lead_id: int, entity: str, dynamics_id: str,
                   wait_s: float) -> Result:
    other = svc.links.by_dynamics(entity, dynamics_id)
    if other is not None and other.marketo_id != lead_id:
        return Result("exists", 200, {"status": "exists", "leadId": lead_id, "entity": entity,
                                      "dynamicsId": dynamics_id, "linked": False,
                                      "note": f"that record is linked to Marketo person {other.marketo_id}"})
    claim = svc.links.claim(lead_id)
    if claim is None:
        current = svc.links.get(lead_id)
        return _wait_for(svc, current, wait_s) if current else Result("busy", 409, {"status": "busy"})
    # No base: the first background merge treats every differing field as an initial
    # difference (reported, never blank-over-value). Nothing is written now.
    svc.links.save(Link(lead_id, entity, dynamics_id, base={}, etag=claim.etag))
    out.add(f"m{lead_id}", activity.LINKED, f"linked to existing Dynamics {entity} {dynamics_id} by email (real-time)")
    return Result("exists", 200, {"status": "exists", "leadId": lead_id, "entity": entity,
                                  "dynamicsId": dynamics_id, "linked": True})


def _wait_for(svc: Services, link: Link, wait_s: float) -> Result:
    deadline = time.monotonic() + wait_s
    while link.state == CREATING and time.monotonic() < deadline:
        time.sleep(0.1)
        current = svc.links.get(link.marketo_id)
        if current is None:
            return Result("busy", 409, {"status": "busy", "leadId": link.marketo_id,
                                        "error": "another call for this person failed; try again"})
        link = current
    if link.state == CREATING:
        return Result("busy", 409, {"status": "busy", "leadId": link.marketo_id,
                                    "error": "another call for this person is still creating its lead"})
    return Result("exists", 200, {"status": "exists", "leadId": link.marketo_id, "entity": link.entity,
                                  "dynamicsId": link.dynamics_id, "linked": True})
