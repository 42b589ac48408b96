"""LeadSync's daily cap on Marketo's API quota, checked by the Marketo poller.

The daily quota belongs to the whole subscription, and Marketo's usage endpoint counts
every integration's calls. LeadSync may use `daily_cap_pct` of it; of that, the last
`realtime_reserve_pct` is kept for the real-time endpoint. When today's usage reaches the
background's share, the background sync pauses until Marketo's reset (midnight US
Central); when it reaches the whole cap, the real-time endpoint stops too. A larger quota
or cap configured, or a new day, lifts it at the next check.

The check reads the usage (one call) at most every LEADSYNC_CAP_CHECK_S (300 s) per process,
so between checks the sync can overshoot by what it spends in that time (at most 1,500
calls at Marketo's 100 calls / 20 s): the reserve is what absorbs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shared.clients.marketo import next_reset
from shared.errors import QuotaExhausted
from shared.runtime import Services


@dataclass(frozen=True)
class Limits:
    """Calls a day: where the background sync stops, and where the real-time endpoint does."""

    background: int
    realtime: int

    @classmethod
    def of(cls, quota: int, cap_pct: int, reserve_pct: int) -> Limits:
        return cls(quota * (cap_pct - reserve_pct) // 100, quota * cap_pct // 100)


def check_daily_cap(svc: Services, now: datetime | None = None, *, force: bool = False) -> int | None:
    """Compare today's usage with the cap and store or lift the cap's pause; the usage read,
    or None when no check was due (or Marketo's quota is already exhausted)."""
    if not force and not svc.cap_check_due(svc.settings.cap_check_s):
        return None
    now = now or datetime.now(UTC)
    s = svc.settings
    try:
        used = svc.marketo.usage()
    except QuotaExhausted as exc:
        svc.pauses.quota_exhausted(exc, now)
        return None
    limits = Limits.of(s.marketo_daily_quota, s.daily_cap_pct, s.realtime_reserve_pct)
    if used >= limits.background:
        svc.pauses.cap_reached(used, s.marketo_daily_quota, s.daily_cap_pct, realtime=used >= limits.realtime,
                               resets_at=next_reset(now), now=now)
    else:
        svc.pauses.cap_lifted()
    return used
