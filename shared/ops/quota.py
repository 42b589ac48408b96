"""Marketo's daily API quota as the health page shows it, read at most every few minutes.

Why: reading the usage is itself an API call that counts against the quota, so a page
that reloads every 30 seconds must reuse a recent reading.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from shared.clients.marketo import MarketoClient
from shared.errors import MarketoError, QuotaExhausted

MARKETO_DAILY_QUOTA = 50_000
USAGE_MAX_AGE_S = 300.0
USAGE_ERROR_MAX_AGE_S = 60.0


@dataclass(frozen=True)
class Quota:
    used: int | None  # None: unknown, see `error`
    limit: int = MARKETO_DAILY_QUOTA
    error: str | None = None
    exhausted: bool = False

    @property
    def fraction(self) -> float | None:
        if self.exhausted:
            return 1.0
        return None if self.used is None else self.used / self.limit


_usage_cache: weakref.WeakKeyDictionary[MarketoClient, tuple[float, Quota]] = weakref.WeakKeyDictionary()
_usage_lock = threading.Lock()


def marketo_quota(client: MarketoClient, limit: int = MARKETO_DAILY_QUOTA) -> Quota:
    """Calls used today of the daily `limit` (MARKETO_DAILY_QUOTA, from the settings); reuses a
    reading younger than 5 minutes (1 minute after an error)."""
    with _usage_lock:
        cached = _usage_cache.get(client)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
    try:
        quota = Quota(client.usage(), limit)
        max_age = USAGE_MAX_AGE_S
    except QuotaExhausted as exc:
        quota = Quota(None, limit, error=f"daily quota exhausted until {exc.resets_at:%Y-%m-%d %H:%M %Z}",
                      exhausted=True)
        max_age = USAGE_MAX_AGE_S
    except MarketoError as exc:
        quota = Quota(None, limit, error=str(exc))
        max_age = USAGE_ERROR_MAX_AGE_S
    with _usage_lock:
        _usage_cache[client] = (time.monotonic() + max_age, quota)
    return quota


def forget_reading(client: MarketoClient) -> None:
    """Drop the cached reading, so the next `marketo_quota` asks Marketo again."""
    with _usage_lock:
        _usage_cache.pop(client, None)
