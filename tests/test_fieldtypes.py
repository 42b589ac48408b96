"""The richer field types: dates, datetimes, decimals, money, multi-select choices and lookups.

Conversions both ways (tables), a round trip per type through what Dataverse stores
(hypothesis, through the Dataverse emulator's own value rules), and the map's parse errors.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from devhost.emulators.dataverse import typed as emulated
from devhost.emulators.dataverse.metadata import build_entities
from shared.errors import ConfigError
from shared.rules.fieldmap import FieldSpec, parse
from shared.rules.fieldtypes import CurrencyMismatch, bind_key, id_column
from shared.rules.typevalidation import Limits
from shared.rules.validation import ColumnRule, EntityRules, validate
from shared.sync.lookups import unsendable_to_marketo

INTERESTS = {"Software": 1, "Hardware": 2, "Services": 3, "Training": 4}
DOC: dict[str, Any] = {"version": 1, "fields": [
    {"marketo": "email", "lead": "emailaddress1", "contact": "emailaddress1", "type": "email"},
    {"marketo": "expectedCloseDate", "lead": "estimatedclosedate", "type": "date"},
    {"marketo": "lastWebVisit", "lead": "new_lastvisit", "type": "datetime"},
    {"marketo": "engagementScore", "lead": "new_score", "type": "decimal"},
    {"marketo": "budget", "lead": "budgetamount", "type": "money", "currency": "usd"},
    {"marketo": "productInterests", "lead": "new_interests", "type": "multichoice", "choices": INTERESTS},
    {"marketo": "accountName", "lead": "parentaccountid", "type": "lookup",
     "lookup": {"target": "accounts", "key": "name"}},
    {"marketo": "company", "contact": "parentcustomerid", "type": "lookup",
     "lookup": {"target": "accounts", "key": "name", "navigation": "parentcustomerid_account"}},
]}
FMAP = parse(DOC)
DATE, DATETIME, DECIMAL, MONEY, MULTI, LOOKUP = (FMAP.spec(n) for n in (
    "expectedCloseDate", "lastWebVisit", "engagementScore", "budget", "productInterests", "accountName"))


# -- Marketo values in canonical form ---------------------------------------------------------
@pytest.mark.parametrize(("spec", "raw", "canonical"), [
    (DATE, "2024-05-01", "2024-05-01"),
    (DATE, " 2024-05-01 ", "2024-05-01"),
    (DATE, "2024-05-01T00:00:00Z", "2024-05-01"),  # a TimeZoneIndependent date's midnight
    (DATE, "", None),
    (DATE, "2024-02-30", "2024-02-30"),  # no such day: kept for validation to name
    (DATE, "01/05/2024", "01/05/2024"),
    (DATE, "2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"),  # a time is not a date: never cut silently
    (DATETIME, "2024-05-01T10:22:33Z", "2024-05-01T10:22:33Z"),
    (DATETIME, "2024-05-01T12:22:33+02:00", "2024-05-01T10:22:33Z"),
    (DATETIME, "2014-09-17T22:31:49+0000", "2014-09-17T22:31:49Z"),  # Marketo's activity format
    (DATETIME, "2024-05-01T05:22:33-05:00", "2024-05-01T10:22:33Z"),
    (DATETIME, "2024-05-01T10:22:33.987Z", "2024-05-01T10:22:33Z"),  # both sides keep seconds
    (DATETIME, "2024-05-01T10:22:33", "2024-05-01T10:22:33Z"),  # no offset: UTC
    (DATETIME, "2024-05-01 00:30:00+01:00", "2024-04-30T23:30:00Z"),
    (DATETIME, "yesterday", "yesterday"),
    (DATETIME, " ", None),
    (DECIMAL, 12.5, 12.5),
    (DECIMAL, "12.50", 12.5),
    (DECIMAL, 7, 7.0),
    (DECIMAL, "-0", 0.0),
    (DECIMAL, "1e3", 1000.0),
    (DECIMAL, "twelve", "twelve"),
    (DECIMAL, "nan", "nan"),
    (DECIMAL, True, True),  # a boolean is not a number: validation names it
    (DECIMAL, "", None),
    (MONEY, "1234.56", 1234.56),
    (MONEY, 0, 0.0),
    (MULTI, "Software;Services", "Software;Services"),
    (MULTI, "services; software", "Software;Services"),  # the map's order and spelling
    (MULTI, "Services;Software;Services", "Software;Services"),
    (MULTI, "Training;Carrier Pigeon", "Training;Carrier Pigeon"),  # unknown label kept, after known ones
    (MULTI, ";", None),
    (MULTI, "", None),
    (LOOKUP, " Acme Ltd ", "Acme Ltd"),
    (LOOKUP, "", None),
])
def test_canonical_values(spec: FieldSpec, raw: Any, canonical: Any) -> None:
    assert spec.canonical(raw) == canonical
    assert spec.canonical(canonical) == canonical  # canonical values are fixed points


# -- what Dataverse sends and takes ---------------------------------------------------------
@pytest.mark.parametrize(("spec", "dynamics", "canonical"), [
    (DATE, "2024-05-01", "2024-05-01"),  # DateOnly behaviour: an Edm.Date
    (DATE, "2024-05-01T00:00:00Z", "2024-05-01"),  # TimeZoneIndependent, Date Only format
    (DATETIME, "2024-05-01T10:22:33Z", "2024-05-01T10:22:33Z"),
    (DECIMAL, 12.35, 12.35),
    (MONEY, 1000, 1000.0),
    (MULTI, "3,1", "Software;Services"),
    (MULTI, "1,7", "Software;#7"),  # an option the map doesn't know stays visible
    (MULTI, [2, 4], "Hardware;Training"),
    (MULTI, "", None),
    (LOOKUP, "Acme Ltd", "Acme Ltd"),  # the related row's key, put there by the dereferencing read
])
def test_from_dynamics(spec: FieldSpec, dynamics: Any, canonical: Any) -> None:
    assert spec.from_dynamics(dynamics) == canonical


@pytest.mark.parametrize(("spec", "canonical", "dynamics"), [
    (DATE, "2024-05-01", "2024-05-01"),
    (DATETIME, "2024-05-01T10:22:33Z", "2024-05-01T10:22:33Z"),
    (DECIMAL, 12.5, 12.5),
    (MONEY, 1234.56, 1234.56),
    (MULTI, "Software;Services", "1,3"),
    (MULTI, "Software;#7", "1,7"),
    (MULTI, "Software;Carrier Pigeon", "1,Carrier Pigeon"),  # validation names the unknown label
    (LOOKUP, "Acme Ltd", "Acme Ltd"),  # the binder turns it into @odata.bind
])
def test_to_dynamics(spec: FieldSpec, canonical: Any, dynamics: Any) -> None:
    assert spec.to_dynamics(canonical) == dynamics


def test_lookups_are_read_as_their_value_property_and_money_with_its_currency() -> None:
    assert FMAP.columns("lead") == ["emailaddress1", "estimatedclosedate", "new_lastvisit", "new_score",
                                     "budgetamount", "new_interests", "_parentaccountid_value",
                                     "_transactioncurrencyid_value"]
    assert FMAP.columns("contact") == ["emailaddress1", "_parentcustomerid_value"]
    assert FMAP.spec("company").lookup is not None and FMAP.spec("company").lookup.navigation == \
        "parentcustomerid_account"
    assert MONEY.currency == "USD"


def test_an_amount_in_another_currency_is_reported_not_converted() -> None:
    record = {"emailaddress1": "a@b.co", "budgetamount": 900.0, "transactioncurrencyid": "EUR"}
    values = FMAP.from_dynamics("lead", record)
    assert values["budget"] == CurrencyMismatch(900.0, "EUR")
    [problem] = unsendable_to_marketo({"budget": values["budget"]})
    assert problem.rule == "currency" and "EUR" in problem.message and "not converted" in problem.message
    assert FMAP.from_dynamics("lead", {**record, "transactioncurrencyid": "usd"})["budget"] == 900.0
    assert unsendable_to_marketo({"budget": 900.0}) == []


def test_comparisons_ignore_case_for_keys_and_labels() -> None:
    assert LOOKUP.comparable("ACME ltd") == LOOKUP.comparable("Acme Ltd")
    assert MULTI.comparable("SOFTWARE") == MULTI.comparable("Software")
    assert DATETIME.comparable("2024-05-01T10:22:33Z") == "2024-05-01T10:22:33Z"


def test_a_lookup_binds_through_its_column_or_a_customer_columns_target() -> None:
    lookup = LOOKUP.lookup
    assert lookup is not None
    assert bind_key(lookup, "parentaccountid") == "parentaccountid@odata.bind"
    assert bind_key(lookup, "parentcustomerid", customer=True) == "parentcustomerid_account@odata.bind"
    company = FMAP.spec("company").lookup
    assert company is not None and bind_key(company, "parentcustomerid") == "parentcustomerid_account@odata.bind"


@pytest.mark.parametrize(("entity_set", "key"), [
    ("accounts", "accountid"), ("campaigns", "campaignid"), ("systemusers", "systemuserid"),
    ("transactioncurrencies", "transactioncurrencyid")])
def test_primary_keys_of_lookup_targets(entity_set: str, key: str) -> None:
    assert id_column(entity_set) == key


# -- round trips: Marketo -> Dynamics (as the emulator stores it) -> Marketo ------------------
LEAD = build_entities()["lead"]
RULES = EntityRules("lead", {
    "estimatedclosedate": ColumnRule("estimatedclosedate", "DateTime", limits=Limits(date_only=True)),
    "new_lastvisit": ColumnRule("new_lastvisit", "DateTime"),
    "new_score": ColumnRule("new_score", "Decimal", limits=Limits(2, -1e11, 1e11)),
    "budgetamount": ColumnRule("budgetamount", "Money", limits=Limits(2, 0, 922337203685477)),
    "new_interests": ColumnRule("new_interests", "MultiSelectPicklist", options=frozenset(INTERESTS.values())),
})


def through_dynamics(spec: FieldSpec, marketo_raw: Any) -> Any:
    """Marketo's value, sent to Dynamics, stored by the emulator's rules, read back and sent to Marketo."""
    value = spec.canonical(marketo_raw)
    column = str(spec.column("lead"))
    body = json.loads(json.dumps({column: spec.to_dynamics(value)}))
    assume(not validate(RULES, body, creating=False))  # what validation refuses never reaches Dynamics
    stored = emulated.check_value(LEAD, LEAD.attrs[column], body[column])
    back = spec.from_dynamics(json.loads(json.dumps(stored)))
    assert back == value
    return spec.canonical(json.loads(json.dumps(FMAP.to_marketo({spec.marketo: back})))[spec.marketo])


instants = st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(9998, 12, 31),
                        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5)),
                                                   timezone(timedelta(hours=5, minutes=30))]))


@given(st.dates(min_value=datetime(1753, 1, 1).date()))
def test_date_round_trip(day: Any) -> None:
    assert through_dynamics(DATE, day.isoformat()) == DATE.canonical(day.isoformat())


@given(instants)
def test_datetime_round_trip_whatever_the_offset(when: datetime) -> None:
    marketo = when.isoformat()
    assert through_dynamics(DATETIME, marketo) == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@given(st.decimals(min_value=-10**11, max_value=10**11, places=2, allow_nan=False, allow_infinity=False))
def test_decimal_round_trip(number: Any) -> None:
    assert through_dynamics(DECIMAL, float(number)) == float(number)


@given(st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False, allow_infinity=False))
def test_money_round_trip(amount: Any) -> None:
    assert through_dynamics(MONEY, str(amount)) == float(amount)


@given(st.lists(st.sampled_from(sorted(INTERESTS)), min_size=1), st.booleans())
def test_multichoice_round_trip(labels: list[str], shout: bool) -> None:
    marketo = ";".join(label.upper() if shout else label for label in labels)
    assert through_dynamics(MULTI, marketo) == ";".join(sorted(set(labels), key=INTERESTS.__getitem__))


@given(st.text(min_size=1, max_size=60).filter(lambda t: t.strip() != ""))
def test_lookup_key_round_trip(name: str) -> None:
    # Dynamics holds the id; dereferencing reads the key back: the key itself is what travels.
    value = LOOKUP.canonical(name)
    assert LOOKUP.from_dynamics(LOOKUP.to_dynamics(value)) == value == name.strip()


# -- the map refuses what it cannot convert ---------------------------------------------------
def with_entry(entry: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    doc["fields"][1] = entry
    return doc


@pytest.mark.parametrize(("entry", "says"), [
    ({"marketo": "budget", "lead": "budgetamount", "type": "money"}, "fields[1].currency: a money field names"),
    ({"marketo": "budget", "lead": "budgetamount", "type": "money", "currency": "dollars"}, "fields[1].currency"),
    ({"marketo": "x", "lead": "new_score", "type": "decimal", "currency": "USD"}, "other types take none"),
    ({"marketo": "x", "lead": "new_interests", "type": "multichoice"}, "fields[1].choices must map"),
    ({"marketo": "x", "lead": "new_interests", "type": "multichoice", "choices": {"A;B": 1}},
     "cannot contain ';'"),
    ({"marketo": "x", "lead": "new_interests", "type": "multichoice", "choices": {"A": True}}, "choices must map"),
    ({"marketo": "x", "lead": "parentaccountid", "type": "lookup"}, "fields[1].lookup must be"),
    ({"marketo": "x", "lead": "parentaccountid", "type": "lookup", "lookup": {"target": "accounts"}},
     "fields[1].lookup must be"),
    ({"marketo": "x", "lead": "parentaccountid", "type": "lookup",
      "lookup": {"target": "accounts", "key": "name", "colour": "red"}}, "fields[1].lookup must be"),
    ({"marketo": "x", "lead": "jobtitle", "lookup": {"target": "accounts", "key": "name"}},
     "lookup is only for type 'lookup'"),
    ({"marketo": "x", "lead": "parentaccountid", "contact": "parentcustomerid", "type": "lookup",
      "lookup": {"target": "accounts", "key": "name", "navigation": "parentcustomerid_account"}},
     "navigation needs one column name"),
])
def test_parse_names_the_problem_of_a_typed_entry(entry: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(with_entry(entry))
    assert says in str(caught.value)
