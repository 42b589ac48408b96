"""End to end (issue #18): owners, qualification edge cases, results a marketer looks for, workspaces.

One devhost stack configured the way a marketing-operations admin would: new leads owned by
the user in the Marketo field `dynamicsOwnerEmail` (else the "Inside Sales" team), the
owner's email synced back to that field, closed leads marked in `leadStatus`, new Marketo
people created in the "Europe" partition. Refusals are injected through the Dataverse
emulator's admin API (privileges, plug-in steps, duplicate detection rules).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from devhost.harness import Harness, by_hand, eventually, running
from shared.ops.health import snapshot
from shared.runtime import services
from shared.state import activity

pytestmark = pytest.mark.e2e
TEAM = "Inside Sales"
PARTITION = "Europe"
PARTITION_ID: list[int] = []


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    env = {"LEADSYNC_LEAD_OWNER_FIELD": "dynamicsOwnerEmail", "LEADSYNC_OWNER_EMAIL_FIELD": "dynamicsOwnerEmail",
           "LEADSYNC_LEAD_OWNER": f"team:{TEAM}", "LEADSYNC_CLOSED_LEAD_ACTION": "mark:leadStatus",
           "MARKETO_PARTITION": PARTITION}
    with running(by_hand(**env)) as harness:
        PARTITION_ID.append(harness.marketo.add_partition(PARTITION))
        harness.dataverse.create("teams", {"name": TEAM})
        yield harness


def email() -> str:
    return f"p{uuid.uuid4().hex[:10]}@example.com"


def new_user(h: Harness, name: str = "Grace Hopper") -> dict[str, Any]:
    return h.dataverse.create("systemusers", {"fullname": name, "internalemailaddress": email(),
                                              "isdisabled": False})


def team_id(h: Harness) -> str:
    return str(h.dataverse.find("teams", name=TEAM)[0]["teamid"])


def kinds(h: Harness, marketo_id: int) -> list[str]:
    return [e.kind for e in h.activity(f"m{marketo_id}")]


def person(h: Harness, **fields: Any) -> int:
    return h.marketo.create_lead(**{"email": email(), "firstName": "Ada", "lastName": "Lovelace",
                                    "company": "Analytical", **fields})


def new_linked_lead(h: Harness, **fields: Any) -> tuple[str, int]:
    record = {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": email(), "companyname": "Analytical",
              "subject": "web form", **fields}
    lead = h.dataverse.create("leads", record)
    h.sync()
    (found,) = h.marketo.find_leads(record["emailaddress1"])
    return lead["leadid"], int(found["id"])


def notes(h: Harness, marketo_id: int) -> str:
    return json.dumps(h.marketo.activities(marketo_id))


# -- 2: owners -----------------------------------------------------------------------------
def test_a_real_time_lead_is_owned_by_the_user_named_in_the_marketo_owner_field(h: Harness) -> None:
    user = new_user(h)
    marketo_id = person(h, dynamicsOwnerEmail=user["internalemailaddress"].upper())
    response = h.sync_person(marketo_id)
    assert response.status_code == 201, response.text
    assert response.json()["owner"] == {"table": "systemuser", "id": user["systemuserid"]}
    lead = h.dataverse.get("leads", response.json()["dynamicsId"])
    assert lead is not None and lead["_ownerid_value"] == user["systemuserid"]


def test_without_an_owner_email_the_configured_team_owns_the_lead(h: Harness) -> None:
    marketo_id = person(h)
    response = h.sync_person(marketo_id)
    assert response.status_code == 201, response.text
    lead = h.dataverse.get("leads", response.json()["dynamicsId"])
    assert lead is not None and lead["_ownerid_value"] == team_id(h)
    assert f"owned by team {TEAM}" in h.activity(f"m{marketo_id}")[0].message


@pytest.mark.parametrize("disabled", [False, True])
def test_an_owner_that_names_no_enabled_user_fails_clearly_and_creates_nothing(h: Harness, disabled: bool) -> None:
    address = email()
    if disabled:
        h.dataverse.create("systemusers", {"fullname": "Gone", "internalemailaddress": address, "isdisabled": True})
    marketo_id = person(h, dynamicsOwnerEmail=address)
    response = h.sync_person(marketo_id)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["problems"]
    assert (problem["field"], problem["rule"]) == ("dynamicsOwnerEmail", "owner")
    assert ("disabled" in problem["message"]) is disabled
    assert activity.VALIDATION_FAILED in kinds(h, marketo_id)
    assert "lead owner" in notes(h, marketo_id)
    assert h.dataverse.find("leads", emailaddress1=h.marketo.get_lead(marketo_id)["email"]) == []  # type: ignore[index]


def test_the_owner_email_of_a_dynamics_lead_reaches_marketo_and_follows_a_reassignment(h: Harness) -> None:
    first, second = new_user(h, "First Owner"), new_user(h, "Second Owner")
    lead_id, marketo_id = new_linked_lead(h, _ownerid_value=first["systemuserid"])
    found = h.marketo.get_lead(marketo_id)
    assert found is not None and found["dynamicsOwnerEmail"] == first["internalemailaddress"]
    h.dataverse.update("leads", lead_id, {"_ownerid_value": second["systemuserid"]})
    h.sync()
    found = h.marketo.get_lead(marketo_id)
    assert found is not None and found["dynamicsOwnerEmail"] == second["internalemailaddress"]


# -- 6: workspaces -------------------------------------------------------------------------
def test_new_marketo_people_land_in_the_configured_partition(h: Harness) -> None:
    _, marketo_id = new_linked_lead(h)
    found = h.marketo.get_lead(marketo_id)
    assert found is not None and found["leadPartitionId"] == PARTITION_ID[0] != 1


# -- 4: qualification edge cases -----------------------------------------------------------
def test_qualifying_into_an_existing_contact_moves_the_link_to_that_contact(h: Harness) -> None:
    lead_id, marketo_id = new_linked_lead(h)
    address = h.dataverse.get("leads", lead_id)["emailaddress1"]  # type: ignore[index]
    contact = h.dataverse.create("contacts", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address})
    h.sync()  # the contact finds the person already linked to the lead: not linked twice
    assert h.dataverse.qualify(lead_id, existing_contact=contact["contactid"]) == contact["contactid"]
    assert h.dataverse.find("contacts", emailaddress1=address) == [h.dataverse.get("contacts", contact["contactid"])]
    h.sync(3)
    link = services().links.get(marketo_id)
    assert link is not None and (link.entity, link.dynamics_id) == ("contact", contact["contactid"])
    assert activity.MOVED in kinds(h, marketo_id)
    h.dataverse.update("contacts", contact["contactid"], {"jobtitle": "Countess"})
    h.sync()
    assert h.marketo.get_lead(marketo_id)["title"] == "Countess"  # type: ignore[index]


@pytest.mark.parametrize(("status", "kind", "label"), [(7, activity.CANCELLED, "Canceled"),
                                                      (4, activity.DISQUALIFIED, "Lost")])
def test_a_disqualified_or_cancelled_lead_is_a_reported_state_until_it_is_reopened(
        h: Harness, status: int, kind: str, label: str) -> None:
    lead_id, marketo_id = new_linked_lead(h)
    h.dataverse.update("leads", lead_id, {"statecode": 2, "statuscode": status})
    h.sync()
    assert kinds(h, marketo_id).count(kind) == 1
    assert h.marketo.get_lead(marketo_id)["leadStatus"] == label  # type: ignore[index]
    link = services().links.get(marketo_id)
    assert link is not None and link.state == "parked"
    health = snapshot(services())
    assert any(e.person == f"m{marketo_id}" and e.kind == kind for e in health.failures)
    assert kind not in activity.FAILURE_KINDS  # listed, but sales closing a lead is no fault to count
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], "failures",
                                      "--json"], env={**h.stack.env})
    listed = [f for f in json.loads(result.stdout)["failures"] if f["ref"] == f"m{marketo_id}"]
    assert [f["kind"] for f in listed] == [f"lead_{kind}"] and label in listed[0]["message"]
    assert listed[0]["linked"] is True and "reopens" in listed[0]["fix"]
    h.marketo.update_lead(marketo_id, title="Still marketing")  # not synced, and not reported again
    h.sync()
    assert kinds(h, marketo_id).count(kind) == 1
    assert h.dataverse.get("leads", lead_id)["jobtitle"] is None  # type: ignore[index]
    h.dataverse.update("leads", lead_id, {"statecode": 0, "statuscode": 1})
    h.sync()
    assert h.dataverse.get("leads", lead_id)["jobtitle"] == "Still marketing"  # type: ignore[index]
    assert services().links.get(marketo_id).state == "linked"  # type: ignore[union-attr]


# -- 5: results ----------------------------------------------------------------------------
def test_a_real_time_create_is_in_the_persons_marketo_activity_log(h: Harness) -> None:
    marketo_id = person(h)
    response = h.sync_person(marketo_id)
    assert response.status_code == 201, response.text
    assert response.json()["dynamicsId"] in eventually(lambda: notes(h, marketo_id))
    assert "created Dynamics lead" in notes(h, marketo_id)


def refused(h: Harness, marketo_id: int, status: int, reason: str, code: str) -> None:
    response = h.sync_person(marketo_id)
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["reason"], body["dynamics"]["code"]) == ("rejected", reason, code)
    assert activity.REJECTED in kinds(h, marketo_id)
    assert code in notes(h, marketo_id)
    health = snapshot(services())
    assert any(e.person == f"m{marketo_id}" and e.kind == activity.REJECTED for e in health.failures)
    assert services().links.get(marketo_id) is None  # nothing half-made: the webhook can be called again


def test_a_missing_privilege_answers_502_with_the_reason_in_both_logs(h: Harness) -> None:
    marketo_id = person(h)
    h.dataverse.deny("prvCreateLead")
    try:
        refused(h, marketo_id, 502, "missing privilege", "0x80040220")
    finally:
        h.dataverse.deny()
    assert h.sync_person(marketo_id).status_code == 201


def test_a_plug_in_refusal_answers_422_with_the_plug_ins_message(h: Harness) -> None:
    marketo_id = person(h)
    h.dataverse.plugin_error("lead", "Create", "Leads from this region need a consent date.")
    try:
        refused(h, marketo_id, 422, "a plug-in refused the record", "0x80040265")
        assert "consent date" in h.sync_person(marketo_id).json()["error"]
    finally:
        h.dataverse.clear_plugins()


def test_a_duplicate_detection_rule_refuses_a_real_time_create(h: Harness) -> None:
    company = f"Dup {uuid.uuid4().hex[:6]}"
    h.dataverse.create("leads", {"lastname": "Lovelace", "companyname": company, "emailaddress1": email(),
                                 "new_synctomkto": False})
    marketo_id = person(h, company=company)
    h.dataverse.duplicate_rule("lead", ["lastname", "companyname"])
    try:
        refused(h, marketo_id, 422, "a duplicate detection rule matched an existing record", "0x80040333")
    finally:
        h.dataverse.clear_duplicate_rules()


def test_a_collision_entry_names_the_initial_link_rule_when_it_decided(h: Harness) -> None:
    address = email()
    h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address,
                                 "companyname": "Analytical", "subject": "x", "jobtitle": "Countess",
                                 "new_synctomkto": False})
    marketo_id = h.marketo.create_lead(email=address, firstName="Ada", lastName="Lovelace", company="Analytical")
    assert h.sync_person(marketo_id).json()["linked"] is True
    lead_id = services().links.get(marketo_id).dynamics_id  # type: ignore[union-attr]
    h.dataverse.update("leads", str(lead_id), {"new_synctomkto": True})
    h.sync()
    (collision,) = [e for e in h.activity(f"m{marketo_id}") if e.kind == activity.COLLISION]
    assert "initial-link rule: a blank never wins" in collision.message
    assert "default rule" not in collision.message
    shown = [e for e in snapshot(services()).collisions if e.person == f"m{marketo_id}"]
    assert shown and "initial-link rule: a blank never wins" in shown[0].message  # the health page says so too
    assert h.marketo.get_lead(marketo_id)["title"] == "Countess"  # type: ignore[index]


def test_a_refused_lookup_before_the_create_is_a_json_answer_too(h: Harness) -> None:
    marketo_id = person(h)
    h.dataverse.deny("prvReadContact")
    try:
        response = h.sync_person(marketo_id)
    finally:
        h.dataverse.deny()
    assert response.status_code == 502, response.text
    assert (response.json()["reason"], response.json()["dynamics"]["code"]) == ("missing privilege", "0x80040220")
    assert activity.REJECTED in kinds(h, marketo_id)
    assert h.sync_person(marketo_id).status_code == 201


def test_an_app_user_without_the_assign_privilege_gets_a_clear_answer_for_an_owned_lead(h: Harness) -> None:
    user = new_user(h)
    marketo_id = person(h, dynamicsOwnerEmail=user["internalemailaddress"])
    h.dataverse.deny("prvAssignLead")
    try:
        response = h.sync_person(marketo_id)
    finally:
        h.dataverse.deny()
    assert response.status_code == 502, response.text
    assert "prvAssignLead" in response.json()["error"]
    assert h.sync_person(marketo_id).status_code == 201
