"""Resync: put linked people back through the background sync, with a preview.

Used by `leadsync resync`. Selects people (by Marketo id, Dynamics record or email; every
link; or every link whose last agreed values lack a field, e.g. one just added to the
map) and either

- enqueues them on the Marketo work queue, up to 300 a message, as the poller does: the
  applier then reads both sides fresh in bulk under the app's call budget and merges
  them; the command itself spends no Marketo or Dataverse call (an email lookup aside);
- or, with `dry_run`, reads both sides the way the applier does (`sync.sides.read_both`,
  300 people per Marketo call), merges each person with the applier's pure merge
  (`rules.preview.plan`) and reports, per person and field, what would change and which
  side wins by which rule. A dry run writes nothing: no link, no queue message, no log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.jsonable import to_jsonable
from shared.ops.commands import parse_person
from shared.rules import eligibility
from shared.rules.emails import same_address
from shared.rules.fieldmap import FieldSpec
from shared.rules.preview import FieldChange, plan
from shared.rules.validation import unencodable, validate
from shared.runtime import Services
from shared.state.links import CREATING, PARKED, Link
from shared.state.workqueue import MAX_IDS, chunked
from shared.sync.batch import Pending, eligible
from shared.sync.sides import read_both
from shared.sync.writes import _fingerprint as parked_fingerprint  # the applier's own "still failing?" test

REASON = "resync"  # the work messages' reason, as the activity log shows it


class Outcome(StrEnum):
    """What the applier would do with one person."""

    UPDATE = "update"  # writes the fields listed
    UNCHANGED = "unchanged"  # nothing to write (the agreed values may still be stored)
    FAILS = "fails"  # a side would refuse the values: the person would be parked
    PARKED = "parked"  # parked on these very values: skipped until one side changes
    SKIPPED = "skipped"  # the sync filter is No
    MOVES = "moves"  # a qualified lead: the link moves to its contact
    MARKETO_GONE = "marketo-gone"  # the link ends
    DYNAMICS_GONE = "dynamics-gone"  # the person is marked deleted in Marketo


@dataclass(frozen=True)
class Target:
    """One person as an operator named them: exactly one of the three is set."""

    text: str
    marketo_id: int | None = None
    record: tuple[str, str] | None = None  # (entity, lower-case GUID)
    email: str | None = None


@dataclass(frozen=True)
class NotLinked:
    text: str
    why: str


@dataclass(frozen=True)
class Selection:
    links: tuple[Link, ...]
    not_linked: tuple[NotLinked, ...] = ()


@dataclass(frozen=True)
class Change:
    """A `FieldChange` as reported: the value, the side it goes to, the winner and the rule."""

    field: str
    marketo: Any
    dynamics: Any
    base: Any
    agreed_before: bool
    to: str
    winner: str
    rule: str
    why: str
    reason: str

    @classmethod
    def of(cls, c: FieldChange) -> Change:
        return cls(c.field, c.marketo, c.dynamics, c.base, c.agreed_before, c.to.value, c.winner.value,
                   c.rule.value, c.why.value, c.reason)


@dataclass(frozen=True)
class PersonPreview:
    marketo_id: int
    entity: str
    dynamics_id: str
    outcome: Outcome
    detail: str = ""
    changes: tuple[Change, ...] = ()


@dataclass
class ResyncReport:
    dry_run: bool
    selected: int
    people: list[PersonPreview] = field(default_factory=list)  # dry run only
    counts: dict[str, int] = field(default_factory=dict)  # dry run: people per outcome
    messages: int = 0
    operation_ids: list[str] = field(default_factory=list)
    paused: str | None = None  # the background sync's pause, if any: the messages wait for it

    def to_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self))


# -- selecting people ----------------------------------------------------------------------
def parse_target(text: str) -> Target:
    """A Marketo id ("1042", "m1042"), "lead:<guid>" / "contact:<guid>", or an email address.

    Raises ValueError naming the text when it is none of them.
    """
    text = text.strip()
    if "@" in text and ":" not in text:
        local, _, domain = text.rpartition("@")
        if not local or "." not in domain or any(c.isspace() or c == "," for c in text):
            raise ValueError(f"{text!r} is not an email address")
        return Target(text, email=text)
    try:
        marketo_id, record = parse_person(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a Marketo lead id, lead:<guid>, contact:<guid> or an email") from None
    if marketo_id == 0:
        raise ValueError(f"{text!r} is not a Marketo lead id (ids start at 1)")
    return Target(text, marketo_id=marketo_id, record=record)


def parse_lines(lines: Iterable[str]) -> list[Target]:
    """People from a file, one a line; blank lines and `#` comments are ignored."""
    out = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(parse_target(text))
        except ValueError as exc:
            raise ValueError(f"line {n}: {exc}") from None
    return out


def select_people(svc: Services, targets: Sequence[Target]) -> Selection:
    """The links of these people, in the order named; those without a link say why.

    Ids and records are read from storage alone; emails cost one Marketo lookup per 300.
    """
    found: dict[int, Link] = {}
    missing: list[NotLinked] = []
    by_id = svc.links.get_many(t.marketo_id for t in targets if t.marketo_id is not None)
    records: dict[tuple[str, str], Link] = {}
    for entity in ("lead", "contact"):
        ids = [t.record[1] for t in targets if t.record is not None and t.record[0] == entity]
        if ids:
            records.update({(entity, i): lk for i, lk in svc.links.lookup(entity, ids).links.items()})
    by_email = _links_by_email(svc, [t.email for t in targets if t.email is not None])
    for t in targets:
        if t.marketo_id is not None:
            hits = [by_id[t.marketo_id]] if t.marketo_id in by_id else []
            why = f"Marketo person {t.marketo_id} is not linked to a Dynamics record"
        elif t.record is not None:
            hits = [records[t.record]] if t.record in records else []
            why = f"Dynamics {t.record[0]} {t.record[1]} is not linked to a Marketo person"
        else:
            hits = by_email.get(str(t.email).lower(), [])
            why = "no linked Marketo person has this email"
        live = [lk for lk in hits if _syncable(lk)]
        if hits and not live:
            why = f"Marketo person {hits[0].marketo_id} is still being created by the real-time sync"
        if not live:
            missing.append(NotLinked(t.text, why))
        for lk in live:
            found.setdefault(lk.marketo_id, lk)
    return Selection(tuple(found.values()), tuple(missing))


def _links_by_email(svc: Services, emails: Sequence[str]) -> dict[str, list[Link]]:
    if not emails:
        return {}
    wanted = list(dict.fromkeys(e.strip() for e in emails))
    people = svc.marketo.find_leads("email", wanted, ["id", "email"])
    links = svc.links.get_many(int(p["id"]) for p in people)
    out: dict[str, list[Link]] = {}
    for address in wanted:
        # Marketo's lookup collation finds look-alike addresses too: only the same address counts.
        ids = sorted(int(p["id"]) for p in people if same_address(p.get("email"), address))
        out[address.lower()] = [links[i] for i in ids if i in links]
    return out


def select_all(svc: Services) -> Selection:
    """Every linked person (parked ones too: the applier decides whether to retry them)."""
    return Selection(tuple(lk for lk in svc.links.all() if _syncable(lk)))


def mapped_field(svc: Services, name: str) -> FieldSpec:
    """The field map's entry named `name` (its Marketo field or one of its Dataverse columns).

    Raises ValueError listing the mapped fields when there is none.
    """
    for spec in svc.fields.fields:
        if name == spec.marketo or name in spec.columns.values():
            return spec
    known = ", ".join(s.marketo for s in svc.fields.fields)
    raise ValueError(f"{name!r} is not in the field map (mapped: {known})")


def select_missing_field(svc: Services, name: str) -> Selection:
    """The linked people whose last agreed values lack field `name`, on entities it maps to:
    everyone a field new to the map has not reached yet."""
    spec = mapped_field(svc, name)
    return Selection(tuple(lk for lk in svc.links.all() if _syncable(lk) and spec.column(str(lk.entity))
                           and spec.marketo not in lk.base))


def _syncable(link: Link) -> bool:
    return link.state != CREATING and bool(link.entity and link.dynamics_id)


# -- resync and preview ----------------------------------------------------------------------
def resync(svc: Services, links: Sequence[Link]) -> ResyncReport:
    """Enqueue these people on the Marketo work queue, up to 300 a message, reason "resync"."""
    work = chunked("marketo", "changed", [lk.marketo_id for lk in links], reason=REASON)
    svc.queues.send(work)
    pause = svc.pauses.current(fresh=True)
    return ResyncReport(False, len(links), messages=len(work), operation_ids=[w.operation_id for w in work],
                        paused=pause.describe() if pause else None)


def preview(svc: Services, links: Sequence[Link]) -> ResyncReport:
    """What a resync of these people would do, read as the applier reads (300 a batch); writes nothing."""
    report = ResyncReport(True, len(links))
    for start in range(0, len(links), MAX_IDS):
        chunk = list(links[start:start + MAX_IDS])
        marketo, dynamics = read_both(svc, chunk, {})
        report.people += [_person(svc, lk, marketo.get(lk.marketo_id),
                                  dynamics.get((str(lk.entity), str(lk.dynamics_id).lower()))) for lk in chunk]
    for p in report.people:
        report.counts[p.outcome.value] = report.counts.get(p.outcome.value, 0) + 1
    return report


def _person(svc: Services, link: Link, m: dict[str, Any] | None, d: Any) -> PersonPreview:
    """One person, decided in the order `sync.apply` and `sync.writes` decide."""
    entity, did = str(link.entity), str(link.dynamics_id)

    def out(outcome: Outcome, detail: str = "", changes: tuple[Change, ...] = ()) -> PersonPreview:
        return PersonPreview(link.marketo_id, entity, did, outcome, detail, changes)

    if m is None:
        return out(Outcome.MARKETO_GONE, "the Marketo person no longer exists: the link would end")
    if d is None:
        return out(Outcome.DYNAMICS_GONE, f"Dynamics {entity} {did} no longer exists: "
                                          "the person would be marked deleted in Marketo")
    verdict = eligible(svc, entity, d, linking=False)
    if verdict.reason is eligibility.Reason.SYNC_FILTER_OFF:
        return out(Outcome.SKIPPED, f"sync filter is No on {entity} {did}: not synced")
    if verdict.reason is eligibility.Reason.LEAD_NOT_OPEN:
        return out(Outcome.MOVES, f"lead {did} is no longer open: the link would move to the contact it "
                                  "was qualified into, whose rules then apply (skipped if there is none yet)")
    if link.state == PARKED and link.parked_fingerprint == parked_fingerprint(Pending(link, m, dict(d)), entity, svc):
        return out(Outcome.PARKED, f"parked ({link.parked_reason}) on these very values: not retried until "
                                   "one side changes; `leadsync retry --parked` retries it")
    fmap = svc.fields
    merged = plan(fmap.for_entity(entity), entity, link.base, fmap.from_marketo(m), fmap.from_dynamics(entity, d))
    changes = tuple(Change.of(c) for c in merged.changes)
    problems = []
    if merged.result.to_dynamics:
        body = fmap.to_dynamics(entity, merged.result.to_dynamics)
        problems += [f"Dynamics would refuse: {p.message}" for p in validate(svc.rules(entity), body, creating=False)]
    if merged.result.to_marketo:
        problems += [f"Marketo would refuse: {p.message}" for p in unencodable(merged.result.to_marketo)]
    if problems:
        return out(Outcome.FAILS, "; ".join(problems) + ": the person would be parked", changes)
    return out(Outcome.UPDATE if changes else Outcome.UNCHANGED, "", changes)
