"""Both emulators' merge APIs over real HTTP: Dataverse's `Merge` action and Marketo's Merge Leads,
with what each leaves in the change feeds, and their answers to bad input."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients.marketo import MarketoClient
from tests.marketo_fixtures import MarketoEnv
from tests.test_marketo_emulator import Rest, error_code

Env = tuple[DataverseEmulator, DataverseAdmin]
ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


@pytest.fixture
def api(dataverse: Env, dataverse_token: str) -> Iterator[httpx.Client]:
    emu = dataverse[0]
    with httpx.Client(base_url=emu.base_url + "/api/data/v9.2/",
                      headers={**ODATA, "Authorization": f"Bearer {dataverse_token}"},
                      verify=ssl.create_default_context(cafile=emu.ca_path), timeout=10) as client:
        yield client


@pytest.fixture
def rest(marketo: MarketoEnv) -> Iterator[Rest]:
    caller = Rest(marketo)
    yield caller
    caller.http.close()


def ref(entity: str, rid: str) -> dict[str, str]:
    return {"@odata.type": f"Microsoft.Dynamics.CRM.{entity}", f"{entity}id": rid}


def merge_body(entity: str, master: str, sub: str, **content: Any) -> dict[str, Any]:
    return {"Target": ref(entity, master), "Subordinate": ref(entity, sub),
            "UpdateContent": {"@odata.type": f"Microsoft.Dynamics.CRM.{entity}", **content},
            "PerformParentingChecks": False}


# --- Dataverse ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entity", "state"), [("lead", (2, 7)), ("contact", (1, 2))])
def test_dataverse_merge_deactivates_the_subordinate_and_updates_the_master(
        dataverse: Env, api: httpx.Client, entity: str, state: tuple[int, int]) -> None:
    admin = dataverse[1]
    extra = {"subject": "s"} if entity == "lead" else {}
    master = admin.create(f"{entity}s", {"lastname": "Master", "emailaddress1": "m@x.com", **extra})[f"{entity}id"]
    sub = admin.create(f"{entity}s", {"lastname": "Sub", "emailaddress1": "s@x.com", "jobtitle": "CTO",
                                      **extra})[f"{entity}id"]
    link = api.get(f"{entity}s", headers={"Prefer": "odata.track-changes"}).json()["@odata.deltaLink"]

    resp = api.post("Merge", json=merge_body(entity, master, sub, jobtitle="CTO"))

    assert resp.status_code == 204 and resp.content == b""
    m, s = admin.get(f"{entity}s", master), admin.get(f"{entity}s", sub)
    assert m is not None and s is not None
    assert (m["jobtitle"], m["merged"], m["statecode"], m["_masterid_value"]) == ("CTO", False, 0, None)
    assert (s["statecode"], s["statuscode"]) == state
    assert s["merged"] is True and s["_masterid_value"] == master
    delta = api.get(link, headers={"Prefer": "odata.track-changes"}).json()["value"]
    assert {r[f"{entity}id"] for r in delta} == {master, sub}
    read = api.get(f"{entity}s({sub})", params={"$select": "merged,_masterid_value,statecode"}).json()
    assert (read["merged"], read["_masterid_value"]) == (True, master)


def test_dataverse_merge_refuses_bad_input_and_changes_nothing(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    a = admin.create("leads", {"lastname": "A", "subject": "s", "emailaddress1": "a@x.com"})["leadid"]
    b = admin.create("leads", {"lastname": "B", "subject": "s", "emailaddress1": "b@x.com"})["leadid"]
    c = admin.create("contacts", {"lastname": "C"})["contactid"]
    missing = "00000000-0000-4000-8000-0000000000aa"
    bad: list[tuple[Any, int]] = [
        ({**merge_body("lead", a, b), "Target": None}, 400),  # a required parameter missing
        ({k: v for k, v in merge_body("lead", a, b).items() if k != "PerformParentingChecks"}, 400),
        ({**merge_body("lead", a, b), "PerformParentingChecks": "no"}, 400),
        (merge_body("lead", a, a), 400),  # a record with itself
        ({**merge_body("lead", a, b), "Subordinate": ref("contact", c)}, 400),  # different tables
        ({**merge_body("lead", a, b), "Target": {"leadid": a}}, 400),  # no @odata.type
        ({**merge_body("lead", a, b), "Target": ref("lead", "not-a-guid")}, 400),
        (merge_body("lead", a, b, nosuchcolumn=1), 400),
        (merge_body("lead", a, b, fullname="read-only"), 400),
        (merge_body("lead", missing, b), 404),
        ([1, 2], 400),
    ]
    for body, status in bad:
        resp = api.post("Merge", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert resp.json()["error"]["code"].startswith("0x")
    assert api.post("Merge", content=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert api.get("Merge").status_code == 405
    for rid in (a, b):
        row = admin.get("leads", rid)
        assert row is not None and (row["statecode"], row["merged"], row["_masterid_value"]) == (0, False, None)
    assert api.post("Merge", json=merge_body("lead", a, b)).status_code == 204
    again = api.post("Merge", json=merge_body("lead", a, b))  # the subordinate is inactive now
    assert again.status_code == 400 and "inactive" in again.json()["error"]["message"]


def test_dataverse_admin_merge_is_the_action(dataverse: Env) -> None:
    admin = dataverse[1]
    a = admin.create("contacts", {"lastname": "A"})["contactid"]
    b = admin.create("contacts", {"lastname": "B", "jobtitle": "VP"})["contactid"]
    admin.merge("contact", a, b, {"jobtitle": "VP"})
    merged = admin.get("contacts", b)
    assert merged is not None and (merged["merged"], merged["statecode"]) == (True, 1)
    master = admin.get("contacts", a)
    assert master is not None and master["jobtitle"] == "VP"
    with pytest.raises(httpx.HTTPStatusError):
        admin.merge("contact", a, b)


# --- Marketo --------------------------------------------------------------------------------------


def test_marketo_merge_keeps_the_winner_fills_its_blanks_and_deletes_the_losers(
        rest: Rest, marketo: MarketoEnv) -> None:
    winner = marketo.admin.create_lead(email="w@x.com", firstName="Win", title="CEO")
    loser = marketo.admin.create_lead(email="l@x.com", firstName="Lose", title="CTO", company="Acme")
    loser2 = marketo.admin.create_lead(email="l2@x.com", phone="+1 555 0100")
    token = rest.since_now()

    body = rest.post(f"/v1/leads/{winner}/merge.json", None, leadIds=f"{loser},{loser2}", mergeInCRM="false")

    assert body["success"] is True and "result" not in body
    kept = marketo.admin.get_lead(winner)
    assert kept is not None
    assert (kept["email"], kept["firstName"], kept["title"], kept["company"], kept["phone"]) == \
        ("w@x.com", "Win", "CEO", "Acme", "+1 555 0100")
    assert marketo.admin.get_lead(loser) is None and marketo.admin.get_lead(loser2) is None
    deleted, _ = rest.drain("/v1/activities/deletedleads.json", token)
    assert sorted(d["primaryAttributeValueId"] for d in deleted) == sorted([loser, loser2])
    merges, _ = rest.drain("/v1/activities.json", token, activityTypeIds="32")
    assert [(m["leadId"], m["activityTypeId"]) for m in merges] == [(winner, 32)]
    attrs = {a["name"]: a["value"] for a in merges[0]["attributes"]}
    assert attrs["Merge Ids"] == f"[{loser},{loser2}]" and attrs["Master Updated"] is True
    types = {t["id"]: t["name"] for t in rest.get("/v1/activities/types.json")["result"]}
    assert types[32] == "Merge Leads"


def test_marketo_merge_is_strict_on_bad_input(rest: Rest, marketo: MarketoEnv) -> None:
    a = marketo.admin.create_lead(email="a@x.com")
    b = marketo.admin.create_lead(email="b@x.com")
    c, d, e = (marketo.admin.create_lead(email=f"{n}@x.com") for n in "cde")
    cases: list[tuple[str, dict[str, str], str]] = [
        (f"/v1/leads/{a}/merge.json", {}, "701"),  # no loser named
        (f"/v1/leads/{a}/merge.json", {"leadId": str(b), "leadIds": str(b)}, "1003"),
        (f"/v1/leads/{a}/merge.json", {"leadId": str(a)}, "1003"),  # into itself
        (f"/v1/leads/{a}/merge.json", {"leadIds": f"{b},{b}"}, "1003"),
        (f"/v1/leads/{a}/merge.json", {"leadIds": f"{b},{c},{d},{e}"}, "1003"),  # over the cap
        (f"/v1/leads/{a}/merge.json", {"leadIds": "x"}, "1003"),
        (f"/v1/leads/{a}/merge.json", {"leadId": "999999"}, "1004"),
        ("/v1/leads/999999/merge.json", {"leadId": str(b)}, "1004"),
        ("/v1/leads/abc/merge.json", {"leadId": str(b)}, "1003"),
        (f"/v1/leads/{a}/merge.json", {"leadId": str(b), "mergeInCRM": "maybe"}, "1003"),
        (f"/v1/leads/{a}/merge.json", {"leadId": str(b), "mergeInCRM": "true"}, "1003"),
    ]
    for path, params, code in cases:
        assert error_code(rest.post(path, None, **params)) == code, (path, params)
    assert error_code(rest.get(f"/v1/leads/{a}/merge.json", leadId=str(b))) == "605"
    assert all(marketo.admin.get_lead(i) is not None for i in (a, b, c, d, e))  # nothing merged


def test_marketo_client_merges_and_reads_the_merge_feed(marketo_client: Any, marketo: MarketoEnv) -> None:
    client: MarketoClient = marketo_client()
    winner = marketo.admin.create_lead(email="w@x.com")
    loser = marketo.admin.create_lead(email="l@x.com")
    now = datetime.fromisoformat(marketo.admin.advance_clock(0).replace("+0000", "+00:00"))
    token = client.paging_token(now - timedelta(seconds=1))
    client.merge_leads(winner, [loser])
    marketo.admin.merge_leads(winner, [marketo.admin.create_lead(email="ui@x.com")])
    merges = [m for page in client.merged_leads(token) for m in page.merges]
    assert [m.winner for m in merges] == [winner, winner]
    assert merges[0].losers == (loser,) and len(merges[1].losers) == 1
