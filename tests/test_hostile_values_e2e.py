"""End to end: look-alike emails are never linked, and one unencodable value fails only its record.

The emulators look emails up as case- and accent-insensitive collations do (ß ~ ss, the
Kelvin sign ~ k, the ligature ﬁ ~ fi), so every path that links by email (real-time,
background link, backfill) meets the near miss here as it would live. A lone UTF-16
surrogate is planted through raw JSON (`"\\ud800"`), as a service would serve it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from devhost.harness import Harness, by_hand, running
from shared.ops.backfill import backfill
from shared.runtime import services
from shared.state import activity
from shared.state.workqueue import FROM_MARKETO

pytestmark = pytest.mark.e2e
# (the address one side holds, the look-alike the other side holds): different mailboxes
PAIRS = [("fstrasse", "fstraße"), ("kelvin", "\u212aelvin"), ("file", "\ufb01le")]
IDS = ["sharp-s", "kelvin-sign", "fi-ligature"]
NEAR_MISS, ENCODING = "near_miss", "encoding"  # the problem rules the webhook answers with (a contract)
BAD = "Ada\ud800"  # a lone surrogate: valid in JSON, never encodable


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def addresses(pair: tuple[str, str]) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{pair[0]}.{tag}@example.com", f"{pair[1]}.{tag}@example.com"


def failures(h: Harness, person: str) -> list[activity.Entry]:
    return [e for e in h.activity(person) if e.kind in activity.FAILURE_KINDS]


def rules(entry: activity.Entry) -> set[str]:
    return {p["rule"] for p in entry.details.get("problems", [])}


def marketo_raw(h: Harness, method: str, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    """An admin call with ASCII-escaped JSON, so a lone surrogate reaches the emulator."""
    response = h.marketo.http.request(method, f"{h.marketo.base_url}/_admin{path}", content=json.dumps(fields),
                                      headers={"content-type": "application/json"})
    response.raise_for_status()
    return dict(response.json())


def dataverse_raw_update(h: Harness, entity_set: str, record_id: str, fields: dict[str, Any]) -> None:
    response = h.dataverse.http.patch(f"/_admin/{entity_set}/{record_id}", content=json.dumps(fields),
                                      headers={"content-type": "application/json"})
    response.raise_for_status()


def poisoned() -> int:
    try:
        return services().queues.depth(f"{FROM_MARKETO}-poison")
    except ResourceNotFoundError:
        return 0  # never created: nothing was ever poisoned


def new_linked_lead(h: Harness, address: str | None = None) -> tuple[str, int]:
    address = address or f"p{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address,
                                        "companyname": "Analytical", "subject": "web form"})
    h.sync()
    (person,) = [p for p in h.marketo.find_leads(address) if p["email"] == address]
    return lead["leadid"], int(person["id"])


# -- 1. look-alike emails -------------------------------------------------------------------
@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_real_time_never_links_a_look_alike_email_and_reports_it(h: Harness, pair: tuple[str, str]) -> None:
    theirs, mine = addresses(pair)
    other = h.dataverse.create("leads", {"firstname": "Other", "lastname": "Person", "emailaddress1": theirs,
                                         "subject": "web form"})
    marketo_id = h.marketo.create_lead(email=mine, firstName="Mine", lastName="Marketo")
    response = h.sync_person(marketo_id)
    assert response.status_code == 422, response.text
    assert {p["rule"] for p in response.json()["problems"]} == {NEAR_MISS}
    assert services().links.get(marketo_id) is None
    assert services().links.by_dynamics("lead", other["leadid"]) is None
    (failure,) = failures(h, f"m{marketo_id}")
    assert NEAR_MISS in rules(failure) and "addresses differ" in failure.message and other["leadid"] in failure.message
    h.sync()  # nothing the background sync does overwrites the other person either
    record = h.dataverse.get("leads", other["leadid"])
    assert record is not None
    assert (record["emailaddress1"], record["firstname"], record["lastname"]) == (theirs, "Other", "Person")


def test_real_time_still_links_the_same_address_in_another_ascii_case(h: Harness) -> None:
    address = f"Case.{uuid.uuid4().hex[:8]}@Example.com"
    lead = h.dataverse.create("leads", {"firstname": "Same", "lastname": "Person", "emailaddress1": address.lower(),
                                        "subject": "web form"})
    marketo_id = h.marketo.create_lead(email=address, firstName="Same", lastName="Person")
    response = h.sync_person(marketo_id)
    assert response.status_code == 200 and response.json()["linked"] is True, response.text
    assert response.json()["dynamicsId"] == lead["leadid"]


@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_the_background_link_never_takes_a_look_alike_person(h: Harness, pair: tuple[str, str]) -> None:
    theirs, mine = addresses(pair)
    person_id = h.marketo.create_lead(email=theirs, firstName="Other", lastName="Person")
    lead = h.dataverse.create("leads", {"firstname": "Mine", "lastname": "Dynamics", "emailaddress1": mine,
                                        "subject": "web form"})
    h.sync()
    assert services().links.by_dynamics("lead", lead["leadid"]) is None
    assert services().links.get(person_id) is None
    person = h.marketo.get_lead(person_id)
    assert person is not None and (person["email"], person["firstName"], person["lastName"]) == (
        theirs, "Other", "Person")
    assert [p["id"] for p in h.marketo.find_leads(mine)] == [person_id]  # no second person either
    failure = failures(h, f"lead:{lead['leadid']}")[0]
    assert NEAR_MISS in rules(failure) and f"Marketo person {person_id}" in failure.message


# -- 2. one unencodable value ----------------------------------------------------------------
@pytest.mark.parametrize("field", ["firstName", "email"])
def test_the_webhook_answers_422_for_an_unencodable_value_and_logs_it(h: Harness, field: str) -> None:
    values = {"email": f"p{uuid.uuid4().hex[:10]}@example.com", "firstName": "Ada", "lastName": "Lovelace"}
    values[field] = f"{values[field]}\ud800"
    marketo_id = int(marketo_raw(h, "POST", "/leads", values)["id"])
    response = h.sync_person(marketo_id)
    assert response.status_code == 422, response.text
    assert (field, ENCODING) in {(p["field"], p["rule"]) for p in response.json()["problems"]}
    (failure,) = failures(h, f"m{marketo_id}")
    assert ENCODING in rules(failure) and "surrogate" in failure.message
    assert services().links.get(marketo_id) is None


def test_one_unencodable_marketo_value_fails_only_its_person_in_a_batch(h: Harness) -> None:
    people = [new_linked_lead(h) for _ in range(3)]
    (bad_lead, bad_id), *good = people
    marketo_raw(h, "PATCH", f"/leads/{bad_id}", {"firstName": BAD, "title": "Bad"})
    for _, marketo_id in good:
        h.marketo.update_lead(marketo_id, title="Good")
    h.sync()
    for lead_id, _ in good:
        assert h.dataverse.get("leads", lead_id)["jobtitle"] == "Good"  # type: ignore[index]
    assert h.dataverse.get("leads", bad_lead)["jobtitle"] != "Bad"  # type: ignore[index]
    failure = failures(h, f"m{bad_id}")[0]
    assert ENCODING in rules(failure) and "firstName" in failure.message
    assert poisoned() == 0  # the batch was not retried into the poison queue


def test_one_unencodable_dynamics_value_fails_only_its_person(h: Harness) -> None:
    (bad_lead, bad_id), (good_lead, good_id) = new_linked_lead(h), new_linked_lead(h)
    dataverse_raw_update(h, "leads", bad_lead, {"companyname": "Bad\ud800", "jobtitle": "Bad"})
    h.dataverse.update("leads", good_lead, {"jobtitle": "Good"})
    h.sync()
    assert h.marketo.get_lead(good_id)["title"] == "Good"  # type: ignore[index]
    bad = h.marketo.get_lead(bad_id)
    assert bad is not None and bad["company"] == "Analytical" and bad.get("title") != "Bad"
    failure = failures(h, f"m{bad_id}")[0]
    assert ENCODING in rules(failure) and failure.direction == "dynamics->marketo"


def test_a_new_dynamics_record_with_an_unencodable_value_fails_alone(h: Harness) -> None:
    good = f"p{uuid.uuid4().hex[:10]}@example.com"
    bad = h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": good + ".x",
                                       "subject": "web form"})
    dataverse_raw_update(h, "leads", bad["leadid"], {"emailaddress1": f"bad\ud800{good}"})
    h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": good,
                                 "subject": "web form"})
    h.sync()
    assert len(h.marketo.find_leads(good)) == 1
    failure = failures(h, f"lead:{bad['leadid']}")[0]
    assert ENCODING in rules(failure)


# -- backfill (last: it scans every record of this module's Dataverse) ------------------------
@pytest.mark.parametrize("pair", PAIRS, ids=IDS)
def test_backfill_never_links_a_look_alike_and_lists_it(h: Harness, pair: tuple[str, str]) -> None:
    theirs, mine = addresses(pair)
    person_id = h.marketo.create_lead(email=theirs, firstName="Other", lastName="Person")
    contact = h.dataverse.create("contacts", {"firstname": "Mine", "lastname": "Dynamics", "emailaddress1": mine})
    report = backfill(services(), entities=("contact",))
    assert contact["contactid"] not in {n.dynamics_id for n in report.linked}
    (skip,) = [s for s in report.skipped if s.dynamics_id == contact["contactid"]]
    assert "addresses differ" in skip.reason and str(person_id) in skip.reason
    assert services().links.get(person_id) is None
    h.drain()
    person = h.marketo.get_lead(person_id)
    assert person is not None and (person["email"], person["firstName"]) == (theirs, "Other")
    failure = failures(h, f"contact:{contact['contactid']}")[0]
    assert NEAR_MISS in rules(failure)


def test_backfill_leaves_a_record_deleted_in_marketo_alone_as_the_sync_does(h: Harness) -> None:
    lead_id, marketo_id = new_linked_lead(h)
    address = h.dataverse.get("leads", lead_id)["emailaddress1"]  # type: ignore[index]
    h.marketo.delete_lead(marketo_id)
    h.sync()  # the link ends with a tombstone: only a later Dynamics edit brings the person back
    again = h.marketo.create_lead(email=address, firstName="Someone", lastName="Else")
    report = backfill(services(), entities=("lead",))
    assert lead_id not in {n.dynamics_id for n in report.linked}
    (skip,) = [s for s in report.skipped if s.dynamics_id == lead_id]
    assert "deleted in Marketo" in skip.reason
    assert services().links.get(again) is None
    h.drain()


def test_an_inactive_contact_with_nothing_new_is_an_echo_as_for_the_applier(h: Harness) -> None:
    # One eligibility rule: "not open" is a lead's state; a contact's statecode does not make it news.
    address = f"p{uuid.uuid4().hex[:10]}@example.com"
    marketo_id = h.marketo.create_lead(email=address, firstName="Grace", lastName="Hopper")
    contact = h.dataverse.create("contacts", {"firstname": "Grace", "lastname": "Hopper", "emailaddress1": address})
    h.sync()
    assert services().links.get(marketo_id) is not None
    h.dataverse.update("contacts", contact["contactid"], {"statecode": 1, "statuscode": 2})
    reads = "GET /rest/v1/leads.json"
    before = h.marketo.stats()["calls_by_endpoint"].get(reads, 0)
    h.sync(1, marketo=False)
    assert h.marketo.stats()["calls_by_endpoint"].get(reads, 0) == before  # dropped by the poller: no apply
