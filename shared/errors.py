"""Every error LeadSync raises on purpose, grouped by what the caller must do.

    LeadSyncError
    ├── ConfigError            fatal: a setting or the field map is wrong; fix and restart
    ├── TransientError         retriable: raise out of the function so the queue retries
    │   ├── MarketoTransient   (502, 604, 606, 608, 611, 614, 615, 713, 719, 5xx, timeouts)
    │   └── DataverseTransient (429, 5xx, timeouts, dropped connections)
    ├── QuotaExhausted         Marketo 607: nothing to do until the daily reset (`resets_at`)
    ├── MarketoError           a call-level failure Marketo reported (`code` is its string code)
    ├── DataverseError         a request Dataverse refused (`code` is the 0x… code, `status` HTTP)
    │   └── ConcurrencyConflict  HTTP 412: someone wrote the record first; re-read and re-apply
    ├── StateConflict          retriable: a state row changed under us (ETag); re-read and retry
    ├── CursorExpired          a stored paging token / delta link is too old: re-baseline
    ├── ValidationFailed       record-level: log to the activity log and park; never retry
    └── BadMessage             a queue message or HTTP body we cannot parse: poison / 4xx

Codes are data: compare `code`, never parse `message`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class LeadSyncError(Exception):
    """Base of every LeadSync error."""


class ConfigError(LeadSyncError):
    """A setting is missing or malformed. The message names the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"setting {setting}: {problem}")


class MarketoError(LeadSyncError):
    """Marketo answered `success: false` (or an HTTP error) for a whole call."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        self.code = code
        self.message = message
        self.request_id = request_id
        super().__init__(f"Marketo {code}: {message}" + (f" (requestId {request_id})" if request_id else ""))


class TransientError(LeadSyncError):
    """Worth retrying later: the queue trigger re-delivers the message."""


class MarketoTransient(MarketoError, TransientError):
    """A Marketo failure that a later retry is expected to clear."""


class QuotaExhausted(MarketoError):
    """Marketo's daily quota (607) is used up; calls fail until `resets_at`."""

    def __init__(self, message: str, resets_at: datetime, request_id: str | None = None) -> None:
        super().__init__("607", message, request_id)
        self.resets_at = resets_at


class DataverseError(LeadSyncError):
    """Dataverse refused a request. `code` is the hex error code (may be empty)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"Dataverse HTTP {status} {code or '-'}: {message}")


class DataverseTransient(DataverseError, TransientError):
    """A Dataverse failure that a later retry is expected to clear."""


class ConcurrencyConflict(DataverseError):
    """HTTP 412: the record changed since it was read (or already exists)."""


class StateConflict(TransientError):
    """A Table Storage row changed since we read it (ETag mismatch) or already exists."""


class CursorExpired(LeadSyncError):
    """A stored change cursor can no longer be used; the caller must re-read everything."""

    def __init__(self, source: str, detail: str) -> None:
        self.source = source
        self.detail = detail
        super().__init__(f"{source} cursor expired: {detail}")


class ValidationRule(StrEnum):
    """Which rule a `Problem` breaks, stored in activity details as its value."""

    REQUIRED = "required"
    MAX_LENGTH = "max_length"
    FORMAT = "format"
    OPTION = "option"
    TYPE = "type"
    UNKNOWN = "unknown"  # a column Dynamics does not have
    REJECTED = "rejected"  # the service refused a record that passed our checks
    ENCODING = "encoding"  # a value no encoder can write (a lone surrogate)
    NEAR_MISS = "near_miss"  # an email lookup found only look-alike addresses
    OWNER = "owner"  # the configured owner of a new lead is not a Dynamics user or team


@dataclass(frozen=True)
class Problem:
    """One reason a record cannot be written: which field, what rule, in words."""

    field: str
    rule: str  # a ValidationRule
    message: str
    code: str = ""  # the service's code when the service refused the record ("0x80040220", "1003")


class ValidationFailed(LeadSyncError):
    """A record breaks the target's rules. Never retried until the record changes."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


class BadMessage(LeadSyncError):
    """Input we cannot interpret (queue message or HTTP body). `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
