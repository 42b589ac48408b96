"""Pollers: read each side's change feed from its stored cursor and enqueue work.

At-least-once: work is enqueued before the cursor that covers it is saved, so a crash in
between re-reads (and re-enqueues) a little, never skips. Duplicates are harmless because
work messages carry ids only and the applier merges fresh state.

A cursor that has expired (Marketo activity retention; Dataverse change-tracking token
expiry) falls back to a full re-read: every linked person (Marketo side) or every record
(Dataverse side, which is what a new delta baseline returns) is enqueued once, and
merging against the stored bases writes only real differences.

While Marketo's daily quota is used up (`shared.state.pause`) the Marketo poller skips its
cycle; a 607 in the middle of a feed enqueues the pages read so far and stores the cursor
of the last page read, never one past it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.errors import CursorExpired, QuotaExhausted
from shared.runtime import ENTITY_SETS, Services
from shared.state.cursors import MARKETO_CHANGES, MARKETO_DELETES, Cursor, dataverse_feed
from shared.state.workqueue import chunked
from shared.sync import sampling
from shared.sync.echo import dataverse_news, marketo_news
from shared.sync.governor import check_daily_cap

log = logging.getLogger("leadsync")

FLUSH_EVERY = 3000  # ids buffered before enqueueing and advancing the cursor mid-feed
MAX_PAGES = 200  # per invocation; the next tick continues from the saved cursor


@dataclass
class PollReport:
    feed: str
    changed: int = 0
    deleted: int = 0
    messages: int = 0
    rebaselined: bool = False
    notes: list[str] = field(default_factory=list)


def poll_marketo(svc: Services) -> list[PollReport]:
    """Lead changes every poll; deleted leads at most every MARKETO_DELETES_EVERY_S.

    Deletions only end links, so they can wait a few minutes; skipping that call on most
    polls halves what polling costs of Marketo's daily quota.
    """
    check_daily_cap(svc)
    gate = svc.pauses.gate()
    if not gate.go and gate.pause is not None:
        return [PollReport(MARKETO_CHANGES, notes=[f"skipped: {gate.pause.describe()}"])]
    reports: list[PollReport] = []
    try:
        reports.append(_marketo_feed(svc, MARKETO_CHANGES))
        if svc.deletes_due():
            reports.append(_marketo_feed(svc, MARKETO_DELETES))
    except QuotaExhausted as exc:
        pause = svc.pauses.quota_exhausted(exc)
        return [*reports, PollReport(MARKETO_CHANGES, notes=[f"stopped: {pause.describe()}"])]
    svc.pauses.resumed(gate)
    return reports


def _marketo_feed(svc: Services, name: str) -> PollReport:
    report = PollReport(name)
    cursor = svc.cursors.get(name)
    if cursor is None:
        # First run: start from now. Existing people are brought in by Dynamics' initial
        # read or by `leadsync backfill`, not by replaying Marketo's history.
        token = svc.marketo.paging_token(datetime.now(UTC) - timedelta(seconds=5))
        cursor = svc.cursors.save(name, token, previous=None)
    deleted = name == MARKETO_DELETES
    try:
        cursor = _drain_marketo(svc, name, cursor, deleted, report)
    except CursorExpired as exc:
        report.rebaselined = True
        log.warning("%s: %s; re-reading every linked person", name, exc)
        report.notes.append(f"cursor expired ({exc.detail}): full re-read of linked people")
        token = svc.marketo.paging_token(datetime.now(UTC) - timedelta(seconds=5))
        if not deleted:
            ids = [link.marketo_id for link in svc.links.all()]
            work = chunked("marketo", "changed", ids, reason="rebaseline", size=svc.settings.batch_size)
            svc.queues.send(work)
            report.changed, report.messages = len(ids), len(work)
        svc.cursors.save(name, token, previous=cursor)
    sampling.polled(svc, name, report.changed, report.deleted)
    return report


def _drain_marketo(svc: Services, name: str, cursor: Cursor, deleted: bool, report: PollReport) -> Cursor:
    ids: list[int] = []
    token = cursor.value
    pages: Iterator[tuple[list[int], str]]
    if deleted:
        pages = ((page.lead_ids, page.next_token) for page in svc.marketo.deleted_leads(cursor.value))
    else:
        pages = ((marketo_news(svc, page.changes), page.next_token)
                 for page in svc.marketo.lead_changes(cursor.value, svc.fields.marketo_fields()))
    try:
        for count, (page_ids, token) in enumerate(pages, start=1):
            ids += page_ids
            if len(ids) >= FLUSH_EVERY or count >= MAX_PAGES:
                cursor = _enqueue_marketo(svc, name, cursor, token, ids, deleted, report)
                ids = []
                if count >= MAX_PAGES:
                    report.notes.append("page limit reached; the next poll continues")
                    return cursor
    except QuotaExhausted:
        # `token` is still the last page fully read: keep what those pages found, then stop.
        _enqueue_marketo(svc, name, cursor, token, ids, deleted, report)
        raise
    return _enqueue_marketo(svc, name, cursor, token, ids, deleted, report)


def _enqueue_marketo(svc: Services, name: str, cursor: Cursor, token: str, ids: list[int], deleted: bool,
                     report: PollReport) -> Cursor:
    work = chunked("marketo", "deleted" if deleted else "changed", ids, size=svc.settings.batch_size)
    svc.queues.send(work)
    report.messages += len(work)
    if deleted:
        report.deleted += len(set(ids))
    else:
        report.changed += len(set(ids))
    if token == cursor.value:
        return cursor
    return svc.cursors.save(name, token, previous=cursor)


def poll_dataverse(svc: Services) -> list[PollReport]:
    return [_dataverse_feed(svc, entity) for entity in ("lead", "contact")]


def _dataverse_feed(svc: Services, entity: str) -> PollReport:
    name = dataverse_feed(entity)
    report = PollReport(name)
    cursor = svc.cursors.get(name)
    try:
        _drain_dataverse(svc, entity, cursor, report)
    except CursorExpired as exc:
        log.warning("%s: %s; starting a new baseline (full re-read)", name, exc)
        report.rebaselined = True
        report.notes.append(f"delta link expired ({exc.detail}): full re-read")
        _drain_dataverse(svc, entity, cursor, report, from_scratch=True)
    sampling.polled(svc, name, report.changed, report.deleted)
    return report


def _drain_dataverse(svc: Services, entity: str, cursor: Cursor | None, report: PollReport, *,
                     from_scratch: bool = False) -> None:
    name = dataverse_feed(entity)
    link = None if (cursor is None or from_scratch) else cursor.value
    size = svc.settings.batch_size
    for page in svc.dataverse.changes(ENTITY_SETS[entity], svc.select(entity), link):
        changed = dataverse_news(svc, entity, page.records, delta=link is not None)
        deleted = [i.lower() for i in page.deleted_ids]
        work = chunked("dynamics", "changed", changed, entity=entity, size=size)
        work += chunked("dynamics", "deleted", deleted, entity=entity, size=size)
        svc.queues.send(work)
        report.changed += len(changed)
        report.deleted += len(deleted)
        report.messages += len(work)
        if page.delta_link:
            svc.cursors.save(name, page.delta_link, previous=cursor)
