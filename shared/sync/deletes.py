"""Deletes: a person deleted in Marketo ends its link (the Dynamics record is kept); a record
deleted in Dynamics flags its Marketo person, which is never deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.errors import Problem
from shared.state import activity
from shared.state.links import Link
from shared.sync.batch import D2M, Batch, end_links


def marketo_deleted(batch: Batch, ids: list[int]) -> None:
    links = list(batch.svc.links.get_many(ids).values())
    end_links(batch, links, "the person was deleted in Marketo; the Dynamics record is kept",
               tombstone_at=datetime.now(UTC))


def dynamics_deleted(batch: Batch, entity: str, ids: list[str]) -> None:
    links = list(batch.svc.links.by_dynamics_many(entity, ids).values())
    mark_deleted_in_marketo(batch, links)


def mark_deleted_in_marketo(batch: Batch, links: list[Link]) -> None:
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
                             [Problem(field_name, "rejected", f"Marketo {r.code}: {r.message}", r.code)
                              for r in res.reasons],
                             direction=D2M, marketo_id=link.marketo_id, what=f"marking {field_name}")
    end_links(batch, links, f"deleted in Dynamics: Marketo person flagged {field_name}=true")
