"""Collect what a batch did, then write it once: our activity log and Marketo's.

Every record outcome becomes an activity-log entry keyed by person. A collision's entry is
the exception: it is written before the writes that apply the decision (`log_decisions`),
because once both sides hold the winner a retry sees no collision left to log. Failures (validation,
rejection) are also written to the person's Marketo Activity Log as a LeadSync custom
activity, so a marketer sees them where Marketo's native sync puts them, batched 300 per
call.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared import telemetry
from shared.errors import MarketoError, Problem, TransientError
from shared.rules.merge import Collision
from shared.state import activity
from shared.state.activity import Entry
from shared.state.outbox import OutboxNote

if TYPE_CHECKING:
    from shared.runtime import Services

log = logging.getLogger("leadsync")


@dataclass(frozen=True)
class MarketoNote:
    lead_id: int
    reason: str
    detail: str


@dataclass
class Outcomes:
    operation_id: str
    entries: list[Entry] = field(default_factory=list)
    notes: list[MarketoNote] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    decided: dict[str, list[Entry]] = field(default_factory=dict)  # person -> collisions already logged
    logged_here: set[str] = field(default_factory=set)  # the row ids of those this attempt logged

    def add(self, person: str, kind: str, message: str, *, direction: str = "",
            details: dict[str, Any] | None = None) -> None:
        self.counts[kind] += 1
        self.entries.append(Entry(person, kind, message, direction, details or {}, datetime.now(UTC),
                                  self.operation_id))

    def collision_entry(self, person: str, entity: str, c: Collision) -> Entry:
        """A collision's entry; the applier writes it before the writes that apply it (`log_decisions`)."""
        what = "initial link: values differed" if c.initial else "changed on both sides"
        # Values stay in `details` (for `leadsync explain`), out of the message the health page shows.
        decided_by = c.decided_by or f"{c.rule} rule for {entity}s"  # the rule that picked the winner
        return Entry(person, activity.COLLISION, f"{c.field} {what}; {c.winner.value.capitalize()} wins ({decided_by})",
                     details={"field": c.field, "marketo": c.marketo_value, "dynamics": c.dynamics_value,
                              "base": c.base_value, "winner": c.winner.value, "rule": c.rule, "initial": c.initial,
                              **({"decided_by": c.decided_by} if c.decided_by else {})},
                     at=datetime.now(UTC), operation_id=self.operation_id)

    def failed(self, person: str, kind: str, problems: Sequence[Problem], *, direction: str,
               marketo_id: int | None, what: str) -> None:
        reason = "; ".join(p.message for p in problems)
        self.add(person, kind, f"{what} failed: {reason}", direction=direction,
                 details={"problems": [p.__dict__ for p in problems]})
        if marketo_id is not None:
            self.notes.append(MarketoNote(marketo_id, f"{what} failed", reason))


@dataclass(frozen=True)
class Decision:
    """One person's collisions as merged against the base of link version `version` (its ETag)."""

    person: str
    entity: str
    version: str
    collisions: Sequence[Collision]


def log_decisions(svc: Services, out: Outcomes, decisions: Sequence[Decision]) -> None:
    """Write the collisions' entries before the writes that apply them. A retry that reaches the
    same decision (same link version, same values) finds its entry instead of adding another."""
    keyed = [(out.collision_entry(d.person, d.entity, c), _decision_key(d.version, c))
             for d in decisions for c in d.collisions]
    for entry, ours in svc.activity.log_once(keyed):
        out.decided.setdefault(entry.person, []).append(entry)
        if ours:
            out.logged_here.add(entry.row_id)


def applied(out: Outcomes, person: str) -> None:
    """The person's logged decision was applied on both sides: it counts among the outcomes."""
    out.counts[activity.COLLISION] += len(out.decided.get(person, ()))


def withdraw_decisions(svc: Services, out: Outcomes, persons: Sequence[str]) -> None:
    """Delete the decisions this attempt logged for people a side refused: no entry claims a
    value that was never written. An entry found already logged stays: another applier that
    reached the same decision may have applied it."""
    withdrawn = [e for p in persons for e in out.decided.pop(p, [])]
    svc.activity.withdraw([e for e in withdrawn if e.row_id in out.logged_here])


def _decision_key(version: str, c: Collision) -> str:
    data = [version, c.field, c.marketo_value, c.dynamics_value, c.base_value, c.winner.value]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:16]


def flush(svc: Services, out: Outcomes, *, marketo_later: bool = False) -> None:
    """Write the collected entries. Marketo notes are best effort after our own log; with
    `marketo_later` (one person per call: the webhook) they wait in the outbox for a batch."""
    svc.activity.write(out.entries)
    notes = [OutboxNote(n.lead_id, n.reason, n.detail, out.operation_id) for n in out.notes]
    if notes and marketo_later:
        svc.outbox.put(notes)
    elif notes:
        _send(svc, notes)
    for entry in [*out.entries, *(e for logged in out.decided.values() for e in logged)]:
        telemetry.records.add(1, {"kind": entry.kind, "direction": entry.direction or "none"})
    if out.counts:
        log.info("op=%s outcomes %s", out.operation_id, dict(out.counts),
                 extra=telemetry.op(out.operation_id, outcomes=dict(out.counts)))


def send_outbox(svc: Services, *, limit: int = 300) -> int:
    """Send the Activity Log entries the webhook left in the outbox, up to 300 in one Marketo
    call; how many were sent (or given up on)."""
    notes = svc.outbox.take(limit)
    if notes and _send(svc, notes):
        svc.outbox.remove(notes)
    return len(notes)


def _send(svc: Services, notes: Sequence[OutboxNote]) -> bool:
    """Write `notes` to Marketo Activity Logs; False when Marketo could not take them now."""
    try:
        type_id = svc.activity_type_id()
        svc.marketo.add_activities([
            {"leadId": n.lead_id, "activityDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "activityTypeId": type_id, "primaryAttributeValue": n.reason[:255],
             "attributes": [{"apiName": "detail", "value": n.detail[:2000]},
                            {"apiName": "operation", "value": n.operation_id}]}
            for n in notes
        ])
    except (MarketoError, TransientError) as exc:
        # Our table already holds the outcome; losing the Marketo copy must not re-run a
        # batch whose writes are done.
        log.warning("could not write %d Marketo activity entries: %s", len(notes), exc,
                    extra=telemetry.op(notes[0].operation_id))
        return False
    return True