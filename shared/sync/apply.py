"""Apply one work message: read both sides fresh, merge per field, write only what differs.

This module resolves the people and reconciles them; `linking`, `writes` and `deletes` do
those jobs, `batch` holds what they share.

The steps for a batch of up to 300 people:

1. resolve the people: Marketo ids -> links; Dynamics ids -> current records -> links,
   and for Dynamics records not linked yet, link them to a Marketo person with the same
   email or create one (a new Marketo person is never pushed to Dynamics here, except by
   `leadsync retry` after its real-time create failed: reason `retry-create`);
2. read the other side in bulk (one Marketo call per 300, Dataverse In() queries);
3. merge each person against its base (`merge.merge`), validate what goes to Dynamics,
   and log each collision's decision (before the writes, which would leave a retry none to see);
4. write in bulk: Marketo `updateOnly` by id (300 per call), Dataverse `$batch` with each
   record's ETag (If-Match), continue-on-error so one bad record cannot sink the rest;
5. store each new base (conditional on the link's ETag), then the activity log.

Writes happen before the base is stored, so a crash in between leaves both sides equal
and the next run stores the base without writing anything. Conflicts on one record
(a Dataverse 412, a link saved by someone else) re-enqueue that record alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shared.rules import eligibility
from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state import activity
from shared.state.links import Link
from shared.state.workqueue import Work, chunked
from shared.sync import realtime
from shared.sync.batch import Batch, Pending, eligible
from shared.sync.closing import closed_lead
from shared.sync.deletes import dynamics_deleted, mark_deleted_in_marketo, marketo_deleted
from shared.sync.echo import dataverse_news, marketo_people_news
from shared.sync.linking import likely_new, link_or_create
from shared.sync.merges import dynamics_merged, follow_dynamics_merges, is_merged, marketo_merged, merged_away
from shared.sync.report import Outcomes, flush
from shared.sync.sides import read_both, read_marketo
from shared.sync.writes import merge_and_write

log = logging.getLogger("leadsync")

RETRY_CREATE = "retry-create"  # a work reason: Marketo people with no link get the real-time create
RETRY_DELAY_S = 5  # a re-enqueued record waits this long: the conflict that sent it back usually clears by then


def apply_work(svc: Services, work: Work) -> Outcomes:
    """Apply one message. Transient errors propagate (the queue retries the message)."""
    batch = Batch(svc, Outcomes(work.operation_id))
    if work.kind == "merged":
        marketo_merged(batch, int(work.ids[0]), [int(i) for i in work.ids[1:]])
    elif work.kind == "deleted":
        if work.source == "marketo":
            marketo_deleted(batch, [int(i) for i in work.ids])
        else:
            assert work.entity is not None
            _dynamics_deleted(batch, work.entity, [str(i) for i in work.ids], check=work.reason == "event")
    elif work.source == "marketo":
        found = svc.links.get_many(int(i) for i in work.ids)
        links = [lk for lk in found.values() if lk.state != "creating"]
        people = None
        if work.reason == "event" and links:
            # Webhook events name our own writes too (the pollers drop those before
            # enqueueing, `shared.sync.echo`); here they are dropped before a Dynamics read.
            people = read_marketo(svc, links)
            links = marketo_people_news(svc, links, people)
        _reconcile(batch, links, prefetched={}, people=people)
        if work.reason == RETRY_CREATE:
            _create_unlinked(svc, work, [int(i) for i in work.ids if int(i) not in found])
    else:
        assert work.entity is not None
        _dynamics_changed(batch, work.entity, [str(i) for i in work.ids], drop_echoes=work.reason == "event")
    _requeue(batch)
    flush(svc, batch.out)
    return batch.out


def _dynamics_deleted(batch: Batch, entity: str, ids: list[str], *, check: bool) -> None:
    """End the links of deleted records; `check`: only those Dataverse no longer has.

    A change feed's deletes are Dataverse's word; a webhook's are a hint (a forged, replayed
    or reordered call, or a record restored since): a record that still exists is merged instead.
    """
    present: list[str] = []
    if check:
        svc = batch.svc
        key = PRIMARY_KEYS[entity]
        found = {r[key].lower() for r in svc.dataverse.get_by_ids(ENTITY_SETS[entity], ids, [key])}
        present = [i for i in ids if i in found]
    if present:
        _dynamics_changed(batch, entity, present, drop_echoes=True)
    gone = [i for i in ids if i not in present]
    if gone:
        dynamics_deleted(batch, entity, gone)


def _create_unlinked(svc: Services, work: Work, lead_ids: list[int]) -> None:
    """Marketo people whose real-time create failed, sent again by `leadsync retry`: the
    background sync never creates Dynamics leads, so they take the webhook's own path."""
    for lead_id in lead_ids:
        realtime.sync_person(svc, lead_id, operation_id=work.operation_id, wait_s=0)


def _dynamics_changed(batch: Batch, entity: str, ids: list[str], *, drop_echoes: bool = False) -> None:
    svc = batch.svc
    key = PRIMARY_KEYS[entity]
    records = {r[key].lower(): r for r in svc.dataverse.get_by_ids(ENTITY_SETS[entity], ids, svc.select(entity))}
    if drop_echoes and records:
        # Webhook events name our own writes too; the pollers drop those before enqueueing
        # (`shared.sync.echo`), here they are dropped before they cost a Marketo read.
        news = set(dataverse_news(svc, entity, records.values(), delta=False))
        records = {i: r for i, r in records.items() if i in news}
    records = dynamics_merged(batch, entity, records)  # first: a master may take its subordinate's link
    # Records never modified since created are almost all new: one insert each, in
    # transactions, tells which have no index row, where a lookup reads each one.
    reserved = svc.links.reserve_index(entity, [i for i, r in records.items() if likely_new(svc, entity, r)])
    found = svc.links.lookup(entity, [i for i in records if i not in reserved])
    merged_away(batch, entity, found.merged)
    unlinked = [r for i, r in records.items() if i not in found.links and i not in found.merged]
    new_links = link_or_create(batch, entity, unlinked, found.buried)
    prefetched = {(entity, i): r for i, r in records.items()}
    _reconcile(batch, [*found.links.values(), *new_links], prefetched)


def _reconcile(batch: Batch, links: Sequence[Link], prefetched: Mapping[tuple[str, str], Mapping[str, Any]],
               people: Mapping[int, dict[str, Any]] | None = None) -> None:
    svc = batch.svc
    if not links:
        return
    links = [lk for lk in links if lk.entity and lk.dynamics_id]
    marketo, dynamics = read_both(svc, links, prefetched, people)
    pending: list[Pending] = []
    gone_marketo: list[Link] = []
    gone_dynamics: list[Link] = []
    merged: list[tuple[Link, Mapping[str, Any]]] = []
    for link in links:
        entity, did = str(link.entity), str(link.dynamics_id)
        m = marketo.get(link.marketo_id)
        d = dynamics.get((entity, did))
        if m is None:
            gone_marketo.append(link)
            continue
        if d is None:
            gone_dynamics.append(link)
            continue
        if is_merged(d):
            merged.append((link, d))
            continue
        verdict = eligible(svc, entity, d, linking=False)
        if verdict.reason is eligibility.Reason.SYNC_FILTER_OFF:
            batch.out.add(link.person, activity.SKIPPED, f"sync filter is No on {entity} {did}: not synced")
            continue
        if verdict.reason is eligibility.Reason.LEAD_NOT_OPEN:
            closed_lead(batch, link, d)
            continue
        pending.append(Pending(link, m, dict(d)))
    for link in gone_marketo:
        # Deleted or merged away: only Marketo's feeds say which, and a merge's loser must
        # not come back as a new person, so its link ends when the deleted-leads feed (read
        # with the Merge Leads feed) reports it.
        batch.out.add(link.person, activity.SKIPPED, f"Marketo person {link.marketo_id} no longer exists: the link "
                      "ends when Marketo's deleted-leads feed says whether it was deleted or merged")
    if gone_dynamics:
        mark_deleted_in_marketo(batch, gone_dynamics)
    for entity in ("lead", "contact"):
        follow_dynamics_merges(batch, entity, [(lk, d) for lk, d in merged if lk.entity == entity])
    merge_and_write(batch, pending)


def _requeue(batch: Batch) -> None:
    items: list[Work] = []
    if batch.retry_marketo:
        items += chunked("marketo", "changed", batch.retry_marketo, reason="retry")
    for entity, ids in batch.retry_dynamics.items():
        if ids:
            items += chunked("dynamics", "changed", ids, entity=entity, reason="retry")
    if items:
        log.info("op=%s re-enqueued %d records for another round", batch.out.operation_id,
                 len(batch.retry_marketo) + sum(len(v) for v in batch.retry_dynamics.values()))
        batch.svc.queues.send(items, delay_s=RETRY_DELAY_S)
