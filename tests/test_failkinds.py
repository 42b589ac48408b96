"""The failure vocabulary (pure): classification, the kind -> fix table, and filter parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.ops.failkinds import FIXES, FailureKind, Filter, Side, classify, fix, parse_kinds, parse_since

K, S = FailureKind, Side
M2D, D2M = "marketo->dynamics", "dynamics->marketo"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def problems(*items: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    return {"problems": [{"field": i[0], "rule": i[1], "message": "m", **({"code": i[2]} if len(i) > 2 else {})}
                         for i in items]}


@pytest.mark.parametrize(("person", "activity_kind", "direction", "details", "kind", "side", "fields"), [
    # unlinked Dynamics records (linking)
    ("lead:0a", "validation_failed", D2M, problems(("emailaddress1", "required")), K.BLANK_EMAIL, S.DYNAMICS,
     ("emailaddress1",)),
    ("contact:0a", "validation_failed", D2M, problems(("emailaddress1", "near_miss")), K.LOOKALIKE_EMAIL,
     S.DYNAMICS, ("emailaddress1",)),
    ("lead:0a", "rejected", D2M, problems(("", "rejected", "1003")), K.MARKETO_REFUSED, S.MARKETO, ()),
    # real-time create (Marketo person, no link)
    ("m7", "validation_failed", M2D, problems(("jobtitle", "max_length")), K.TOO_LONG, S.MARKETO, ("jobtitle",)),
    ("m7", "validation_failed", M2D, problems(("email", "required")), K.BLANK_EMAIL, S.MARKETO, ("email",)),
    ("m7", "validation_failed", M2D, problems(("title", "encoding")), K.UNENCODABLE, S.MARKETO, ("title",)),
    ("m7", "rejected", M2D, problems(("", "rejected", "0x80040220")), K.DATAVERSE_PRIVILEGE, S.DYNAMICS, ()),
    ("m7", "rejected", M2D, problems(("", "rejected", "0X80040220")), K.DATAVERSE_PRIVILEGE, S.DYNAMICS, ()),
    ("m7", "rejected", M2D, problems(("", "rejected", "0x80044331")), K.DATAVERSE_REFUSED, S.DYNAMICS, ()),
    ("m7", "rejected", M2D, problems(("", "rejected")), K.DATAVERSE_REFUSED, S.DYNAMICS, ()),
    ("m7", "paused", M2D, {"code": "607"}, K.QUOTA_PAUSED, S.MARKETO, ()),
    # linked people (writes)
    ("m7", "validation_failed", M2D, problems(("new_tier", "unknown")), K.UNKNOWN_FIELD, S.DYNAMICS, ("new_tier",)),
    ("m7", "validation_failed", M2D, problems(("leadsourcecode", "option")), K.BAD_OPTION, S.MARKETO,
     ("leadsourcecode",)),
    ("m7", "validation_failed", M2D, problems(("telephone1", "format"), ("fax", "format")), K.BAD_FORMAT, S.MARKETO,
     ("telephone1", "fax")),
    ("m7", "validation_failed", M2D, problems(("numberofemployees", "type")), K.BAD_TYPE, S.MARKETO,
     ("numberofemployees",)),
    ("m7", "validation_failed", M2D, problems(("lastname", "required")), K.REQUIRED_FIELD, S.MARKETO, ("lastname",)),
    ("m7", "validation_failed", D2M, problems(("title", "encoding")), K.UNENCODABLE, S.DYNAMICS, ("title",)),
    ("m7", "rejected", D2M, problems(("", "rejected", "1003")), K.MARKETO_REFUSED, S.MARKETO, ()),
    # issue #18: owners, Dataverse refusals by code, closed leads
    ("m7", "validation_failed", M2D, problems(("dynamicsOwnerEmail", "owner")), K.LEAD_OWNER, S.MARKETO,
     ("dynamicsOwnerEmail",)),
    ("m7", "rejected", M2D, problems(("", "rejected", "0x80040333")), K.DATAVERSE_DUPLICATE, S.DYNAMICS, ()),
    ("m7", "rejected", M2D, problems(("", "rejected", "0x80040265")), K.DATAVERSE_PLUGIN, S.DYNAMICS, ()),
    ("m7", "disqualified", "", {"status": 4}, K.LEAD_DISQUALIFIED, S.DYNAMICS, ()),
    ("m7", "cancelled", "", {"status": 7}, K.LEAD_CANCELLED, S.DYNAMICS, ()),
    ("m7", "link_conflict", "", {"contact": "c"}, K.LINK_CONFLICT, S.DYNAMICS, ()),
    # no problems recorded: the entry only says the person is parked
    ("m7", "parked", "", {}, K.PARKED, S.MARKETO, ()),
    ("lead:0a", "parked", "", {}, K.PARKED, S.DYNAMICS, ()),
])
def test_classify(person: str, activity_kind: str, direction: str, details: dict[str, Any], kind: FailureKind,
                  side: Side, fields: tuple[str, ...]) -> None:
    verdict = classify(person, activity_kind, direction, details)
    assert (verdict.kind, verdict.side, verdict.fields) == (kind, side, fields)
    assert verdict.fix == fix(kind, side)


@pytest.mark.parametrize(("kind", "side", "expected"), [
    (K.BLANK_EMAIL, S.MARKETO, "fill in the email in Marketo: a person without one is never linked"),
    (K.BLANK_EMAIL, S.DYNAMICS, "fill in the email in the Dynamics record: a person without one is never linked"),
    (K.DATAVERSE_PRIVILEGE, S.DYNAMICS,
     "grant the missing privilege (e.g. prvWriteLead) to the application user's security role in Dynamics"),
    (K.TOO_LONG, S.MARKETO, "shorten the value in Marketo, or lengthen the Dynamics column"),
    (K.UNKNOWN_FIELD, S.DYNAMICS, "create the column in Dynamics, or remove the field from the field map"),
    (K.QUOTA_PAUSED, S.MARKETO, "nothing: LeadSync finishes it after Marketo's daily reset (midnight US Central); "
     "raise LEADSYNC_DAILY_CAP_PCT if LeadSync's own cap stopped it"),
])
def test_fix_table(kind: FailureKind, side: Side, expected: str) -> None:
    assert fix(kind, side) == expected


def test_every_kind_has_a_fix_that_names_no_placeholder() -> None:
    assert set(FIXES) == set(FailureKind)
    for kind in FailureKind:
        for side in Side:
            text = fix(kind, side)
            assert text and "{" not in text and "}" not in text


@pytest.mark.parametrize(("text", "expected"), [
    ("2h", NOW - timedelta(hours=2)),
    ("30m", NOW - timedelta(minutes=30)),
    ("1d", NOW - timedelta(days=1)),
    (" 1W ", NOW - timedelta(weeks=1)),
    ("45s", NOW - timedelta(seconds=45)),
    ("2026-11-29", datetime(2026, 11, 29, tzinfo=UTC)),
    ("2026-11-29T08:30:00Z", datetime(2026, 11, 29, 8, 30, tzinfo=UTC)),
    ("2026-11-29T08:30:00+01:00", datetime(2026, 11, 29, 7, 30, tzinfo=UTC)),
    ("2026-11-29T08:30", datetime(2026, 11, 29, 8, 30, tzinfo=UTC)),
])
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "yesterday", "-1d", "2026-13-01"])
def test_parse_since_refuses_with_the_option_named(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, NOW)


def test_parse_kinds_accepts_dashes_and_case_and_names_the_known_kinds_otherwise() -> None:
    assert parse_kinds(["Blank-Email", "too_long"]) == {K.BLANK_EMAIL, K.TOO_LONG}
    with pytest.raises(ValueError, match="--kind 'nope' is not one of: blank_email, required_field"):
        parse_kinds(["nope"])


def test_filter_parse_and_match() -> None:
    flt = Filter.parse(since="1h", kinds=["too_long"], sides=["marketo"], fields=["JobTitle"], now=NOW)
    assert not flt.empty and flt.since == NOW - timedelta(hours=1) and flt.fields == {"jobtitle"}
    recent = NOW - timedelta(minutes=5)
    assert flt.matches(K.TOO_LONG, S.MARKETO, ("jobtitle", "x"), recent)
    assert not flt.matches(K.TOO_LONG, S.MARKETO, ("jobtitle",), NOW - timedelta(hours=2))  # too old
    assert not flt.matches(K.TOO_LONG, S.MARKETO, ("jobtitle",), None)  # no time: never "since"
    assert not flt.matches(K.BLANK_EMAIL, S.MARKETO, ("jobtitle",), recent)  # kind
    assert not flt.matches(K.TOO_LONG, S.DYNAMICS, ("jobtitle",), recent)  # side
    assert not flt.matches(K.TOO_LONG, S.MARKETO, ("title",), recent)  # field
    everything = Filter.parse(since=None, now=NOW)
    assert everything.empty and everything.matches(K.POISON_MESSAGE, S.QUEUE, (), None)
    with pytest.raises(ValueError, match="--side 'crm' is not one of: marketo, dynamics, queue"):
        Filter.parse(since=None, sides=["crm"], now=NOW)
