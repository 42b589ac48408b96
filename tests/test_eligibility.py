"""The one rule for "is this Dynamics record ours to sync", as a table and as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.eligibility import MESSAGES, Reason, check, modified_after

FILTER = "new_syncwithmarketo"
DELETED = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
BEFORE = "2026-05-01T11:00:00Z"
SAME_SECOND = "2026-05-01T12:00:00Z"
AFTER = "2026-05-01T12:00:05Z"
E = "ada@example.com"
R = Reason

# (entity, record, email, linking, deleted in Marketo at, expected)
TABLE: list[tuple[str, dict[str, Any], str | None, bool, datetime | None, Reason]] = [
    ("lead", {}, E, True, None, R.ELIGIBLE),
    ("lead", {FILTER: True}, E, True, None, R.ELIGIBLE),
    ("lead", {FILTER: None}, E, True, None, R.ELIGIBLE),  # blank filter: in
    ("lead", {FILTER: False}, E, True, None, R.SYNC_FILTER_OFF),
    ("lead", {FILTER: False}, E, False, None, R.SYNC_FILTER_OFF),
    ("lead", {FILTER: 0}, E, True, None, R.ELIGIBLE),  # only an explicit false keeps it out
    ("lead", {"statecode": 0}, E, True, None, R.ELIGIBLE),
    ("lead", {"statecode": 1}, E, True, None, R.LEAD_NOT_OPEN),
    ("lead", {"statecode": 2}, E, False, None, R.LEAD_NOT_OPEN),
    ("lead", {"statecode": 1, FILTER: False}, E, True, None, R.SYNC_FILTER_OFF),  # the filter is checked first
    ("contact", {"statecode": 1}, E, True, None, R.ELIGIBLE),  # an inactive contact is still a person
    ("contact", {"statecode": 1}, E, False, None, R.ELIGIBLE),
    ("contact", {FILTER: False}, E, True, None, R.SYNC_FILTER_OFF),
    ("lead", {}, None, True, None, R.NO_EMAIL),
    ("lead", {}, "  ", True, None, R.NO_EMAIL),
    ("contact", {}, None, True, None, R.NO_EMAIL),
    ("lead", {}, None, False, None, R.ELIGIBLE),  # linked: synced through its link, whatever its email
    ("lead", {"modifiedon": BEFORE}, E, True, DELETED, R.DELETED_IN_MARKETO),
    ("contact", {"modifiedon": BEFORE}, E, True, DELETED, R.DELETED_IN_MARKETO),
    ("lead", {"modifiedon": SAME_SECOND}, E, True, DELETED, R.ELIGIBLE),  # same second counts as after
    ("lead", {"modifiedon": AFTER}, E, True, DELETED, R.ELIGIBLE),
    ("lead", {}, E, True, DELETED, R.ELIGIBLE),  # no modifiedon: counts as edited
    ("lead", {"modifiedon": BEFORE}, E, False, DELETED, R.ELIGIBLE),  # a linked record has no tombstone
    ("lead", {"modifiedon": BEFORE}, None, True, DELETED, R.DELETED_IN_MARKETO),  # tombstone before email
    ("lead", {"modifiedon": BEFORE, "statecode": 1}, E, True, DELETED, R.LEAD_NOT_OPEN),
]


@pytest.mark.parametrize(("entity", "record", "email", "linking", "deleted_at", "expected"), TABLE)
def test_the_verdict_table(entity: str, record: dict[str, Any], email: str | None, linking: bool,
                           deleted_at: datetime | None, expected: Reason) -> None:
    verdict = check(record, entity=entity, sync_filter_field=FILTER, email=email, linking=linking,
                    deleted_in_marketo_at=deleted_at)
    assert verdict.reason is expected
    assert verdict.ok is (expected is Reason.ELIGIBLE)
    assert verdict.message == MESSAGES[expected]


def test_every_reason_has_a_message_and_a_row() -> None:
    assert set(MESSAGES) == set(Reason)
    assert {row[-1] for row in TABLE} == set(Reason)


records = st.fixed_dictionaries({}, optional={
    FILTER: st.one_of(st.none(), st.booleans(), st.integers(0, 1)),
    "statecode": st.integers(0, 2),
    "modifiedon": st.sampled_from([BEFORE, SAME_SECOND, AFTER]),
})


@given(record=records, entity=st.sampled_from(["lead", "contact"]),
       email=st.one_of(st.none(), st.just(E), st.just(" ")), linking=st.booleans(),
       deleted_at=st.one_of(st.none(), st.just(DELETED)))
def test_properties(record: dict[str, Any], entity: str, email: str | None, linking: bool,
                    deleted_at: datetime | None) -> None:
    verdict = check(record, entity=entity, sync_filter_field=FILTER, email=email, linking=linking,
                    deleted_in_marketo_at=deleted_at)
    linked = check(record, entity=entity, sync_filter_field=FILTER, email=email, linking=False,
                   deleted_in_marketo_at=deleted_at)
    # Linking only ever adds conditions: what is not ours linked is not ours to link either.
    assert linked.ok or not verdict.ok
    if record.get(FILTER) is False:
        assert verdict.reason is Reason.SYNC_FILTER_OFF
    if entity == "contact":
        assert verdict.reason is not Reason.LEAD_NOT_OPEN


def test_modified_after_counts_the_same_second_as_after() -> None:
    assert modified_after({"modifiedon": SAME_SECOND}, DELETED)
    assert not modified_after({"modifiedon": BEFORE}, DELETED)
    assert not modified_after({"modifiedon": "2026-05-01T11:59:59Z"}, DELETED + timedelta(microseconds=1))
