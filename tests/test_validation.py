"""Dynamics' rules checked before a write: what is refused, and that the reason is readable."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import Problem
from shared.rules.validation import ENCODING, ColumnRule, EntityRules, labelled, unencodable, validate

LEAD = EntityRules("lead", {r.name: r for r in [
    ColumnRule("emailaddress1", "String", max_length=100, format="Email"),
    ColumnRule("firstname", "String", max_length=50),
    ColumnRule("lastname", "String", "ApplicationRequired", max_length=50),
    ColumnRule("subject", "String", "ApplicationRequired", max_length=300),
    ColumnRule("companyname", "String", "SystemRequired", max_length=100),
    ColumnRule("telephone1", "String", max_length=50, format="Phone"),
    ColumnRule("websiteurl", "String", max_length=200, format="Url"),
    ColumnRule("description", "Memo", max_length=2000, format="TextArea"),
    ColumnRule("leadsourcecode", "Picklist", options=frozenset(range(1, 11))),
    ColumnRule("statuscode", "Status", "SystemRequired", options=frozenset({1, 2})),
    ColumnRule("donotemail", "Boolean"),
    ColumnRule("numberofemployees", "Integer"),
    ColumnRule("ownerid", "Owner", "SystemRequired"),
    ColumnRule("statecode", "State", "SystemRequired", options=frozenset({0, 1, 2})),
    ColumnRule("leadid", "Uniqueidentifier", "SystemRequired"),
]})
LABELS = {"emailaddress1": "email", "firstname": "firstName", "lastname": "lastName", "companyname": "company",
          "telephone1": "phone", "leadsourcecode": "leadSource"}
VALID = {"lastname": "Lee", "subject": "Marketo person", "companyname": "Acme", "emailaddress1": "ann@example.com"}
RULE_NAMES = {"required", "max_length", "format", "option", "type", "unknown"}


def problems(record: dict[str, Any], *, creating: bool = False, rules: EntityRules = LEAD,
             business_required: bool = True) -> list[Problem]:
    return validate(rules, record, creating=creating, business_required=business_required)


def one(record: dict[str, Any], **kwargs: Any) -> Problem:
    found = problems(record, **kwargs)
    assert len(found) == 1, found
    return found[0]


# -- required --------------------------------------------------------------------------
def test_a_complete_new_lead_passes() -> None:
    assert problems(VALID, creating=True) == []


def test_creating_without_required_columns_names_each_of_them() -> None:
    found = problems({"firstname": "Ann"}, creating=True)
    assert {(p.field, p.rule) for p in found} == {
        ("lastname", "required"), ("subject", "required"), ("companyname", "required")}
    assert all("is required by Dynamics but is blank" in p.message for p in found)


def test_server_defaulted_columns_are_never_required_from_us() -> None:
    fields = {p.field for p in problems({}, creating=True)}
    assert not fields & {"ownerid", "statecode", "statuscode", "leadid"}


def test_business_required_can_be_left_to_the_forms() -> None:
    found = problems({"firstname": "Ann"}, creating=True, business_required=False)
    assert [(p.field, p.rule) for p in found] == [("companyname", "required")]


def test_an_update_need_not_repeat_required_columns() -> None:
    assert problems({"firstname": "Ann"}) == []


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_an_update_may_not_blank_a_required_column(blank: Any) -> None:
    p = one({"lastname": blank})
    assert (p.field, p.rule) == ("lastname", "required")


# -- text ------------------------------------------------------------------------------
def test_text_at_max_length_passes_one_more_fails() -> None:
    assert problems({"firstname": "a" * 50}) == []
    p = one({"firstname": "a" * 51})
    assert (p.field, p.rule) == ("firstname", "max_length")
    assert p.message == "lead.firstname is too long: 51 characters, Dynamics allows 50"


def test_length_counts_like_dynamics_does() -> None:
    assert [p.rule for p in problems({"firstname": "\U0001F600" * 26})] == ["max_length"]


@pytest.mark.parametrize("value", ["Ann\x00", "Ann\x07Lee", "\x1bLee", "Lee\x7f", "A\x0bB"])
def test_control_characters_are_refused(value: str) -> None:
    p = one({"firstname": value})
    assert (p.rule, p.message) == ("format", "lead.firstname contains control characters")


def test_line_breaks_and_tabs_are_ordinary_text() -> None:
    assert problems({"description": "line one\r\nline two\tend"}) == []


def test_text_column_refuses_a_number() -> None:
    p = one({"firstname": 42})
    assert (p.rule, p.message) == ("type", "lead.firstname must be text, got int")


@pytest.mark.parametrize("email", ["ann@example.com", "ann.lee+mkto@mail.example.co.uk", "o'brien@example.ie",
                                   "ann@sub-domain.example.com", "ANN@EXAMPLE.COM"])
def test_valid_emails_pass(email: str) -> None:
    assert problems({"emailaddress1": email}) == []


@pytest.mark.parametrize("email", ["ann", "ann@", "@example.com", "ann@example", "ann lee@example.com",
                                   "ann@exa mple.com", "ann@-example.com", "ann@example-.com", "ann@example..com",
                                   "ann@@example.com", "<ann@example.com>", "ann@example.com,bob@example.com"])
def test_invalid_emails_are_refused(email: str) -> None:
    p = one({"emailaddress1": email})
    assert (p.field, p.rule) == ("emailaddress1", "format")
    assert p.message == "lead.emailaddress1 is not a valid email address"
    assert email not in p.message  # messages reach the health page: no personal data in them


@pytest.mark.parametrize(("column", "value"), [("emailaddress1", "ann@example.com\n"),
                                               ("telephone1", "+1 555 0100\n"),
                                               ("websiteurl", "https://example.com\n")])
def test_a_trailing_newline_is_not_a_valid_format(column: str, value: str) -> None:
    assert one({column: value}).rule == "format"


@pytest.mark.parametrize("phone", ["+1 (555) 010-2000", "555.010.2000 ext. 12", "+44 20 7946 0958 x3", "*67#"])
def test_valid_phones_pass(phone: str) -> None:
    assert problems({"telephone1": phone}) == []


@pytest.mark.parametrize("phone", ["call me", "555-CALL-NOW", "+1 555 0100; DROP"])
def test_invalid_phones_are_refused(phone: str) -> None:
    assert one({"telephone1": phone}).rule == "format"


@pytest.mark.parametrize(("url", "ok"), [("https://example.com", True), ("http://example.com/a?b=c", True),
                                         ("HTTPS://EXAMPLE.COM", True), ("example.com", False),
                                         ("ftp://example.com", False), ("https://exa mple.com", False),
                                         ("https://", False), ("javascript:alert(1)", False)])
def test_urls(url: str, ok: bool) -> None:
    found = problems({"websiteurl": url})
    assert (found == []) if ok else [p.rule for p in found] == ["format"]


# -- options and types -----------------------------------------------------------------
def test_known_option_passes() -> None:
    assert problems({"leadsourcecode": 8}) == []


@pytest.mark.parametrize("value", [42, "8", "Web", True, 8.0])
def test_option_must_be_one_dynamics_knows(value: Any) -> None:
    p = one({"leadsourcecode": value})
    assert p.rule == "option"
    assert p.message == f"lead.leadsourcecode has no option {value!r} (allowed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])"


def test_state_and_status_are_options_too() -> None:
    assert one({"statuscode": 7}).rule == "option"
    assert problems({"statecode": 1}) == []


@pytest.mark.parametrize(("value", "ok"), [(True, True), (False, True), ("yes", False), (1, False)])
def test_booleans(value: Any, ok: bool) -> None:
    found = problems({"donotemail": value})
    assert (found == []) if ok else [p.rule for p in found] == ["type"]


@pytest.mark.parametrize(("value", "ok"), [(5, True), (0, True), (True, False), ("5", False), (5.5, False)])
def test_integers(value: Any, ok: bool) -> None:
    found = problems({"numberofemployees": value})
    assert (found == []) if ok else [p.rule for p in found] == ["type"]


def test_blank_values_skip_type_checks() -> None:
    assert problems({"donotemail": None, "numberofemployees": "", "leadsourcecode": None}) == []


def test_unknown_column_is_named() -> None:
    p = one({"new_favouritecolour": "blue"})
    assert (p.field, p.rule) == ("new_favouritecolour", "unknown")
    assert p.message == "lead.new_favouritecolour is not a column Dynamics knows"


# -- messages in both languages --------------------------------------------------------
def test_labelled_messages_name_the_marketo_field_too() -> None:
    rules = labelled(LEAD, LABELS)
    assert one({"firstname": "a" * 60}, rules=rules).message.startswith("firstName (lead.firstname) is too long")
    assert one({"emailaddress1": "nope"}, rules=rules).message.startswith(
        "email (lead.emailaddress1) is not a valid email address")
    required = {p.message for p in problems({}, creating=True, rules=rules)}
    assert "company (lead.companyname) is required by Dynamics but is blank" in required
    assert "lead.subject is required by Dynamics but is blank" in required  # no label: Dataverse name only


def test_labelling_keeps_the_rules() -> None:
    rules = labelled(LEAD, LABELS)
    assert {n: (r.max_length, r.required, r.format, r.options) for n, r in rules.columns.items()} == {
        n: (r.max_length, r.required, r.format, r.options) for n, r in LEAD.columns.items()}


# -- hostile input ---------------------------------------------------------------------
INJECTION = "x' or 1 eq 1 or emailaddress1 eq 'y"


def test_odata_injection_is_just_text_in_a_name_and_no_email() -> None:
    assert problems({"firstname": INJECTION}) == []
    assert one({"emailaddress1": INJECTION}).rule == "format"


def test_a_huge_value_gets_a_short_message() -> None:
    p = one({"emailaddress1": "a" * 100_000 + "@example.com"})
    assert p.rule == "max_length" and len(p.message) < 200
    p = one({"telephone1": "9" * 40 + "z" * 10})
    assert p.rule == "format" and len(p.message) < 200


@pytest.mark.parametrize("column", ["leadsourcecode", "donotemail", "numberofemployees"])
def test_a_huge_value_in_a_non_text_column_gets_a_short_message(column: str) -> None:
    p = one({column: "a" * 100_000})
    assert p.rule in ("option", "type") and len(p.message) < 300


def test_huge_value_in_a_column_without_limit_passes() -> None:
    rules = EntityRules("lead", {"description": ColumnRule("description", "Memo")})
    assert validate(rules, {"description": "x" * 100_000}, creating=False) == []


@pytest.mark.parametrize("email", ["josé@exämple.com", "ann@bücher.de", "用户@例子.广告"])
def test_non_ascii_emails_get_a_clear_answer(email: str) -> None:
    found = problems({"emailaddress1": email})
    assert found == [] or [p.rule for p in found] == ["format"]
    assert all(p.message == "lead.emailaddress1 is not a valid email address" for p in found)


def test_non_ascii_local_part_with_ascii_domain_passes() -> None:
    assert problems({"emailaddress1": "josé@example.com"}) == []


no_control = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80)


def utf16_length(text: str) -> int:
    """How Dataverse counts MaxLength: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@given(value=no_control.filter(lambda s: s.strip()).filter(lambda s: utf16_length(s) <= 50))
def test_text_within_length_and_without_control_characters_passes(value: str) -> None:
    assert problems({"firstname": value}) == []


@given(value=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=51, max_size=600))
def test_text_over_the_limit_always_fails_on_length(value: str) -> None:
    p = one({"firstname": value})
    assert (p.field, p.rule) == ("firstname", "max_length")
    assert f"{utf16_length(value)} characters" in p.message


hostile = st.one_of(
    st.text(max_size=300), st.text(st.characters(max_codepoint=0x1F), max_size=20), st.integers(), st.floats(),
    st.booleans(), st.none(), st.binary(max_size=10), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([INJECTION, "a" * 100_000, "josé@exämple.com", "\x00", "\ufeff", "\u202e", "'", "''"]),
)


@settings(max_examples=500)
@given(column=st.sampled_from(sorted(LEAD.columns) + ["new_unknown"]), value=hostile, creating=st.booleans())
def test_hostile_values_give_a_problem_or_pass_never_an_exception(column: str, value: Any, creating: bool) -> None:
    found = validate(labelled(LEAD, LABELS), {column: value}, creating=creating)
    for p in found:
        assert isinstance(p, Problem)
        assert p.rule in RULE_NAMES
        assert p.message and "\n" not in p.message


@pytest.mark.parametrize("column", ["firstname", "emailaddress1", "description"])
def test_a_lone_surrogate_is_a_problem_of_its_record_never_an_exception(column: str) -> None:
    found = problems({**VALID, column: "Ann\ud800"})
    assert [(p.field, p.rule) for p in found] == [(column, ENCODING)]
    assert "\ud800" not in found[0].message and "surrogate" in found[0].message
    found[0].message.encode("utf-8")  # safe to log and to store


def test_unencodable_names_every_value_no_encoder_can_write() -> None:
    values = {"firstName": "Ann\udfff", "lastName": "Lee", "email": "\ud83d@x.com", "numberOfEmployees": 5,
              "city": "Zürich 😀"}  # a real astral character is fine
    assert [(p.field, p.rule) for p in unencodable(values)] == [("firstName", ENCODING), ("email", ENCODING)]
