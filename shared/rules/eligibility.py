"""Whether a Dynamics record is ours to sync: the one rule apply, echo and backfill share.

Pure (no I/O): the callers read the record and, for a record not linked yet, when its
Marketo person was deleted in Marketo (its tombstone), and act on the verdict. The checks
run in a fixed order, so a record that fails several reports the first:

1. the sync-filter column is an explicit No (false); blank or true lets it through;
2. a lead that is not open (qualified or disqualified) is read-only in Dynamics;
3. only when linking: its Marketo person was deleted in Marketo and the record has not
   been edited since (a later Dynamics edit brings the person back);
4. only when linking: it has no email, and LeadSync matches people on email.

A linked record needs neither 3 nor 4: it is synced through its link, whatever its email.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

OPEN = 0  # lead statecode Open; 1 Qualified, 2 Disqualified


class Reason(StrEnum):
    ELIGIBLE = "eligible"
    SYNC_FILTER_OFF = "sync_filter_off"
    LEAD_NOT_OPEN = "lead_not_open"
    DELETED_IN_MARKETO = "deleted_in_marketo"
    NO_EMAIL = "no_email"


MESSAGES: Mapping[Reason, str] = {
    Reason.ELIGIBLE: "ours to sync",
    Reason.SYNC_FILTER_OFF: "sync filter is No: not synced",
    Reason.LEAD_NOT_OPEN: "the lead is no longer open (qualified or disqualified)",
    Reason.DELETED_IN_MARKETO: "its Marketo person was deleted in Marketo; only a later Dynamics edit brings it back",
    Reason.NO_EMAIL: "email is blank: LeadSync matches people on email",
}


@dataclass(frozen=True)
class Verdict:
    reason: Reason

    @property
    def ok(self) -> bool:
        return self.reason is Reason.ELIGIBLE

    @property
    def message(self) -> str:
        return MESSAGES[self.reason]


def check(record: Mapping[str, Any], *, entity: str, sync_filter_field: str, email: str | None,
          linking: bool, deleted_in_marketo_at: datetime | None = None) -> Verdict:
    """The verdict on one Dynamics `record` of `entity` ("lead" | "contact").

    `email`: the record's email in canonical form (None when blank). `linking`: the record
    has no link yet and would be linked or create a Marketo person. `deleted_in_marketo_at`:
    when its Marketo person was deleted in Marketo, if it was (ignored unless linking).
    """
    if record.get(sync_filter_field) is False:
        return Verdict(Reason.SYNC_FILTER_OFF)
    if entity == "lead" and record.get("statecode", OPEN) != OPEN:
        return Verdict(Reason.LEAD_NOT_OPEN)
    if linking:
        if deleted_in_marketo_at is not None and not modified_after(record, deleted_in_marketo_at):
            return Verdict(Reason.DELETED_IN_MARKETO)
        if email is None or not email.strip():
            return Verdict(Reason.NO_EMAIL)
    return Verdict(Reason.ELIGIBLE)


def modified_after(record: Mapping[str, Any], moment: datetime) -> bool:
    """The record was edited after `moment` (a record without `modifiedon` counts as edited)."""
    raw = record.get("modifiedon")
    if not raw:
        return True
    # modifiedon has whole seconds: an edit in the same second as the delete counts as after it.
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) + timedelta(seconds=1) > moment
