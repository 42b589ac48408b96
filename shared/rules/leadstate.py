"""How a Dynamics lead that is no longer open ended: qualified, disqualified or cancelled.

Pure. The lead's `statecode` says which (0 Open, 1 Qualified, 2 Disqualified) and its
`statuscode` the reason (spec "Core columns": 3 Qualified; 4 Lost, 5 Cannot Contact,
6 No Longer Interested, 7 Canceled). Canceled is a reason of the Disqualified state, but
a marketer reads it differently ("the prospect withdrew", not "sales turned it down"), so it
is its own outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

OPEN, QUALIFIED_STATE, DISQUALIFIED_STATE = 0, 1, 2
CANCELED_STATUS = 7
STATUS_LABELS: Mapping[int, str] = {1: "New", 2: "Contacted", 3: "Qualified", 4: "Lost", 5: "Cannot Contact",
                                    6: "No Longer Interested", 7: "Canceled"}


class Ending(StrEnum):
    QUALIFIED = "qualified"
    DISQUALIFIED = "disqualified"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Closed:
    ending: Ending
    status: int | None  # the status reason
    label: str  # the status reason's label, e.g. "Canceled" (or the state's name when unknown)

    @property
    def fingerprint(self) -> str:
        """Stable while the lead stays closed this way: a link parked with it is not reported again."""
        return f"closed:{self.ending}:{self.status}"


def closed(lead: Mapping[str, Any]) -> Closed | None:
    """How `lead` (a Dynamics lead record) ended, or None while it is open."""
    state = lead.get("statecode", OPEN)
    if state == OPEN or state is None:
        return None
    status = lead.get("statuscode")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    if state == QUALIFIED_STATE:
        return Closed(Ending.QUALIFIED, status, STATUS_LABELS.get(status or 3, "Qualified"))
    ending = Ending.CANCELLED if status == CANCELED_STATUS else Ending.DISQUALIFIED
    return Closed(ending, status, STATUS_LABELS.get(status, "Disqualified") if status else "Disqualified")
