"""Dataverse emulator webhooks: registration through the Web API and the RemoteExecutionContext it POSTs."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from devhost.emulators.dataverse.principals import SALESPERSON_USER
from devhost.harness import eventually
from tests.test_dataverse_emulator import _part, _post_batch
from tests.webhook_receiver import Received, Receiver

Env = tuple[DataverseEmulator, DataverseAdmin]
CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
HEADER_AUTH = '<settings><setting name="x-dv-secret" value="s3cr3t" /></settings>'


@pytest.fixture
def api(dataverse: Env, dataverse_token: str) -> Iterator[httpx.Client]:
    emu = dataverse[0]
    with httpx.Client(base_url=emu.base_url + "/api/data/v9.2/",
                      headers={"Authorization": f"Bearer {dataverse_token}", "OData-Version": "4.0"},
                      verify=ssl.create_default_context(cafile=emu.ca_path), timeout=10) as client:
        yield client


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def created_id(resp: httpx.Response) -> str:
    assert resp.status_code == 204, resp.text
    return resp.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def message_id(api: httpx.Client, name: str) -> str:
    found = api.get("sdkmessages", params={"$select": "sdkmessageid", "$filter": f"name eq '{name}'"}).json()
    assert len(found["value"]) == 1
    return str(found["value"][0]["sdkmessageid"])


def filter_id(api: httpx.Client, entity: str, msg_id: str) -> str:
    flt = f"primaryobjecttypecode eq '{entity}' and _sdkmessageid_value eq {msg_id}"
    found = api.get("sdkmessagefilters", params={"$select": "sdkmessagefilterid", "$filter": flt}).json()
    assert len(found["value"]) == 1
    return str(found["value"][0]["sdkmessagefilterid"])


def endpoint(api: httpx.Client, url: str, authtype: int = 4, authvalue: str = "fn-key") -> str:
    return created_id(api.post("serviceendpoints", json={
        "name": "lead-sync", "url": url, "contract": 8, "authtype": authtype, "authvalue": authvalue,
        "messageformat": 2}))


def step(api: httpx.Client, endpoint_id: str, message: str, entity: str = "lead",
         filtering: str | None = None, images: tuple[tuple[str, int, str | None], ...] = ()) -> str:
    msg = message_id(api, message)
    body: dict[str, Any] = {
        "name": f"lead-sync: {message} of {entity}", "stage": 40, "mode": 1, "rank": 1, "supporteddeployment": 0,
        "asyncautodelete": True, "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
        "sdkmessageid@odata.bind": f"/sdkmessages({msg})",
        "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id(api, entity, msg)})"}
    if filtering is not None:
        body["filteringattributes"] = filtering
    step_id = created_id(api.post("sdkmessageprocessingsteps", json=body))
    for alias, imagetype, attributes in images:
        created_id(api.post("sdkmessageprocessingstepimages", json={
            "name": alias, "entityalias": alias, "imagetype": imagetype, "messagepropertyname": "Target",
            "attributes": attributes,
            "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({step_id})"}))
    return step_id


def new_lead(api: httpx.Client, **extra: Any) -> str:
    return created_id(api.post("leads", json={"firstname": "Ada", "lastname": "Lovelace",
                                              "emailaddress1": "ada@example.com", **extra}))


def doc(call: Received) -> dict[str, Any]:
    return dict(json.loads(call.body))


def kv(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {i["key"]: i["value"] for i in items}


def arrived(rx: Receiver, n: int) -> list[Received]:
    return eventually(lambda: (lambda c: c if len(c) >= n else None)(rx.snapshot()), timeout=60)


def settled(admin: DataverseAdmin) -> dict[str, Any]:
    """Webhook stats once nothing is queued or in flight."""
    return eventually(lambda: (lambda s: s if s["pending"] == 0 and s["in_flight"] == 0 else None)(
        admin.webhook_stats()), timeout=60)


def error_code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


# --- registration -------------------------------------------------------------------------------
def test_registration_crud_and_write_only_authvalue(api: httpx.Client, rx: Receiver) -> None:
    ep = endpoint(api, rx.url + "/dv", 5, HEADER_AUTH)
    got = api.get(f"serviceendpoints({ep})").json()
    assert got["contract"] == 8 and got["authtype"] == 5 and got["messageformat"] == 2
    assert got["authvalue"] is None  # write-only
    assert [e["serviceendpointid"] for e in api.get("serviceendpoints", params={"$filter": "contract eq 8"})
            .json()["value"]] == [ep]
    assert api.patch(f"serviceendpoints({ep})", json={"url": rx.url + "/dv2"}).status_code == 204
    assert api.get(f"serviceendpoints({ep})").json()["url"] == rx.url + "/dv2"

    sid = step(api, ep, "Update", filtering="emailaddress1,statuscode", images=(("post", 1, "emailaddress1"),))
    got = api.get(f"sdkmessageprocessingsteps({sid})").json()
    assert (got["stage"], got["mode"], got["filteringattributes"], got["_eventhandler_value"]) == \
        (40, 1, "emailaddress1,statuscode", ep)
    images = api.get("sdkmessageprocessingstepimages",
                     params={"$filter": f"_sdkmessageprocessingstepid_value eq {sid}"}).json()["value"]
    assert [(i["entityalias"], i["imagetype"]) for i in images] == [("post", 1)]
    assert api.patch(f"sdkmessageprocessingsteps({sid})", json={"filteringattributes": "lastname"}).status_code == 204

    # An endpoint with steps cannot go; deleting the step takes its images with it.
    assert api.delete(f"serviceendpoints({ep})").status_code == 400
    assert api.delete(f"sdkmessageprocessingsteps({sid})").status_code == 204
    assert api.get("sdkmessageprocessingstepimages").json()["value"] == []
    assert api.delete(f"serviceendpoints({ep})").status_code == 204


def test_registration_refuses_bad_input(api: httpx.Client, rx: Receiver) -> None:
    base = {"name": "x", "url": rx.url, "contract": 8, "authtype": 4, "authvalue": "k", "messageformat": 2}
    bad = [
        ({"contract": 2}, "0x80040203"),
        ({"authtype": 5, "authvalue": "x-dv-secret: s3cr3t"}, "0x80040203"),
        ({"authtype": 6, "authvalue": "<settings></settings>"}, "0x80040203"),
        ({"authtype": 3}, "0x80040203"),
        ({"authvalue": None}, "0x80040203"),
        ({"url": "https://hooks.example.com:8443/dv"}, "0x80040203"),
        ({"url": "ftp://hooks.example.com/dv"}, "0x80040203"),
        ({"contract": 99}, "0x8004431a"),
        ({"name": None}, "0x80040203"),
        ({"colour": "red"}, "0x80048d19"),
        ({"authvalue": "k" * 2049}, "0x80044331"),
    ]
    for change, code in bad:
        resp = api.post("serviceendpoints", json={**base, **change})
        assert resp.status_code == 400 and error_code(resp) == code, (change, resp.text)
    assert api.get("serviceendpoints").json()["value"] == []

    ep = endpoint(api, rx.url)
    create, update, delete = (message_id(api, m) for m in ("Create", "Update", "Delete"))
    step_base = {"name": "s", "stage": 40, "mode": 1, "rank": 1,
                 "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({ep})",
                 "sdkmessageid@odata.bind": f"/sdkmessages({update})",
                 "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id(api, 'lead', update)})"}
    bad_steps = [
        {"filteringattributes": "nosuchcolumn"},
        {"mode": 1, "stage": 20},
        {"stage": 15},
        {"sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id(api, 'lead', create)})"},
        {"sdkmessageid@odata.bind": f"/sdkmessages({create})",
         "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id(api, 'lead', create)})",
         "filteringattributes": "emailaddress1"},
        {"sdkmessageid@odata.bind": "/serviceendpoints(1)"},
    ]
    for change in bad_steps:
        resp = api.post("sdkmessageprocessingsteps", json={**step_base, **change})
        assert resp.status_code == 400 and error_code(resp).startswith("0x"), (change, resp.text)
    # A bind to a row that does not exist is Dataverse's 404 0x80040217 ("… Does Not Exist").
    resp = api.post("sdkmessageprocessingsteps",
                    json={**step_base, "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({uuid.uuid4()})"})
    assert resp.status_code == 404 and error_code(resp) == "0x80040217", resp.text
    assert api.get("sdkmessageprocessingsteps").json()["value"] == []

    on_create = step(api, ep, "Create")
    on_delete = step(api, ep, "Delete")
    for sid, imagetype in ((on_create, 0), (on_delete, 1), (on_delete, 2)):
        resp = api.post("sdkmessageprocessingstepimages", json={
            "name": "i", "entityalias": "i", "imagetype": imagetype, "messagepropertyname": "Target",
            "sdkmessageprocessingstepid@odata.bind": f"/sdkmessageprocessingsteps({sid})"})
        assert resp.status_code == 400 and error_code(resp) == "0x80040203", resp.text
    assert api.post("sdkmessages", json={"name": "Mine"}).status_code in {400, 403}
    assert api.patch(f"sdkmessages({delete})", json={"name": "Gone"}).status_code in {400, 403}


# --- what is sent --------------------------------------------------------------------------------
def test_update_posts_the_documented_context(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    ep = endpoint(api, rx.url + "/api/dv", 4, "fn key/+")
    sid = step(api, ep, "Update", images=(("post", 1, "emailaddress1,statuscode"), ("pre", 0, None)))
    lead = new_lead(api)
    assert api.patch(f"leads({lead})", json={"statuscode": 2, "revenue": 25000}).status_code == 204

    [call] = arrived(rx, 1)
    assert call.method == "POST" and call.path == "/api/dv" and call.query == {"code": ["fn key/+"]}
    h = call.headers
    assert h["content-type"].startswith("application/json")
    assert (h["x-ms-dynamics-entity-name"], h["x-ms-dynamics-request-name"]) == ("lead", "Update")
    assert h["x-ms-dynamics-organization"] and uuid.UUID(h["x-request-id"])
    body = doc(call)
    assert h["x-ms-correlation-request-id"] == body["CorrelationId"]
    assert (body["MessageName"], body["PrimaryEntityName"], body["PrimaryEntityId"]) == ("Update", "lead", lead)
    assert (body["Stage"], body["Mode"], body["Depth"]) == (40, 1, 1)
    assert body["OwningExtension"]["Id"] == sid and body["OwningExtension"]["LogicalName"] == \
        "sdkmessageprocessingstep"
    target = kv(body["InputParameters"])["Target"]
    assert target["__type"] == f"Entity:{CONTRACTS}" and target["LogicalName"] == "lead" and target["Id"] == lead
    attrs = kv(target["Attributes"])
    assert attrs["statuscode"] == {"__type": f"OptionSetValue:{CONTRACTS}", "Value": 2}
    assert attrs["revenue"] == {"__type": f"Money:{CONTRACTS}", "Value": 25000.0}
    assert attrs["leadid"] == lead and attrs["modifiedon"].startswith("/Date(")
    assert attrs["modifiedby"]["__type"] == f"EntityReference:{CONTRACTS}"
    # A Web API change is the application user's: the one WhoAmI names.
    who = api.get("WhoAmI").json()["UserId"]
    assert attrs["modifiedby"]["Id"] == body["InitiatingUserId"] == body["UserId"] == who
    assert "emailaddress1" not in attrs  # Target carries only what the request set
    post = kv(body["PostEntityImages"])["post"]
    assert kv(post["Attributes"]) == {"emailaddress1": "ada@example.com", "leadid": lead,
                                      "statuscode": {"__type": f"OptionSetValue:{CONTRACTS}", "Value": 2}}
    assert kv(post["FormattedValues"]) == {"statuscode": "Contacted"}
    pre = kv(kv(body["PreEntityImages"])["pre"]["Attributes"])
    assert pre["statuscode"]["Value"] == 1 and pre["lastname"] == "Lovelace"
    assert body["OutputParameters"] == [] and body["ParentContext"]["Stage"] == 30
    assert settled(dataverse[1])["sent"] == 1


def test_batch_create_and_delete_with_header_auth(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    ep = endpoint(api, rx.url + "/dv", 5, HEADER_AUTH)
    step(api, ep, "Create")
    step(api, ep, "Delete", images=(("pre", 0, "emailaddress1"),))
    resp = _post_batch(api, [[_part("POST", "/api/data/v9.2/leads", {"lastname": "A", "emailaddress1": "a@x.io"}),
                              _part("POST", "/api/data/v9.2/leads", {"lastname": "B"})]])
    assert resp.status_code == 200
    calls = arrived(rx, 2)
    ids = set()
    for call in calls:
        assert call.headers["x-dv-secret"] == "s3cr3t" and call.query == {}
        body = doc(call)
        assert body["MessageName"] == "Create" and call.headers["x-ms-dynamics-request-name"] == "Create"
        ids.add(kv(body["OutputParameters"])["id"])
        assert kv(kv(body["InputParameters"])["Target"]["Attributes"])["createdon"].startswith("/Date(")
    assert len(ids) == 2

    victim = sorted(ids)[0]
    row = api.get(f"leads({victim})").json()
    assert api.delete(f"leads({victim})").status_code == 204
    call = arrived(rx, 3)[2]
    body = doc(call)
    assert body["MessageName"] == "Delete" and body["PostEntityImages"] == []
    assert kv(body["InputParameters"])["Target"] == {
        "__type": f"EntityReference:{CONTRACTS}", "Id": victim, "KeyAttributes": [], "LogicalName": "lead",
        "Name": None, "RowVersion": None}
    pre = kv(kv(body["PreEntityImages"])["pre"]["Attributes"])
    assert pre == {"leadid": victim, **({"emailaddress1": row["emailaddress1"]} if row["emailaddress1"] else {})}


def test_rolled_back_change_set_sends_nothing(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    step(api, endpoint(api, rx.url), "Create")
    resp = _post_batch(api, [[_part("POST", "/api/data/v9.2/leads", {"lastname": "A"}),
                              _part("POST", "/api/data/v9.2/leads", {"lastname": "B" * 51})]])
    assert resp.status_code == 400
    marker = new_lead(api)
    [call] = arrived(rx, 1)
    assert doc(call)["PrimaryEntityId"] == marker
    assert settled(dataverse[1])["submitted"] == 1


def test_filteringattributes_choose_which_updates_fire(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    step(api, endpoint(api, rx.url), "Update", filtering="emailaddress1,statuscode")
    lead = new_lead(api)
    assert api.patch(f"leads({lead})", json={"jobtitle": "CTO"}).status_code == 204
    assert api.patch(f"leads({lead})", json={"emailaddress1": "ada@new.example.com"}).status_code == 204
    [call] = arrived(rx, 1)
    assert "emailaddress1" in kv(kv(doc(call)["InputParameters"])["Target"]["Attributes"])
    stats = settled(dataverse[1])
    assert stats["submitted"] == 1 and len(rx.snapshot()) == 1


def test_admin_edits_qualify_and_bulk_actions_fire(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    admin = dataverse[1]
    ep = endpoint(api, rx.url + "/q", 6, '<settings><setting name="k" value="v 1" /></settings>')
    step(api, ep, "Update")
    step(api, ep, "Create", entity="contact")
    lead = admin.create("leads", {"lastname": "Admin", "emailaddress1": "adm@example.com"})["leadid"]
    admin.update("leads", lead, {"jobtitle": "Buyer"})
    contact = admin.qualify(lead)
    calls = arrived(rx, 3)
    seen = sorted((c.headers["x-ms-dynamics-entity-name"], doc(c)["MessageName"], doc(c)["PrimaryEntityId"])
                  for c in calls)
    assert seen == sorted([("lead", "Update", lead), ("lead", "Update", lead), ("contact", "Create", contact)])
    assert all(c.query == {"k": ["v 1"]} for c in calls)
    # The admin API's edits are a salesperson's, not the application user's: events tell them apart.
    who = api.get("WhoAmI").json()["UserId"]
    assert {doc(c)["InitiatingUserId"] for c in calls} == {SALESPERSON_USER} != {who}
    qualified = [kv(kv(doc(c)["InputParameters"])["Target"]["Attributes"]) for c in calls
                 if doc(c)["MessageName"] == "Update" and "statecode" in
                 kv(kv(doc(c)["InputParameters"])["Target"]["Attributes"])]
    assert qualified and qualified[0]["statecode"]["Value"] == 1

    resp = api.post("leads/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.lead", "leadid": lead, "subject": "bulk"}]})
    assert resp.status_code == 204
    last = arrived(rx, 4)[3]
    assert doc(last)["InitiatingUserId"] == who
    assert kv(kv(doc(last)["InputParameters"])["Target"]["Attributes"])["subject"] == "bulk"


def test_an_admin_bulk_update_changes_every_row_and_fires_for_each(dataverse: Env, api: httpx.Client,
                                                                    rx: Receiver) -> None:
    """An import's update (what the benchmark's burst uses): one commit, one call per row."""
    admin = dataverse[1]
    step(api, endpoint(api, rx.url + "/bulk"), "Update", filtering="jobtitle")
    leads = admin.bulk("leads", [{"lastname": f"Bulk{i}", "emailaddress1": f"bulk{i}@example.com"} for i in range(3)])
    assert admin.bulk_update("leads", [{"leadid": lid, "jobtitle": f"T{i}"} for i, lid in enumerate(leads)]) == 3
    assert [(admin.get("leads", lid) or {}).get("jobtitle") for lid in leads] == ["T0", "T1", "T2"]
    assert sorted(doc(c)["PrimaryEntityId"] for c in arrived(rx, 3)) == sorted(leads)
    with pytest.raises(httpx.HTTPStatusError):  # one unknown row: nothing is changed
        admin.bulk_update("leads", [{"leadid": leads[0], "jobtitle": "X"},
                                    {"leadid": str(uuid.uuid4()), "jobtitle": "Y"}])
    assert (admin.get("leads", leads[0]) or {}).get("jobtitle") == "T0"


def test_change_returns_before_the_receiver_answers(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    step(api, endpoint(api, rx.url), "Create")
    rx.gate.clear()  # the receiver holds every call until released
    first = new_lead(api)
    arrived(rx, 1)
    second = new_lead(api)  # answered while the first call is still waiting
    rx.gate.set()
    assert {doc(c)["PrimaryEntityId"] for c in arrived(rx, 2)} == {first, second}


def test_retries_once_only_on_502_503_504(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    admin = dataverse[1]
    sid = step(api, endpoint(api, rx.url), "Create")
    rx.statuses.extend([503, 200])
    new_lead(api)
    first, again = arrived(rx, 2)
    assert first.body == again.body and first.headers["x-request-id"] == again.headers["x-request-id"]
    stats = settled(admin)
    assert (stats["attempts"], stats["retries"], stats["sent"]) == (2, 1, 1)

    for statuses in ([500], [502, 504], [401]):  # one at a time: each call meets its own answers
        before = len(rx.snapshot())
        rx.statuses.extend(statuses)
        new_lead(api)
        arrived(rx, before + len(statuses))
        stats = settled(admin)
    # 500: one attempt; 502 then 504: a retry that fails too; 401: one attempt.
    assert (stats["attempts"], stats["retries"], stats["sent"], stats["failed"]) == (6, 2, 1, 3)
    assert stats["by_status"] == {"503": 1, "200": 1, "500": 1, "502": 1, "504": 1, "401": 1}
    assert len(rx.snapshot()) == 6
    # Each failed call leaves a Failed system job owned by the step.
    jobs = api.get("asyncoperations", params={
        "$filter": f"statuscode eq 31 and _owningextensionid_value eq {sid}"}).json()["value"]
    assert sorted(j["message"] for j in jobs) == [f"Webhook call failed: HTTP {s}" for s in (401, 500, 504)]
    assert api.post("asyncoperations", json={"name": "x"}).status_code in {400, 403}


def test_faults_drop_duplicate_delay_reorder(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    admin = dataverse[1]
    step(api, endpoint(api, rx.url), "Create")
    admin.webhook_fault("drop")
    dropped = new_lead(api)
    kept = new_lead(api)
    assert [doc(c)["PrimaryEntityId"] for c in arrived(rx, 1)] == [kept]
    assert settled(admin)["dropped"] == 1 and dropped not in {doc(c)["PrimaryEntityId"] for c in rx.snapshot()}

    admin.webhook_fault("duplicate")
    twice = new_lead(api)
    calls = arrived(rx, 3)[1:]
    assert [doc(c)["PrimaryEntityId"] for c in calls] == [twice, twice] and calls[0].body == calls[1].body

    admin.webhook_fault("delay", delay_s=0.5)
    late = new_lead(api)
    assert doc(arrived(rx, 4)[3])["PrimaryEntityId"] == late

    admin.webhook_fault("reorder")  # the next call is held back until the one after it was delivered
    a = new_lead(api)
    b = new_lead(api)
    assert [doc(c)["PrimaryEntityId"] for c in arrived(rx, 6)[4:]] == [b, a]
    stats = settled(admin)
    assert (stats["duplicated"], stats["delayed"], stats["reordered"]) == (1, 1, 1)

    with pytest.raises(httpx.HTTPStatusError):
        admin.webhook_fault("explode")
    admin.webhook_fault("drop", rate=1.0)
    new_lead(api)
    assert settled(admin)["dropped"] == 2
    admin.clear_webhook_faults()
    last = new_lead(api)
    assert doc(arrived(rx, 7)[6])["PrimaryEntityId"] == last
    settled(admin)
    assert admin.stats()["webhooks"]["sent"] == 7


def test_disabled_step_and_reset_stop_delivery(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    admin = dataverse[1]
    sid = step(api, endpoint(api, rx.url), "Create")
    assert api.patch(f"sdkmessageprocessingsteps({sid})", json={"statecode": 0, "statuscode": 2}).status_code == 400
    assert api.patch(f"sdkmessageprocessingsteps({sid})", json={"statecode": 1}).status_code == 204
    assert api.get(f"sdkmessageprocessingsteps({sid})").json()["statuscode"] == 2
    new_lead(api)
    assert settled(admin)["submitted"] == 0
    assert api.patch(f"sdkmessageprocessingsteps({sid})", json={"statecode": 0}).status_code == 204
    enabled = new_lead(api)
    assert doc(arrived(rx, 1)[0])["PrimaryEntityId"] == enabled
    admin.reset()
    assert api.get("sdkmessageprocessingsteps").json()["value"] == []
    assert len(api.get("sdkmessages").json()["value"]) == 3
    new_lead(api)
    assert settled(admin)["submitted"] == 0 and len(rx.snapshot()) == 1


def test_oversized_context_is_trimmed_and_flagged(dataverse: Env, api: httpx.Client, rx: Receiver) -> None:
    admin = dataverse[1]
    step(api, endpoint(api, rx.url), "Update", images=(("post", 1, None),))
    lead = new_lead(api)
    admin.update("leads", lead, {"jobtitle": "x" * 300_000})  # admin edits skip the column's max length
    [call] = arrived(rx, 1)
    assert call.headers["x-ms-dynamics-msg-size-exceeded"]
    body = doc(call)
    assert (body["InputParameters"], body["PostEntityImages"], body["PreEntityImages"], body["ParentContext"]) == \
        ([], [], [], None)
    assert (body["PrimaryEntityId"], body["MessageName"]) == (lead, "Update")
    admin.update("leads", lead, {"jobtitle": "short"})
    assert "x-ms-dynamics-msg-size-exceeded" not in arrived(rx, 2)[1].headers
