"""How a closed Dynamics lead ended (pure): qualified, disqualified or cancelled, with its reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.leadstate import Closed, Ending, closed


@pytest.mark.parametrize(("record", "expected"), [
    ({"statecode": 0, "statuscode": 1}, None),
    ({"statecode": 0, "statuscode": 2}, None),
    ({}, None),
    ({"statecode": 1, "statuscode": 3}, Closed(Ending.QUALIFIED, 3, "Qualified")),
    ({"statecode": 2, "statuscode": 4}, Closed(Ending.DISQUALIFIED, 4, "Lost")),
    ({"statecode": 2, "statuscode": 5}, Closed(Ending.DISQUALIFIED, 5, "Cannot Contact")),
    ({"statecode": 2, "statuscode": 6}, Closed(Ending.DISQUALIFIED, 6, "No Longer Interested")),
    ({"statecode": 2, "statuscode": 7}, Closed(Ending.CANCELLED, 7, "Canceled")),
    ({"statecode": 2, "statuscode": None}, Closed(Ending.DISQUALIFIED, None, "Disqualified")),
    ({"statecode": 2, "statuscode": 99}, Closed(Ending.DISQUALIFIED, 99, "Disqualified")),
])
def test_how_a_lead_ended(record: dict[str, Any], expected: Closed | None) -> None:
    assert closed(record) == expected


@given(st.integers(1, 2), st.one_of(st.none(), st.integers(1, 7)))
def test_the_fingerprint_changes_exactly_when_the_ending_does(state: int, status: int | None) -> None:
    one = closed({"statecode": state, "statuscode": status})
    assert one is not None
    for other_status in (None, *range(1, 8)):
        other = closed({"statecode": state, "statuscode": other_status})
        assert other is not None
        assert (one.fingerprint == other.fingerprint) == ((one.ending, one.status) == (other.ending, other.status))
