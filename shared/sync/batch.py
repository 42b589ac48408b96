"""One work message's batch: the people on their way through it, what goes back on the queue,
and the two checks every step of the applier shares (eligibility, ending a link).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import StateConflict
from shared.rules import eligibility
from shared.rules.merge import MergeResult
from shared.runtime import Services
from shared.state import activity
from shared.state.links import Link
from shared.sync.report import Outcomes

M2D = activity.Direction.MARKETO_TO_DYNAMICS
D2M = activity.Direction.DYNAMICS_TO_MARKETO


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


def eligible(svc: Services, entity: str, record: Mapping[str, Any], *, linking: bool,
              deleted_in_marketo_at: datetime | None = None) -> eligibility.Verdict:
    email = svc.fields.email.canonical(record.get(svc.fields.email.column(entity) or ""))
    return eligibility.check(record, entity=entity, sync_filter_field=svc.settings.sync_filter_field,
                             email=email if isinstance(email, str) else None, linking=linking,
                             deleted_in_marketo_at=deleted_in_marketo_at)


def end_links(batch: Batch, links: list[Link], why: str, *, tombstone_at: datetime | None = None) -> None:
    for link in links:
        try:
            batch.svc.links.delete(link, tombstone_at=tombstone_at)
        except StateConflict:
            batch.retry_marketo.append(link.marketo_id)
            continue
        batch.out.add(link.person, activity.DELETED, f"link to {link.entity} {link.dynamics_id} ended: {why}")
