"""Backfill: link Dynamics records to the Marketo people with the same email, with a preview.

Used by `leadsync backfill` for an initial sync or a relink: pages through Dataverse,
looks people up in Marketo 300 emails per call, and either reports what would change
(`dry_run`: new links and, per differing field, which side the merge rules would pick)
or links the pairs with an empty base and enqueues them, so the first merge reports every
initial difference instead of overwriting silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import StateConflict
from shared.jsonable import to_jsonable
from shared.ops.commands import Progress
from shared.rules import eligibility
from shared.rules.emails import NEAR_MISS, exact_key, loose_key, near_miss_message, same_address
from shared.rules.merge import merge
from shared.rules.validation import unencodable
from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.activity import Entry
from shared.state.links import Link, person_key
from shared.state.workqueue import chunked
from shared.sync.lookups import dereferenced


# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    field: str
    marketo: Any
    dynamics: Any
    winner: str  # "marketo" | "dynamics": per shared.rules.merge, for a link with no base yet
    rule: str


@dataclass(frozen=True)
class NewLink:
    marketo_id: int
    entity: str
    dynamics_id: str
    differences: tuple[Difference, ...]


@dataclass(frozen=True)
class Skip:
    entity: str
    dynamics_id: str
    reason: str


@dataclass
class BackfillReport:
    dry_run: bool
    scanned: dict[str, int] = field(default_factory=dict)
    already_linked: int = 0
    linked: list[NewLink] = field(default_factory=list)
    unmatched: list[Skip] = field(default_factory=list)  # no Marketo person has the email
    skipped: list[Skip] = field(default_factory=list)
    operation_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


LOOKUP = 300  # people per Marketo lookup (one call)


def backfill(svc: Services, *, entities: Sequence[str] = ("lead", "contact"), dry_run: bool = False,
             create_missing: bool = False, progress: Progress | None = None) -> BackfillReport:
    """Link every unlinked Dynamics record to the Marketo person with its email, and enqueue it.

    A new link has an empty base, so the applier's first merge treats every differing
    field as an initial collision (a blank never overwrites a value; the rule decides the
    rest) and logs it. Records no Marketo person matches are listed; with
    `create_missing` they are enqueued as Dynamics changes, so the applier creates the
    Marketo person as it does for a new record. A dry run reads both sides and writes
    nothing.
    """
    report = BackfillReport(dry_run)
    seen_emails: set[str] = set()
    seen_people: set[int] = set()
    for entity in entities:
        report.scanned[entity] = 0
        for page in svc.dataverse.changes(ENTITY_SETS[entity], svc.select(entity), None):
            for start in range(0, len(page.records), LOOKUP):
                chunk = page.records[start:start + LOOKUP]
                _backfill_chunk(svc, report, entity, chunk, seen_emails, seen_people, create_missing)
                report.scanned[entity] += len(chunk)
                if progress is not None:
                    progress(entity, len(chunk))
    return report


def _backfill_chunk(svc: Services, report: BackfillReport, entity: str, records: Sequence[Mapping[str, Any]],
                    seen_emails: set[str], seen_people: set[int], create_missing: bool) -> None:
    key = PRIMARY_KEYS[entity]
    records = list[Mapping[str, Any]](dereferenced(svc, entity, records))  # lookups as keys, for the differences
    email_spec = svc.fields.email
    email_col = email_spec.column(entity) or ""
    found = svc.links.lookup(entity, [str(r[key]).lower() for r in records])
    linked = found.links
    report.already_linked += len(linked)
    candidates: dict[str, tuple[str, Mapping[str, Any]]] = {}  # id -> (email, record)
    for r in records:
        rid = str(r[key]).lower()
        email = email_spec.canonical(r.get(email_col))
        if rid in linked:
            continue
        verdict = eligibility.check(r, entity=entity, sync_filter_field=svc.settings.sync_filter_field,
                                    email=email if isinstance(email, str) else None, linking=True,
                                    deleted_in_marketo_at=found.buried.get(rid))
        if verdict.reason in (eligibility.Reason.SYNC_FILTER_OFF, eligibility.Reason.LEAD_NOT_OPEN):
            continue  # not a person to link
        if not verdict.ok:
            report.skipped.append(Skip(entity, rid, verdict.message))
        elif unsendable := unencodable(svc.fields.from_dynamics(entity, r)):
            report.skipped.append(Skip(entity, rid, "; ".join(p.message for p in unsendable)))
        elif exact_key(str(email)) in seen_emails:
            report.skipped.append(Skip(entity, rid, "another Dynamics record with this email came first"))
        else:
            seen_emails.add(exact_key(str(email)))
            candidates[rid] = (str(email), r)
    if not candidates:
        return
    emails = list(dict.fromkeys(e for e, _ in candidates.values()))
    # Marketo's lookup may return look-alike addresses too: hits are grouped by the address
    # they resemble, and only the same address (ASCII case aside) is a match.
    hits: dict[str, list[dict[str, Any]]] = {}
    for p in sorted(svc.marketo.find_leads("email", emails, svc.marketo_fields()), key=lambda p: int(p["id"])):
        hits.setdefault(loose_key(str(p.get("email") or "")), []).append(p)  # oldest first, as the applier picks
    people = {email: same[0] for email, _ in candidates.values()
              if (same := [p for p in hits.get(loose_key(email), []) if same_address(p.get("email"), email)])}
    taken = svc.links.get_many(int(p["id"]) for p in people.values())
    new: list[NewLink] = []
    missing: list[str] = []
    near: list[tuple[str, str]] = []  # (record id, why)
    specs = svc.fields.for_entity(entity)
    for rid, (email, record) in candidates.items():
        person = people.get(email)
        if person is None and (alike := hits.get(loose_key(email))):
            why = "; ".join(near_miss_message(f"Marketo person {p['id']}") for p in alike)
            report.skipped.append(Skip(entity, rid, why))
            near.append((rid, why))
            continue
        if person is None:
            missing.append(rid)
            report.unmatched.append(Skip(entity, rid, "no Marketo person has this email"))
            continue
        mid = int(person["id"])
        if mid in taken or mid in seen_people:
            other = taken.get(mid)
            where = f"{other.entity} {other.dynamics_id}" if other else "another record in this run"
            report.skipped.append(Skip(entity, rid, f"Marketo person {mid} is already linked to {where}"))
            continue
        seen_people.add(mid)
        result = merge(specs, entity, {}, svc.fields.from_marketo(person), svc.fields.from_dynamics(entity, record))
        diffs = tuple(Difference(c.field, c.marketo_value, c.dynamics_value, c.winner.value, c.rule)
                      for c in result.collisions)
        new.append(NewLink(mid, entity, rid, diffs))
    if report.dry_run:
        report.linked += new
        return
    if near:  # listed with the failures, so a person sees them without running the backfill again
        svc.activity.write([Entry(f"{entity}:{rid}", activity.VALIDATION_FAILED,
                                  f"linking {entity} (backfill) failed: {why}", "dynamics->marketo",
                                  {"problems": [{"field": "email", "rule": NEAR_MISS}]}) for rid, why in near])
    _link_and_enqueue(svc, report, entity, new, missing if create_missing else [])


def _link_and_enqueue(svc: Services, report: BackfillReport, entity: str, new: list[NewLink],
                      missing: list[str]) -> None:
    links = [Link(n.marketo_id, entity, n.dynamics_id, base={}) for n in new]
    saved: list[NewLink] = []
    for n, result in zip(new, svc.links.save_many(links), strict=True):
        if isinstance(result, StateConflict):
            report.skipped.append(Skip(entity, n.dynamics_id, f"Marketo person {n.marketo_id} was linked meanwhile"))
        else:
            saved.append(n)
    svc.activity.write([Entry(person_key(n.marketo_id), activity.LINKED,
                              f"linked to Dynamics {entity} {n.dynamics_id} by email (backfill)",
                              details={"backfill": True, "differences": len(n.differences)}) for n in saved])
    work = chunked("marketo", "changed", [n.marketo_id for n in saved], reason="backfill")
    work += chunked("dynamics", "changed", missing, entity=entity, reason="backfill")
    svc.queues.send(work)
    report.linked += saved
    report.operation_ids += [w.operation_id for w in work]
