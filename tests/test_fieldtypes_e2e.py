"""End to end: a field of each richer type syncs both ways, lookups resolve and are written
with `@odata.bind`, and what cannot be written fails its person with the reason.

One devhost stack (Azurite, both emulators) with a field map holding every type; pollers
run on demand.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from devhost.emulators.dataverse.typed import BASE_CURRENCY, EURO
from devhost.harness import Harness, by_hand, eventually, running
from shared.state import activity

pytestmark = pytest.mark.e2e

FIELD_MAP = {"version": 1, "fields": [
    {"marketo": "email", "lead": "emailaddress1", "contact": "emailaddress1", "type": "email"},
    {"marketo": "firstName", "lead": "firstname", "contact": "firstname"},
    {"marketo": "lastName", "lead": "lastname", "contact": "lastname"},
    {"marketo": "expectedCloseDate", "lead": "estimatedclosedate", "type": "date"},
    {"marketo": "lastWebVisit", "lead": "new_lastvisit", "type": "datetime"},
    {"marketo": "engagementScore", "lead": "new_score", "type": "decimal"},
    {"marketo": "budget", "lead": "budgetamount", "type": "money", "currency": "USD"},
    {"marketo": "productInterests", "lead": "new_interests", "type": "multichoice",
     "choices": {"Software": 1, "Hardware": 2, "Services": 3, "Training": 4}},
    {"marketo": "accountName", "lead": "parentaccountid", "contact": "parentcustomerid", "type": "lookup",
     "lookup": {"target": "accounts", "key": "name"}},
    {"marketo": "campaignName", "lead": "campaignid", "type": "lookup",
     "lookup": {"target": "campaigns", "key": "name"}},
], "create_defaults": {"lead": {"subject": "Marketo person"}}}
TYPED = ("estimatedclosedate", "new_lastvisit", "new_score", "budgetamount", "new_interests",
         "_parentaccountid_value", "_campaignid_value", "_transactioncurrencyid_value")


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand(LEADSYNC_FIELD_MAP=json.dumps(FIELD_MAP))) as harness:
        yield harness


def tag() -> str:
    return uuid.uuid4().hex[:8]


def account(h: Harness, name: str) -> str:
    return str(h.dataverse.create("accounts", {"name": name})["accountid"])


def campaign(h: Harness, name: str) -> str:
    return str(h.dataverse.create("campaigns", {"name": name})["campaignid"])


def lead(h: Harness, lead_id: str) -> dict[str, Any]:
    row = h.dataverse.get("leads", lead_id)
    assert row is not None
    return {k: row.get(k) for k in TYPED}


def failures(h: Harness, person: str) -> list[activity.Entry]:
    return [e for e in h.activity(person) if e.kind in activity.FAILURE_KINDS]


def problems(entry: activity.Entry) -> list[dict[str, str]]:
    return list(entry.details.get("problems", []))


def test_every_type_travels_marketo_to_dynamics_and_back(h: Harness) -> None:
    t = tag()
    acme, globex = account(h, f"Acme {t}"), account(h, f"Globex {t}")
    spring = campaign(h, f"Spring {t}")
    marketo_id = h.marketo.create_lead(
        email=f"typed.{t}@example.com", lastName="Typed", expectedCloseDate="2024-05-01",
        lastWebVisit="2024-05-01T12:22:33+02:00", engagementScore=12.5, budget=1500.25,
        productInterests="services;Software", accountName=f"acme {t}", campaignName=f"Spring {t}")
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    lead_id = created.json()["dynamicsId"]
    # Lookups can only be written with @odata.bind (the emulator refuses the bare column), so
    # their values here prove the bind; the amount took the map's currency, the org's USD.
    assert lead(h, lead_id) == {
        "estimatedclosedate": "2024-05-01", "new_lastvisit": "2024-05-01T10:22:33Z", "new_score": 12.5,
        "budgetamount": 1500.25, "new_interests": "1,3", "_parentaccountid_value": acme,
        "_campaignid_value": spring, "_transactioncurrencyid_value": BASE_CURRENCY}

    # A sales rep edits every typed column in Dynamics: each reaches Marketo in Marketo's form.
    h.dataverse.update("leads", lead_id, {
        "estimatedclosedate": "2024-12-24", "new_lastvisit": "2025-01-02T03:04:05Z", "new_score": -7.25,
        "budgetamount": 99.99, "new_interests": "2,4", "_parentaccountid_value": globex, "_campaignid_value": None})
    h.sync()
    person = h.marketo.get_lead(marketo_id)
    assert person is not None
    assert {k: person.get(k) for k in ("expectedCloseDate", "lastWebVisit", "engagementScore", "budget",
                                       "productInterests", "accountName", "campaignName")} == {
        "expectedCloseDate": "2024-12-24", "lastWebVisit": "2025-01-02T03:04:05Z", "engagementScore": -7.25,
        "budget": 99.99, "productInterests": "Hardware;Training", "accountName": f"Globex {t}",
        "campaignName": None}

    # And the marketer's next edits go back the other way through the background sync.
    h.marketo.update_lead(marketo_id, expectedCloseDate="2025-06-30", lastWebVisit="2025-06-30T23:30:00-01:00",
                          productInterests="Training", accountName=f"ACME {t}", campaignName=f"spring {t}")
    h.sync()
    assert lead(h, lead_id) == {
        "estimatedclosedate": "2025-06-30", "new_lastvisit": "2025-07-01T00:30:00Z", "new_score": -7.25,
        "budgetamount": 99.99, "new_interests": "4", "_parentaccountid_value": acme,
        "_campaignid_value": spring, "_transactioncurrencyid_value": BASE_CURRENCY}
    assert failures(h, f"m{marketo_id}") == []


def test_a_new_dynamics_lead_brings_its_typed_values_to_a_new_marketo_person(h: Harness) -> None:
    t = tag()
    initech = account(h, f"Initech {t}")
    address = f"new.{t}@example.com"
    h.dataverse.create("leads", {
        "lastname": "New", "subject": "x", "emailaddress1": address, "estimatedclosedate": "2026-01-15",
        "new_lastvisit": "2026-01-15T08:00:00Z", "new_score": 3.5, "budgetamount": 10,
        "_transactioncurrencyid_value": BASE_CURRENCY, "new_interests": "1", "_parentaccountid_value": initech})
    h.sync()
    (person,) = eventually(lambda: h.marketo.find_leads(address))
    assert {k: person.get(k) for k in ("expectedCloseDate", "lastWebVisit", "engagementScore", "budget",
                                       "productInterests", "accountName")} == {
        "expectedCloseDate": "2026-01-15", "lastWebVisit": "2026-01-15T08:00:00Z", "engagementScore": 3.5,
        "budget": 10.0, "productInterests": "Software", "accountName": f"Initech {t}"}


def test_a_lookup_naming_no_record_fails_the_person_with_the_reason(h: Harness) -> None:
    t = tag()
    marketo_id = h.marketo.create_lead(email=f"nolookup.{t}@example.com", lastName="Lost",
                                       accountName=f"No Such Company {t}")
    answer = h.sync_person(marketo_id)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["problems"]
    assert problem["rule"] == "lookup" and problem["field"] == "parentaccountid"
    assert f"accountName (lead.parentaccountid): no accounts has name 'No Such Company {t}'" in problem["message"]
    assert h.dataverse.find("leads", emailaddress1=f"nolookup.{t}@example.com") == []
    assert [p["rule"] for e in failures(h, f"m{marketo_id}") for p in problems(e)] == ["lookup"]


def test_a_lookup_gone_wrong_in_the_background_is_a_failure_not_a_blank(h: Harness) -> None:
    t = tag()
    acme = account(h, f"Acme {t}")
    marketo_id = h.marketo.create_lead(email=f"later.{t}@example.com", lastName="Later", accountName=f"Acme {t}")
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    lead_id = created.json()["dynamicsId"]
    account(h, f"Twin {t}")
    account(h, f"Twin {t}")
    h.marketo.update_lead(marketo_id, accountName=f"Twin {t}", lastName="Later Still")
    h.sync()
    row = h.dataverse.get("leads", lead_id)
    assert row is not None and (row["_parentaccountid_value"], row["lastname"]) == (acme, "Later")
    [failure] = eventually(lambda: failures(h, f"m{marketo_id}"))
    assert failure.kind == activity.VALIDATION_FAILED
    [problem] = problems(failure)
    assert problem["rule"] == "lookup" and "2 accounts have name" in problem["message"]


def test_values_dynamics_would_refuse_fail_before_sending(h: Harness) -> None:
    t = tag()
    marketo_id = h.marketo.create_lead(email=f"refused.{t}@example.com", lastName="Refused",
                                       engagementScore=1.234, expectedCloseDate="1700-01-01")
    answer = h.sync_person(marketo_id)
    assert answer.status_code == 422, answer.text
    assert sorted(p["rule"] for p in answer.json()["problems"]) == ["precision", "range"]


def test_an_amount_in_another_currency_is_reported_never_converted(h: Harness) -> None:
    t = tag()
    marketo_id = h.marketo.create_lead(email=f"euro.{t}@example.com", lastName="Euro", budget=100)
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    lead_id = created.json()["dynamicsId"]
    # The record is moved to euros in Dynamics: its amount is no longer Marketo's (USD) currency.
    h.dataverse.update("leads", lead_id, {"_transactioncurrencyid_value": EURO, "budgetamount": 90})
    h.sync()
    person = h.marketo.get_lead(marketo_id)
    assert person is not None and person.get("budget") == 100.0
    failure = eventually(lambda: failures(h, f"m{marketo_id}"))[-1]
    assert [p["rule"] for p in problems(failure)] == ["currency"]
    assert "EUR" in problems(failure)[0]["message"]


def test_a_lookup_first_set_in_dynamics_is_news_not_an_echo(h: Harness) -> None:
    # The feed carries only the related row's id; the echo filter must compare its key, or a
    # lookup set where the base had none would look like our own write and be dropped.
    t = tag()
    marketo_id = h.marketo.create_lead(email=f"echo.{t}@example.com", lastName="Echo")
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    h.sync()
    h.dataverse.update("leads", created.json()["dynamicsId"], {"_parentaccountid_value": account(h, f"Hooli {t}")})
    h.sync()
    person = h.marketo.get_lead(marketo_id)
    assert person is not None and person.get("accountName") == f"Hooli {t}"


def test_leadsync_check_names_each_typed_pair_that_does_not_fit(h: Harness) -> None:
    fmap = json.loads(json.dumps(FIELD_MAP))
    for entry in fmap["fields"]:
        if entry["marketo"] == "lastWebVisit":
            entry["lead"] = "new_score"  # a Decimal column for a datetime
        if entry["marketo"] == "engagementScore":
            entry["lead"] = "revenue"  # Money for a decimal
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], "check", "--json"],
                                env={**h.stack.env, "LEADSYNC_FIELD_MAP": json.dumps(fmap)})
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert sorted(p["problem"] for p in report["problems"]) == [
        "Dataverse lead.new_score is Decimal, the map says datetime",
        "Dataverse lead.revenue is Money, the map says decimal",
    ]


def test_a_contacts_account_travels_through_its_customer_lookup(h: Harness) -> None:
    # parentcustomerid may point at an account or a contact: it is bound as parentcustomerid_account.
    t = tag()
    acme, globex = account(h, f"Acme {t}"), account(h, f"Globex {t}")
    address = f"contact.{t}@example.com"
    contact_id = h.dataverse.create("contacts", {"lastname": "Contact", "emailaddress1": address,
                                                 "_parentcustomerid_value": acme})["contactid"]
    h.sync()
    (person,) = eventually(lambda: h.marketo.find_leads(address))
    assert person["accountName"] == f"Acme {t}"
    h.marketo.update_lead(int(person["id"]), accountName=f"globex {t}")
    h.sync()
    row = h.dataverse.get("contacts", contact_id)
    assert row is not None and row["_parentcustomerid_value"] == globex
    assert failures(h, f"m{person['id']}") == []
