"""Feed the hourly trend sample (`shared.state.trends`) from the sync's own work.

The pollers call `polled` after each feed, the queue handler `sample` after each message.
Both cost nothing but memory until the process's row is due (about seven writes an hour),
except that a poll reads the feed's heartbeat when this process has not polled that feed
recently: another instance may have polled in between, and only the heartbeat knows.

A failed trend write is logged and dropped: it must never fail the poll or the message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from azure.core.exceptions import AzureError

from shared.runtime import Services
from shared.state.cursors import MARKETO_DELETES
from shared.state.heartbeat import HEARTBEAT_PREFIX, record_poll
from shared.state.trends import Counters
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

log = logging.getLogger("leadsync")

TRUST_OWN_GAP_S = 120.0  # a gap this short between this process's own polls needs no heartbeat read


def polled(svc: Services, feed: str, changed: int, deleted: int) -> None:
    """Record the poll of `feed` (its heartbeat, as before) and the gap since the previous poll."""
    now = datetime.now(UTC)
    previous = svc.trends.last_poll(feed)
    trusted = TRUST_OWN_GAP_S
    if feed == MARKETO_DELETES:
        trusted = max(trusted, 2.0 * svc.settings.marketo_deletes_every_s)
    if previous is None or (now - previous).total_seconds() > trusted:
        beat = svc.cursors.get(HEARTBEAT_PREFIX + feed)
        if beat is not None and (previous is None or beat.updated_at > previous):
            previous = beat.updated_at
    record_poll(svc.storage, feed, changed, deleted, at=now)
    svc.trends.polled(feed, now)
    gaps = {feed: max(0.0, (now - previous).total_seconds())} if previous is not None else {}
    _note(svc, now, gaps)


def sample(svc: Services) -> None:
    """Note this process's API calls so far (after a work message, a webhook call...)."""
    _note(svc, datetime.now(UTC), {})


def backlog(svc: Services) -> int:
    """Messages waiting on both work queues (poison queues not included)."""
    return svc.queues.depth(FROM_MARKETO) + svc.queues.depth(FROM_DYNAMICS)


def _note(svc: Services, now: datetime, gaps: dict[str, float]) -> None:
    counters = Counters(svc.marketo.calls, svc.dataverse.requests_made)
    try:
        svc.trends.note(now, counters, backlog=lambda: backlog(svc), lag=gaps)
    except AzureError as exc:
        log.warning("trends: sample not written (%s); the next one carries it", exc)
