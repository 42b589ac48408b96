"""What Dynamics refuses of the richer types (validation), and whether a mapped pair of fields
can carry them (the start-up check and `leadsync check`)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.clients.dataverse_models import AttributeMetadata, EntityMetadata
from shared.clients.marketo_models import FieldInfo
from shared.errors import ConfigError
from shared.ops import preflight
from shared.ops.preflight import Severity
from shared.rules.fieldmap import check_against, parse
from shared.rules.typevalidation import Limits
from shared.rules.validation import ColumnRule, EntityRules, labelled, validate

RULES = labelled(EntityRules("lead", {
    "estimatedclosedate": ColumnRule("estimatedclosedate", "DateTime", limits=Limits(date_only=True)),
    "new_lastvisit": ColumnRule("new_lastvisit", "DateTime"),
    "new_score": ColumnRule("new_score", "Decimal", limits=Limits(2, -1000, 1000)),
    "new_ratio": ColumnRule("new_ratio", "Double", limits=Limits(5, 0, 1)),
    "budgetamount": ColumnRule("budgetamount", "Money", limits=Limits(2, 0, 922337203685477)),
    "new_interests": ColumnRule("new_interests", "MultiSelectPicklist", options=frozenset({1, 2, 3})),
    "parentaccountid": ColumnRule("parentaccountid", "Lookup", limits=Limits(targets=("account",))),
    "parentcustomerid": ColumnRule("parentcustomerid", "Customer", limits=Limits(targets=("account", "contact"))),
}), {"estimatedclosedate": "expectedCloseDate", "new_score": "engagementScore"})
ACCOUNT = "/accounts(0f8fad5b-d9cb-469f-a165-70867728950e)"


@pytest.mark.parametrize("record", [
    {"estimatedclosedate": "2024-05-01"},
    {"estimatedclosedate": "1753-01-01"},
    {"new_lastvisit": "2024-05-01T10:22:33Z"},
    {"new_lastvisit": "2024-05-01T12:22:33+02:00"},
    {"new_score": 999.99}, {"new_score": -1000}, {"new_score": 12},
    {"new_ratio": 0.12345},
    {"budgetamount": 0}, {"budgetamount": 1234.5},
    {"new_interests": "1,3"}, {"new_interests": "2"},
    {"parentaccountid@odata.bind": ACCOUNT},
    {"parentaccountid@odata.bind": None},  # clearing a lookup
    {"parentcustomerid_account@odata.bind": ACCOUNT},
    {"new_score": None, "estimatedclosedate": None},
])
def test_values_dynamics_accepts(record: dict[str, Any]) -> None:
    assert validate(RULES, record, creating=False) == []


@pytest.mark.parametrize(("record", "rule", "says"), [
    ({"estimatedclosedate": "2024-02-30"}, "format", "expectedCloseDate (lead.estimatedclosedate) must be a date"),
    ({"estimatedclosedate": "2024-05-01T10:00:00Z"}, "format", "must be a date (YYYY-MM-DD)"),
    ({"estimatedclosedate": "1752-12-31"}, "range", "Dynamics stores dates from 1753-01-01 on"),
    ({"new_lastvisit": "yesterday"}, "format", "lead.new_lastvisit must be a date and time"),
    ({"new_lastvisit": "1700-01-01T00:00:00Z"}, "range", "from 1753-01-01 on"),
    ({"new_score": 1000.01}, "range", "Dynamics allows -1000 to 1000"),
    ({"new_score": 1.234}, "precision", "has 3 decimal places, Dynamics keeps 2: it would be rounded"),
    ({"new_score": "12"}, "type", "must be a number"),
    ({"new_score": True}, "type", "must be a number"),
    ({"new_ratio": 1.5}, "range", "allows 0 to 1"),
    ({"new_ratio": 0.000001}, "precision", "6 decimal places, Dynamics keeps 5"),
    ({"budgetamount": -0.01}, "range", "Dynamics allows 0 to"),
    ({"budgetamount": 10.005}, "precision", "3 decimal places"),
    ({"new_interests": "1,7"}, "option", "has no option '7' (allowed: [1, 2, 3])"),
    ({"new_interests": "1,Carrier Pigeon"}, "option", "has no option 'Carrier Pigeon'"),
    ({"new_interests": 1}, "type", "option values separated by commas"),
    ({"parentaccountid@odata.bind": "/campaigns(0f8fad5b-d9cb-469f-a165-70867728950e)"}, "lookup",
     "must point at a record of ['account']"),
    ({"parentaccountid@odata.bind": "Acme"}, "lookup", "must point at a record"),
    ({"jobtitle@odata.bind": ACCOUNT}, "unknown", "lead.jobtitle is not a lookup Dynamics knows"),
])
def test_values_dynamics_refuses_name_field_and_rule(record: dict[str, Any], rule: str, says: str) -> None:
    [problem] = validate(RULES, record, creating=False)
    assert problem.rule == rule
    assert says in problem.message


# -- does each mapped pair fit? -----------------------------------------------------------------
def attr(name: str, kind: str, **facts: Any) -> AttributeMetadata:
    return AttributeMetadata(name, kind, "None", **facts)


MAP = parse({"version": 1, "fields": [
    {"marketo": "email", "lead": "emailaddress1", "type": "email"},
    {"marketo": "closeDate", "lead": "estimatedclosedate", "type": "date"},
    {"marketo": "visit", "lead": "new_lastvisit", "type": "datetime"},
    {"marketo": "score", "lead": "new_score", "type": "decimal"},
    {"marketo": "budget", "lead": "budgetamount", "type": "money", "currency": "USD"},
    {"marketo": "interests", "lead": "new_interests", "type": "multichoice", "choices": {"A": 1, "B": 2}},
    {"marketo": "account", "lead": "parentaccountid", "type": "lookup",
     "lookup": {"target": "accounts", "key": "name"}},
]})
MARKETO = {"email": FieldInfo(1, "email", "Email", "email", 80, False),
           "closeDate": FieldInfo(2, "closeDate", "Close", "date", None, False),
           "visit": FieldInfo(3, "visit", "Visit", "datetime", None, False),
           "score": FieldInfo(4, "score", "Score", "float", None, False),
           "budget": FieldInfo(5, "budget", "Budget", "currency", None, False),
           "interests": FieldInfo(6, "interests", "Interests", "string", 255, False),
           "account": FieldInfo(7, "account", "Account", "string", 255, False)}
FITTING = {"emailaddress1": attr("emailaddress1", "String", max_length=100),
           "estimatedclosedate": attr("estimatedclosedate", "DateTime", date_behavior="DateOnly",
                                      date_format="DateOnly"),
           "new_lastvisit": attr("new_lastvisit", "DateTime", date_behavior="UserLocal", date_format="DateAndTime"),
           "new_score": attr("new_score", "Decimal", precision=2),
           "budgetamount": attr("budgetamount", "Money", precision=2),
           "new_interests": attr("new_interests", "MultiSelectPicklist", options=(1, 2, 3)),
           "parentaccountid": attr("parentaccountid", "Lookup", targets=("account",))}


def findings(marketo: dict[str, FieldInfo], columns: dict[str, AttributeMetadata]) -> set[tuple[Severity, str]]:
    found = preflight.field_findings(MAP, marketo, {"lead": EntityMetadata("lead", columns)})
    return {(f.severity, f.problem) for f in found}


def test_a_map_whose_pairs_fit_passes_both_checks() -> None:
    assert findings(MARKETO, FITTING) == set()
    check_against(MAP, MARKETO, {"lead": FITTING, "contact": {}})


@pytest.mark.parametrize(("marketo", "column", "problem"), [
    ({}, attr("estimatedclosedate", "DateTime", date_behavior="UserLocal", date_format="DateOnly"),
     "Dataverse lead.estimatedclosedate is a UserLocal date and time, the map says date: the day would shift with "
     "each user's time zone"),
    ({}, attr("estimatedclosedate", "String", max_length=10),
     "Dataverse lead.estimatedclosedate is String, the map says date"),
    ({}, attr("new_lastvisit", "DateTime", date_behavior="DateOnly", date_format="DateOnly"),
     "Dataverse lead.new_lastvisit holds a date only, the map says datetime: the time would be lost"),
    ({}, attr("new_score", "Integer"), "Dataverse lead.new_score is Integer, the map says decimal"),
    ({}, attr("budgetamount", "Decimal", precision=2), "Dataverse lead.budgetamount is Decimal, the map says money"),
    ({}, attr("new_interests", "MultiSelectPicklist", options=(1, 3)), "Dataverse lead.new_interests has no option "
                                                                         "for ['B']"),
    ({}, attr("new_interests", "Picklist", options=(1, 2)),
     "Dataverse lead.new_interests is Picklist, the map says multichoice"),
    ({}, attr("parentaccountid", "Lookup", targets=("contact",)),
     "Dataverse lead.parentaccountid points at ['contact'], the map looks up accounts"),
    ({"score": FieldInfo(4, "score", "Score", "integer", None, False)}, None,
     "Marketo score is integer, the map says decimal"),
    ({"budget": FieldInfo(5, "budget", "Budget", "float", None, False)}, None,
     "Marketo budget is float, the map says money"),
    ({"closeDate": FieldInfo(2, "closeDate", "Close", "datetime", None, False)}, None,
     "Marketo closeDate is datetime, the map says date"),
])
def test_a_pair_that_does_not_fit_is_a_problem_naming_it(marketo: dict[str, FieldInfo],
                                                          column: AttributeMetadata | None, problem: str) -> None:
    columns = {**FITTING, **({column.logical_name: column} if column else {})}
    assert findings({**MARKETO, **marketo}, columns) == {(Severity.PROBLEM, problem)}
    with pytest.raises(ConfigError) as caught:
        check_against(MAP, {**MARKETO, **marketo}, {"lead": columns, "contact": {}})
    assert problem in str(caught.value)


@pytest.mark.parametrize(("marketo", "column", "warning"), [
    ({}, attr("new_lastvisit", "DateTime", date_behavior="TimeZoneIndependent", date_format="DateAndTime"),
     "Dataverse lead.new_lastvisit is Time Zone Independent: Marketo's instants are shown there in UTC"),
    ({"interests": FieldInfo(6, "interests", "Interests", "string", 2, False)}, None,
     "Marketo interests holds 2 characters, all its options take 3"),
])
def test_a_risk_is_a_warning_that_does_not_stop_the_sync(marketo: dict[str, FieldInfo],
                                                         column: AttributeMetadata | None, warning: str) -> None:
    columns = {**FITTING, **({column.logical_name: column} if column else {})}
    assert findings({**MARKETO, **marketo}, columns) == {(Severity.WARNING, warning)}
    check_against(MAP, {**MARKETO, **marketo}, {"lead": columns, "contact": {}})


def test_check_against_still_takes_bare_names() -> None:
    check_against(MAP, set(MARKETO), {"lead": set(FITTING), "contact": set()})
