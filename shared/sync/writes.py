"""Merge each linked person against its base, validate, write both sides in bulk, then store
the new bases: writes happen before the base, so a crash in between costs a no-op next time.
Collisions are logged before the writes: after them a retry finds both sides equal and
could no longer tell that there was a collision to log.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from shared.clients.dataverse import WriteOp
from shared.errors import Problem, StateConflict
from shared.rules.merge import MergeResult, merge
from shared.rules.validation import validate
from shared.runtime import ENTITY_SETS, Services
from shared.state import activity
from shared.state.links import LINKED, PARKED, Link
from shared.sync import owners
from shared.sync.batch import D2M, M2D, Batch, Pending
from shared.sync.lookups import Binder, dereferenced, unsendable_to_marketo
from shared.sync.report import Decision, applied, log_decisions, withdraw_decisions


def merge_and_write(batch: Batch, pending: list[Pending]) -> None:
    svc, out = batch.svc, batch.out
    to_marketo: list[tuple[Pending, dict[str, Any]]] = []
    to_dynamics: list[tuple[Pending, WriteOp]] = []
    binders = {}
    specs = {entity: svc.fields.for_entity(entity) for entity in ("lead", "contact")}
    # Each person's Marketo values, converted once for the binder and the merge.
    values = {id(p): svc.fields.from_marketo(p.marketo) for p in pending}
    for entity in ("lead", "contact"):  # lookups and currencies: one read per related table for the batch
        mine = [p for p in pending if p.link.entity == entity]
        for p, record in zip(mine, dereferenced(svc, entity, [p.dynamics for p in mine]), strict=True):
            p.dynamics = record
        binders[entity] = Binder(svc, entity, [values[id(p)] for p in mine])
    for p in pending:
        link = p.link
        entity = str(link.entity)
        if link.state == PARKED and link.parked_fingerprint == parked_fingerprint(p, entity, svc):
            continue  # still the values that failed: no retry loop until someone edits
        p.result = merge(specs[entity], entity, link.base, values[id(p)], svc.fields.from_dynamics(entity, p.dynamics))
        if p.result.to_dynamics:
            body, problems = binders[entity].bind(svc.fields.to_dynamics(entity, p.result.to_dynamics), p.dynamics)
            problems += validate(svc.rules(entity), body, creating=False)
            if problems:
                p.dynamics_failed = True
                out.failed(link.person, activity.VALIDATION_FAILED, problems, direction=M2D,
                           marketo_id=link.marketo_id, what=f"updating Dynamics {entity}")
            else:
                etag = p.dynamics.get("@odata.etag")
                to_dynamics.append((p, WriteOp.update(ENTITY_SETS[entity], str(link.dynamics_id), body, etag)))
        if p.result.to_marketo:
            unsendable = unsendable_to_marketo(p.result.to_marketo)
            if unsendable:
                p.marketo_failed = True
                out.failed(link.person, activity.VALIDATION_FAILED, unsendable, direction=D2M,
                           marketo_id=link.marketo_id, what="updating the Marketo person")
            else:
                to_marketo.append((p, {"id": link.marketo_id, **svc.fields.to_marketo(p.result.to_marketo)}))
    owners.add_owner_emails(svc, pending, to_marketo)
    log_decisions(svc, out, [Decision(p.link.person, str(p.link.entity), p.link.etag or "", p.result.collisions)
                             for p in pending if p.result is not None and not (p.dynamics_failed or p.marketo_failed)])
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
                           [Problem("", "rejected", f"Dynamics {res.error_code}: {res.error_message}",
                                    res.error_code or "")], direction=M2D,
                           marketo_id=p.link.marketo_id, what=f"updating Dynamics {p.link.entity}")
    if to_marketo:
        ready = [(p, rec) for p, rec in to_marketo if not p.conflict]
        results_m = svc.marketo.sync_leads([rec for _, rec in ready], action="updateOnly", lookup_field="id")
        for (p, _), outcome in zip(ready, results_m, strict=True):
            if outcome.status not in ("updated", "created"):
                p.marketo_failed = True
                out.failed(p.link.person, activity.REJECTED,
                           [Problem("", "rejected", f"Marketo {r.code}: {r.message}", r.code) for r in outcome.reasons],
                           direction=D2M, marketo_id=p.link.marketo_id, what="updating the Marketo person")
    _store_bases(batch, [p for p in pending if p.result is not None])


def _store_bases(batch: Batch, done: list[Pending]) -> None:
    svc, out = batch.svc, batch.out
    # A decision a side refused is withdrawn before any base moves past it. One that met a 412
    # stays: the write that beat ours may be another applier's of this very decision.
    withdraw_decisions(svc, out, [p.link.person for p in done if p.dynamics_failed or p.marketo_failed])
    updates: list[tuple[Pending, Link]] = []
    for p in done:
        assert p.result is not None
        link, entity = p.link, str(p.link.entity)
        if p.conflict:
            batch.retry_marketo.append(link.marketo_id)
            continue  # a retry that reaches the same decision finds its entry: logged once
        if not (p.dynamics_failed or p.marketo_failed):
            applied(out, link.person)
        base = dict(p.result.base)
        owners.remember_owner(svc, base, link.base, p.dynamics, written=not p.marketo_failed)
        # A direction that failed keeps its old base, so it is retried when the person changes.
        for failed, fields in ((p.dynamics_failed, p.result.to_dynamics), (p.marketo_failed, p.result.to_marketo)):
            if failed:
                for name in fields:
                    if name in link.base:
                        base[name] = link.base[name]
                    else:
                        base.pop(name, None)
        if p.dynamics_failed or p.marketo_failed:
            new = replace(link, base=base).parked("write failed", parked_fingerprint(p, entity, svc))
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


def parked_fingerprint(p: Pending, entity: str, svc: Services) -> str:
    """What a parked record is parked on: both sides' mapped values; the same values stay parked."""
    data = [svc.fields.from_marketo(p.marketo), svc.fields.from_dynamics(entity, p.dynamics)]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


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
