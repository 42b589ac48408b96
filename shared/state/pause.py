"""The background sync's pauses: rows in one storage partition that every instance and process reads.

Three things pause the background sync, each a row (RowKey = its kind):

- `marketo-quota`: Marketo answered 607 (daily quota used up). No Marketo call can succeed
  until its daily reset (midnight US Central), so this one stops the real-time endpoint too.
  The quota can come back before our clock says (a quota raised by Adobe, the emulator's
  clock in tests): every `recheck_s` one caller, chosen by an ETag-conditional update of
  the row, does its ordinary work as a probe. The first success anywhere clears it.
- `daily-cap`: LeadSync's own share of the quota is spent (`shared.sync.governor`), leaving
  the rest to the customer's other integrations. It holds until the reset; it stops the
  real-time endpoint only once the real-time reserve is spent too.
- `operator`: `leadsync pause` (until `leadsync resume`), or the LEADSYNC_BACKGROUND_PAUSED
  setting. The real-time endpoint keeps serving.

While one holds, a queue function puts its message back, invisible until the next look, and
completes the original, so the dequeue count never climbs towards the poison queue; the
Marketo poller skips its cycle and leaves its cursor where it is; the health page and
`leadsync status` say "paused until …, because …".

A process that found no pause trusts that for `clear_for_s` (default 5 s) before it reads
the rows again: every work message and new-person webhook asks, and the answer is almost
always "no". A caller that has not yet seen a 607 stored elsewhere meets it itself and
handles it as the first one did, so the cost of the cache is at most a call per caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.errors import QuotaExhausted
from shared.state.storage import Storage

log = logging.getLogger("leadsync")

PARTITION = "pause"
LOOK_AGAIN_S = 120  # how long a message waits under a pause that no probe can end (cap, operator)
FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
CLEAR_FOR_S = 5.0  # how long a process trusts its last "no pause" read


class PauseKind(StrEnum):
    """Why the background sync is paused; also the pause row's RowKey. In order of precedence."""

    QUOTA = "marketo-quota"
    OPERATOR = "operator"
    CAP = "daily-cap"


MARKETO_QUOTA = PauseKind.QUOTA.value
KINDS = frozenset(k.value for k in PauseKind)


@dataclass(frozen=True)
class Pause:
    """Background work waits until `until` (the service's reset), re-checked at `recheck_at`."""

    code: str  # the service's code that caused it ("607"), or the kind for our own pauses
    because: str  # for people: "Marketo daily quota (607)"
    detail: str  # the service's own message, or the operator's reason
    since: datetime
    until: datetime
    recheck_at: datetime
    etag: str | None = None
    kind: PauseKind = PauseKind.QUOTA
    realtime: bool = True  # whether the real-time endpoint stops too

    def describe(self) -> str:
        """What the health page and `leadsync status` show."""
        if self.until >= FOREVER:
            return f"paused since {self.since.astimezone(UTC):%Y-%m-%d %H:%M} UTC, because {self.because}"
        return f"paused until {self.until.astimezone(UTC):%Y-%m-%d %H:%M} UTC, because {self.because}"

    def seconds_to_recheck(self, now: datetime) -> int:
        """Whole seconds (at least 1) until the next look; a deferred message waits this long."""
        next_look = self.recheck_at if self.kind == PauseKind.QUOTA else now + timedelta(seconds=LOOK_AGAIN_S)
        return max(1, math.ceil((min(next_look, self.until) - now).total_seconds()))

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


def _from_row(e: Mapping[str, Any], etag: str | None) -> Pause:
    kind = PauseKind(str(e["RowKey"]))
    return Pause(str(e["code"]), str(e["because"]), str(e["detail"]), e["since"], e["until"], e["recheck_at"], etag,
                 kind, bool(e.get("realtime", kind == PauseKind.QUOTA)))


class PauseStore:
    def __init__(self, storage: Storage, *, recheck_s: int = 300, clear_for_s: float = CLEAR_FOR_S,
                 paused_by_setting: bool = False) -> None:
        self._table = storage.table("pause")
        self.recheck_s = recheck_s
        self.clear_for_s = clear_for_s
        self.paused_by_setting = paused_by_setting
        self._clear_since: datetime | None = None  # when this process last read "no pause"

    def current(self, now: datetime | None = None, *, fresh: bool = False, realtime: bool = False) -> Pause | None:
        """The pause in force at `now` (for the real-time endpoint: one that stops it too);
        None when there is none or its reset has passed.

        Without `fresh`, a "no pause" read in this process within `clear_for_s` is trusted.
        """
        now = now or datetime.now(UTC)
        found = [p for p in self._in_force(now, fresh) if p.realtime or not realtime]
        if self.paused_by_setting and not realtime:
            found.append(Pause(PauseKind.OPERATOR.value, "the setting LEADSYNC_BACKGROUND_PAUSED is on", "",
                               now, FOREVER, FOREVER, kind=PauseKind.OPERATOR, realtime=False))
        order = list(PauseKind)
        return min(found, key=lambda p: order.index(p.kind), default=None)

    def _in_force(self, now: datetime, fresh: bool) -> list[Pause]:
        since = self._clear_since
        if not fresh and since is not None and since <= now < since + timedelta(seconds=self.clear_for_s):
            return []
        rows = [_from_row(e, e.metadata.get("etag"))
                for e in self._table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION})
                if e["RowKey"] in KINDS]
        self._clear_since = None if rows else now
        return [p for p in rows if now < p.until]

    def _store(self, pause: Pause) -> Pause:
        meta = self._table.upsert_entity(
            {"PartitionKey": PARTITION, "RowKey": pause.kind.value, "code": pause.code, "because": pause.because,
             "detail": pause.detail, "since": pause.since, "until": pause.until, "recheck_at": pause.recheck_at,
             "realtime": pause.realtime},
            mode=UpdateMode.REPLACE)
        self._clear_since = None
        return replace(pause, etag=meta.get("etag"))

    def _end(self, kind: PauseKind) -> bool:
        """Delete the pause row of `kind`; whether there was one (the SDK's delete ignores a missing row)."""
        try:
            self._table.get_entity(PARTITION, kind.value, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        self._table.delete_entity(PARTITION, kind.value)
        return True

    def _stored(self, kind: PauseKind, now: datetime) -> Pause | None:
        return next((p for p in self._in_force(now, fresh=True) if p.kind == kind), None)

    def quota_exhausted(self, exc: QuotaExhausted, now: datetime | None = None) -> Pause:
        """Store (or renew) the pause for a 607; the next re-check is `recheck_s` from now."""
        now = now or datetime.now(UTC)
        current = self._stored(PauseKind.QUOTA, now)
        pause = self._store(Pause(exc.code, f"Marketo daily quota ({exc.code})", exc.message,
                                  current.since if current else now, exc.resets_at,
                                  now + timedelta(seconds=self.recheck_s)))
        if current is None:
            log.warning("background sync %s: %s", pause.describe(), exc.message)
        return pause

    def cap_reached(self, used: int, quota: int, share_pct: int, *, realtime: bool, resets_at: datetime,
                    now: datetime | None = None) -> Pause:
        """Store (or renew) the pause for LeadSync's own daily cap: `used` calls of `quota` today."""
        now = now or datetime.now(UTC)
        current = self._stored(PauseKind.CAP, now)
        who = "the background sync and the real-time endpoint" if realtime else "the background sync"
        pause = self._store(Pause(
            PauseKind.CAP.value, f"LeadSync's daily cap: {used:,} of {quota:,} Marketo calls used today "
            f"(cap {share_pct} %)", f"{who} wait for Marketo's daily reset", current.since if current else now,
            resets_at, resets_at, kind=PauseKind.CAP, realtime=realtime))
        if current is None or current.realtime != realtime:
            log.warning("%s %s", who, pause.describe())
        return pause

    def cap_lifted(self) -> bool:
        """The cap's pause, if any, is over (a new day, or a larger quota or cap configured)."""
        return self._end(PauseKind.CAP)

    def operator_pause(self, reason: str, now: datetime | None = None) -> Pause:
        """Pause the background sync until `operator_resume` (the real-time endpoint keeps serving)."""
        now = now or datetime.now(UTC)
        return self._store(Pause(PauseKind.OPERATOR.value, f"an operator paused it: {reason}", reason, now, FOREVER,
                                 FOREVER, kind=PauseKind.OPERATOR, realtime=False))

    def operator_resume(self) -> bool:
        """End an operator's pause; whether there was one."""
        return self._end(PauseKind.OPERATOR)

    def gate(self, now: datetime | None = None, *, realtime: bool = False) -> Gate:
        """Whether the caller goes ahead; when a 607's re-check is due, exactly one caller does."""
        now = now or datetime.now(UTC)
        pause = self.current(now, realtime=realtime)
        if pause is None:
            return Gate(None, True)
        if pause.kind != PauseKind.QUOTA or now < pause.recheck_at:
            return Gate(pause, False)
        claimed = replace(pause, recheck_at=now + timedelta(seconds=self.recheck_s), etag=None)
        try:
            self._table.update_entity(
                {"PartitionKey": PARTITION, "RowKey": MARKETO_QUOTA, "recheck_at": claimed.recheck_at},
                mode=UpdateMode.MERGE, etag=pause.etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return Gate(claimed, False)  # another caller re-checks (or the pause just ended)
        return Gate(pause, True)

    def resumed(self, gate: Gate) -> None:
        """Call after the work `gate` let through went well: the 607 it re-checked is over."""
        if not gate.go or gate.pause is None or gate.pause.kind != PauseKind.QUOTA:
            return
        if self._end(PauseKind.QUOTA):
            log.warning("background sync resumed: Marketo answers again (%s is over)", gate.pause.because)
