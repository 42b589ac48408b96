"""Collect what a batch did, then write it once: our activity log and Marketo's.

Every record outcome becomes an activity-log entry keyed by person. Failures (validation,
rejection) are also written to the person's Marketo Activity Log as a LeadSync custom
activity, so a marketer sees them where Marketo's native sync puts them, batched 300 per
call.
"""

from __future__ import annotations

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

    def add(self, person: str, kind: str, message: str, *, direction: str = "",
            details: dict[str, Any] | None = None) -> None:
        self.counts[kind] += 1
        self.entries.append(Entry(person, kind, message, direction, details or {}, datetime.now(UTC),
                                  self.operation_id))

    def collision(self, person: str, entity: str, c: Collision) -> None:
        what = "initial link: values differed" if c.initial else "changed on both sides"
        # Values stay in `details` (for `leadsync explain`), out of the message the health page shows.
        decided_by = c.decided_by or f"{c.rule} rule for {entity}s"  # the rule that picked the winner
        self.add(person, activity.COLLISION,
                 f"{c.field} {what}; {c.winner.value.capitalize()} wins ({decided_by})",
                 details={"field": c.field, "marketo": c.marketo_value, "dynamics": c.dynamics_value,
                          "base": c.base_value, "winner": c.winner.value, "rule": c.rule, "initial": c.initial,
                          **({"decided_by": c.decided_by} if c.decided_by else {})})

    def failed(self, person: str, kind: str, problems: Sequence[Problem], *, direction: str,
               marketo_id: int | None, what: str) -> None:
        reason = "; ".join(p.message for p in problems)
        self.add(person, kind, f"{what} failed: {reason}", direction=direction,
                 details={"problems": [p.__dict__ for p in problems]})
        if marketo_id is not None:
            self.notes.append(MarketoNote(marketo_id, f"{what} failed", reason))


def flush(svc: Services, out: Outcomes) -> None:
    """Write the collected entries. Marketo notes are best effort after our own log."""
    svc.activity.write(out.entries)
    if out.notes:
        try:
            type_id = svc.activity_type_id()
            svc.marketo.add_activities([
                {"leadId": n.lead_id, "activityDate": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "activityTypeId": type_id, "primaryAttributeValue": n.reason[:255],
                 "attributes": [{"apiName": "detail", "value": n.detail[:2000]},
                                {"apiName": "operation", "value": out.operation_id}]}
                for n in out.notes
            ])
        except (MarketoError, TransientError) as exc:
            # Our table already holds the failure; losing the Marketo copy must not
            # re-run a batch whose writes are done.
            log.warning("op=%s could not write %d Marketo activity entries: %s", out.operation_id,
                        len(out.notes), exc, extra=telemetry.op(out.operation_id))
    for entry in out.entries:
        telemetry.records.add(1, {"kind": entry.kind, "direction": entry.direction or "none"})
    if out.counts:
        log.info("op=%s outcomes %s", out.operation_id, dict(out.counts),
                 extra=telemetry.op(out.operation_id, outcomes=dict(out.counts)))
