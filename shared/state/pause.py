"""The background sync's pause: one storage row that every instance and process reads.

When Marketo answers 607 (daily quota used up) no Marketo call can succeed until its
daily reset (midnight US Central). Whoever sees the 607 first stores a pause;
while it holds:

- a queue function puts its message back, invisible until the next re-check, and
  completes the original, so the dequeue count never climbs towards the poison queue;
- the Marketo poller skips its cycle and leaves its cursor where it is;
- `POST /api/sync-person` answers 503 with Retry-After (and logs an activity entry);
- the health page and `leadsync status` say "paused until …, because …".

The quota can come back before our clock says (a quota raised by Adobe, the emulator's
clock in tests): every `recheck_s` one caller, chosen by an ETag-conditional update of the
row, does its ordinary work as a probe. The first success anywhere clears the pause; so
does the reset time passing.

Row: table `<prefix>pause`, PartitionKey "pause", RowKey "marketo-quota".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.errors import QuotaExhausted
from shared.state.storage import Storage

log = logging.getLogger("leadsync")

PARTITION = "pause"
MARKETO_QUOTA = "marketo-quota"


@dataclass(frozen=True)
class Pause:
    """Background work waits until `until` (the service's reset), re-checked at `recheck_at`."""

    code: str  # the service's code that caused it ("607")
    because: str  # for people: "Marketo daily quota (607)"
    detail: str  # the service's own message
    since: datetime
    until: datetime
    recheck_at: datetime
    etag: str | None = None

    def describe(self) -> str:
        """What the health page and `leadsync status` show."""
        return f"paused until {self.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC, because {self.because}"

    def seconds_to_recheck(self, now: datetime) -> int:
        """Whole seconds (at least 1) until the next re-check; a deferred message waits this long."""
        return max(1, math.ceil((min(self.recheck_at, self.until) - now).total_seconds()))

    def seconds_to_reset(self, now: datetime) -> int:
        """Whole seconds (at least 1) until the reset: the Retry-After of a 503."""
        return max(1, math.ceil((self.until - now).total_seconds()))


@dataclass(frozen=True)
class Gate:
    """What a caller may do now: `go` (not paused, or it is the one re-checking) or wait."""

    pause: Pause | None  # the pause in force when checked
    go: bool


def defer(storage: Storage, queue: str, body: str, pause: Pause, *, now: datetime | None = None) -> int:
    """Put a work message back on `queue`, invisible until the pause's next re-check.

    The caller then completes the original: a new message starts at dequeue count 0, so
    however long the pause lasts, it never reaches the poison queue. Returns the delay in s.
    """
    delay = pause.seconds_to_recheck(now or datetime.now(UTC))
    storage.queue(queue).send_message(body, visibility_timeout=delay)
    return delay


class PauseStore:
    def __init__(self, storage: Storage, *, recheck_s: int = 300) -> None:
        self._table = storage.table("pause")
        self.recheck_s = recheck_s

    def current(self, now: datetime | None = None) -> Pause | None:
        """The pause in force at `now`; None when there is none or its reset has passed."""
        now = now or datetime.now(UTC)
        try:
            e = self._table.get_entity(PARTITION, MARKETO_QUOTA)
        except ResourceNotFoundError:
            return None
        pause = Pause(e["code"], e["because"], e["detail"], e["since"], e["until"], e["recheck_at"],
                      e.metadata["etag"])
        return pause if now < pause.until else None

    def quota_exhausted(self, exc: QuotaExhausted, now: datetime | None = None) -> Pause:
        """Store (or renew) the pause for a 607; the next re-check is `recheck_s` from now."""
        now = now or datetime.now(UTC)
        current = self.current(now)
        pause = Pause(exc.code, f"Marketo daily quota ({exc.code})", exc.message,
                      current.since if current else now, exc.resets_at,
                      now + timedelta(seconds=self.recheck_s))
        meta = self._table.upsert_entity(
            {"PartitionKey": PARTITION, "RowKey": MARKETO_QUOTA, "code": pause.code, "because": pause.because,
             "detail": pause.detail, "since": pause.since, "until": pause.until, "recheck_at": pause.recheck_at},
            mode=UpdateMode.REPLACE)
        if current is None:
            log.warning("background sync %s: %s", pause.describe(), exc.message)
        return Pause(pause.code, pause.because, pause.detail, pause.since, pause.until, pause.recheck_at,
                     meta.get("etag"))

    def gate(self, now: datetime | None = None) -> Gate:
        """Whether the caller goes ahead; when a re-check is due, exactly one caller does."""
        now = now or datetime.now(UTC)
        pause = self.current(now)
        if pause is None:
            return Gate(None, True)
        if now < pause.recheck_at:
            return Gate(pause, False)
        claimed = Pause(pause.code, pause.because, pause.detail, pause.since, pause.until,
                        now + timedelta(seconds=self.recheck_s))
        try:
            self._table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": MARKETO_QUOTA, "recheck_at": claimed.recheck_at},
                mode=UpdateMode.MERGE, etag=pause.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return Gate(claimed, False)  # another caller re-checks (or the pause just ended)
        return Gate(pause, True)

    def resumed(self, gate: Gate) -> None:
        """Call after the work `gate` let through went well: the pause it re-checked is over."""
        if not gate.go or gate.pause is None:
            return
        try:
            self._table.delete_entity(PARTITION, MARKETO_QUOTA)
        except ResourceNotFoundError:
            return
        log.warning("background sync resumed: Marketo answers again (%s is over)", gate.pause.because)
