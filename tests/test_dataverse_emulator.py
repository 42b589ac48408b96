"""The Dataverse emulator against the wire spec (Microsoft's Dataverse Web API documentation), over real HTTPS."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients import odata

Env = tuple[DataverseEmulator, DataverseAdmin]
ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0", "If-None-Match": "null"}


@pytest.fixture
def api(dataverse: Env, dataverse_token: str) -> Iterator[httpx.Client]:
    emu = dataverse[0]
    with httpx.Client(
        base_url=emu.base_url + "/api/data/v9.2/",
        headers={**ODATA, "Authorization": f"Bearer {dataverse_token}"},
        verify=ssl.create_default_context(cafile=emu.ca_path),
        timeout=10,
    ) as client:
        yield client


def tls(emu: DataverseEmulator) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=emu.ca_path)


def lead(i: int = 0, **extra: object) -> dict[str, object]:
    return {"firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"p{i}@example.com", **extra}


# --- auth -------------------------------------------------------------------------------------
def test_openid_configuration_points_at_this_server(dataverse: Env) -> None:
    emu = dataverse[0]
    doc = httpx.get(f"{emu.authority}/v2.0/.well-known/openid-configuration", verify=tls(emu)).json()
    assert doc["token_endpoint"] == f"{emu.authority}/oauth2/v2.0/token"
    assert doc["authorization_endpoint"].startswith(emu.authority)
    assert doc["issuer"] == f"{emu.authority}/v2.0"
    bad = httpx.get(f"{emu.base_url}/other-tenant/v2.0/.well-known/openid-configuration", verify=tls(emu))
    assert bad.status_code == 400


def test_token_endpoint_errors_follow_entra_shape(dataverse: Env) -> None:
    emu = dataverse[0]
    form = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": "wrong",
            "scope": f"{emu.base_url}/.default"}
    resp = httpx.post(f"{emu.authority}/oauth2/v2.0/token", data=form, verify=tls(emu))
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["error_description"].startswith("AADSTS7000215")
    form.update(client_secret=emu.client_secret or "", scope=f"{emu.base_url}/user.read")
    resp = httpx.post(f"{emu.authority}/oauth2/v2.0/token", data=form, verify=tls(emu))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_scope"
    form["scope"] = f"{emu.base_url}/.default"
    ok = httpx.post(f"{emu.authority}/oauth2/v2.0/token", data=form, verify=tls(emu)).json()
    assert ok["token_type"] == "Bearer" and ok["expires_in"] > 0 and ok["access_token"].count(".") == 2


def test_api_without_valid_token_is_401_with_www_authenticate(dataverse: Env, dataverse_token: str) -> None:
    emu, admin = dataverse
    url = f"{emu.base_url}/api/data/v9.2/WhoAmI"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        resp = httpx.get(url, headers=headers, verify=tls(emu))
        assert resp.status_code == 401 and resp.content == b""
        challenge = resp.headers["WWW-Authenticate"]
        assert challenge.startswith(f"Bearer authorization_uri={emu.authority}/oauth2/authorize")
        assert f"resource_id={emu.base_url}/" in challenge
    good = httpx.get(url, headers={"Authorization": f"Bearer {dataverse_token}"}, verify=tls(emu))
    assert good.status_code == 200 and set(good.json()) >= {"BusinessUnitId", "UserId", "OrganizationId"}
    assert admin.revoke_tokens() >= 1
    assert httpx.get(url, headers={"Authorization": f"Bearer {dataverse_token}"}, verify=tls(emu)).status_code == 401


def test_expired_token_is_401(dataverse: Env) -> None:
    emu = dataverse[0]
    assert emu.emulator is not None
    token = emu.emulator.issue_token()
    url, headers = f"{emu.base_url}/api/data/v9.2/WhoAmI", {"Authorization": f"Bearer {token}"}
    assert httpx.get(url, headers=headers, verify=tls(emu)).status_code == 200
    issued_at = time.time()
    emu.emulator.clock = lambda: issued_at + emu.emulator.token_lifetime_s + 1  # type: ignore[union-attr]
    try:
        assert httpx.get(url, headers=headers, verify=tls(emu)).status_code == 401
    finally:
        emu.emulator.clock = time.time


# --- query --------------------------------------------------------------------------------------
def test_query_envelope_select_and_etags(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    admin.bulk("leads", [lead(i) for i in range(3)])
    resp = api.get("leads", params={"$select": "firstname,emailaddress1"})
    assert resp.status_code == 200
    assert resp.headers["OData-Version"] == "4.0"
    assert resp.headers["Content-Type"].startswith("application/json; odata.metadata=minimal")
    doc = resp.json()
    assert doc["@odata.context"].endswith("/api/data/v9.2/$metadata#leads(firstname,emailaddress1)")
    assert len(doc["value"]) == 3
    for row in doc["value"]:
        assert set(row) == {"@odata.etag", "firstname", "emailaddress1", "leadid"}
        stored = admin.get("leads", row["leadid"])
        assert stored is not None and row["@odata.etag"] == f'W/"{stored["versionnumber"]}"'


def test_unknown_column_and_unknown_set(api: httpx.Client) -> None:
    resp = api.get("leads", params={"$select": "firstname,nope"})
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    assert message == "Could not find a property named 'nope' on type 'Microsoft.Dynamics.CRM.lead'."
    resp = api.get("foos")
    assert resp.status_code == 404
    assert resp.json()["error"]["message"] == "Resource not found for the segment 'foos'."


def test_filter_semantics(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    ids = admin.bulk("leads", [
        {"firstname": "Ann", "lastname": "O'Bryan", "emailaddress1": "Ann@X.com", "leadsourcecode": 8},
        {"firstname": "Bob", "lastname": "Smith", "emailaddress1": "bob@x.com", "leadsourcecode": 1},
        {"firstname": "Cy", "lastname": "Smith", "emailaddress1": None},
    ])

    def names(flt: str) -> set[str]:
        resp = api.get("leads", params={"$filter": flt, "$select": "firstname"})
        assert resp.status_code == 200, resp.text
        return {r["firstname"] for r in resp.json()["value"]}

    assert names("emailaddress1 eq 'ann@x.com'") == {"Ann"}  # case-insensitive
    assert names("lastname eq 'O''Bryan'") == {"Ann"}
    assert names("lastname eq 'smith' and not (firstname eq 'bob')") == {"Cy"}
    assert names("emailaddress1 eq null") == {"Cy"}
    assert names("leadsourcecode ge 2 or firstname eq 'Cy'") == {"Ann", "Cy"}
    assert names(f"leadid eq {ids[1]}") == {"Bob"}
    assert names("createdon gt 2000-01-01T00:00:00Z") == {"Ann", "Bob", "Cy"}
    assert names('Microsoft.Dynamics.CRM.In(PropertyName=\'emailaddress1\',PropertyValues=["BOB@x.com","ann@x.com"])') \
        == {"Ann", "Bob"}
    assert names("firstname in ('ann','cy')") == {"Ann", "Cy"}
    assert names("startswith(lastname,'o''b')") == {"Ann"}
    assert names("firstname eq lastname") == set()
    bad = api.get("leads", params={"$filter": "lastname eq 'O'Bryan'"})
    assert bad.status_code == 400 and "error" in bad.json()
    bad = api.get("leads", params={"$filter": "lastname eq 'unterminated"})
    assert bad.json()["error"]["message"].startswith("There is an unterminated literal at position 12")
    for broken in ("firstname eq", "(firstname eq 'a'", "leadsourcecode eq 'x'", "foo eq 1", "firstname xx 'a'"):
        assert api.get("leads", params={"$filter": broken}).status_code == 400, broken


def test_paging_with_maxpagesize_and_nextlink(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    ids = set(admin.bulk("leads", [lead(i) for i in range(25)]))
    seen: list[str] = []
    sizes = []
    url: str | None = "leads?$select=lastname"
    while url:
        resp = api.get(url, headers={"Prefer": "odata.maxpagesize=10"})
        assert resp.headers["Preference-Applied"] == "odata.maxpagesize=10"
        doc = resp.json()
        sizes.append(len(doc["value"]))
        seen += [r["leadid"] for r in doc["value"]]
        url = doc.get("@odata.nextLink")
        if url:
            assert "$skiptoken=" in url and "$select=lastname" in url
    assert sizes == [10, 10, 5] and len(seen) == 25 and set(seen) == ids


def test_top_is_honoured_without_maxpagesize(dataverse: Env, api: httpx.Client) -> None:
    dataverse[1].bulk("leads", [lead(i) for i in range(5)])
    doc = api.get("leads", params={"$top": "2", "$orderby": "firstname desc", "$select": "firstname"}).json()
    assert [r["firstname"] for r in doc["value"]] == ["F4", "F3"] and "@odata.nextLink" not in doc


# --- change tracking -------------------------------------------------------------------------------
def test_change_tracking_full_read_then_delta(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    ids = admin.bulk("leads", [lead(i) for i in range(25)])
    prefer = "odata.track-changes,odata.maxpagesize=10"
    url: str | None = "leads?$select=firstname"
    delta_link = None
    pages = 0
    while url:
        resp = api.get(url, headers={"Prefer": prefer})
        assert "odata.track-changes" in resp.headers["Preference-Applied"]
        doc = resp.json()
        pages += 1
        url = doc.get("@odata.nextLink")
        assert ("@odata.deltaLink" in doc) == (url is None)
        delta_link = doc.get("@odata.deltaLink")
    assert pages == 3 and delta_link and "$deltatoken=" in delta_link
    token = parse_qs(urlsplit(delta_link).query)["$deltatoken"][0]
    assert "!" in token  # <version>!<MM/dd/yyyy HH:mm:ss>

    admin.update("leads", ids[0], {"firstname": "Changed"})
    admin.delete("leads", ids[1])
    new = admin.create("leads", lead(99))["leadid"]
    ghost = admin.create("leads", lead(100))["leadid"]
    admin.delete("leads", ghost)  # created and deleted between polls → still reported as deleted
    doc = api.get(delta_link, headers={"Prefer": "odata.track-changes"}).json()
    assert doc["@odata.context"].endswith("$metadata#leads(firstname)/$delta")
    changed = [r for r in doc["value"] if "reason" not in r]
    deleted = [r for r in doc["value"] if "reason" in r]
    assert [r["leadid"] for r in changed] == [ids[0], new]
    assert all(r["@odata.etag"].startswith('W/"') for r in changed)
    assert doc["value"][: len(changed)] == changed  # upserts first, then deletions
    assert {d["id"] for d in deleted} == {ids[1], ghost}
    assert all(d["reason"] == "deleted" and d["@odata.context"].endswith("$metadata#leads/$deletedEntity")
               for d in deleted)
    again = api.get(doc["@odata.deltaLink"], headers={"Prefer": "odata.track-changes"}).json()
    assert again["value"] == [] and "@odata.deltaLink" in again


def test_delta_pages_and_rejects_query_options(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    admin.bulk("leads", [lead(i) for i in range(3)])
    first = api.get("leads", headers={"Prefer": "odata.track-changes"}).json()
    admin.bulk("leads", [lead(i) for i in range(12)])
    url: str | None = first["@odata.deltaLink"]
    total, pages = 0, 0
    while url:
        doc = api.get(url, headers={"Prefer": "odata.track-changes,odata.maxpagesize=5"}).json()
        total += len(doc["value"])
        pages += 1
        url = doc.get("@odata.nextLink")
    assert (total, pages) == (12, 3)
    for option in ("$filter=firstname eq 'x'", "$orderby=firstname", "$top=3"):
        resp = api.get(f"leads?{option}", headers={"Prefer": "odata.track-changes"})
        assert resp.status_code == 400
        assert "isn't supported when Change Tracking is enabled" in resp.json()["error"]["message"]


def test_expired_delta_token(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    link = api.get("leads", headers={"Prefer": "odata.track-changes"}).json()["@odata.deltaLink"]
    admin.expire_delta_tokens()
    for url in (link, "leads?$deltatoken=garbage"):
        resp = api.get(url, headers={"Prefer": "odata.track-changes"})
        assert resp.status_code == 400
        assert resp.json()["error"] == {
            "code": "0x80044352",
            "message": "Version stamp associated with the client has expired. Please perform a full sync.",
        }


# --- CRUD and conditional operations -----------------------------------------------------------------
def test_create_retrieve_delete(api: httpx.Client) -> None:
    resp = api.post("leads", json=lead(1))
    assert resp.status_code == 204 and resp.content == b""
    entity_url = resp.headers["OData-EntityId"]
    lead_id = entity_url.rsplit("(", 1)[1].rstrip(")")
    resp = api.post("leads?$select=fullname", json=lead(2), headers={"Prefer": "return=representation"})
    assert resp.status_code == 201 and resp.json()["fullname"] == "F2 L2"
    own = str(uuid.uuid4())
    assert api.post("leads", json={"leadid": own, "lastname": "Mine"}).headers["OData-EntityId"].endswith(f"({own})")
    doc = api.get(f"leads({lead_id})", params={"$select": "fullname"}).json()
    assert doc["fullname"] == "F1 L1" and doc["leadid"] == lead_id and doc["@odata.etag"].startswith('W/"')
    assert doc["@odata.context"].endswith("$metadata#leads(fullname)/$entity")
    cached = api.get(f"leads({lead_id})", headers={"If-None-Match": doc["@odata.etag"]})
    assert cached.status_code == 304
    assert api.delete(f"leads({lead_id})").status_code == 204
    missing = api.get(f"leads({lead_id})")
    assert missing.status_code == 404
    assert missing.json()["error"] == {"code": "0x80040217", "message": f"lead With Id = {lead_id} Does Not Exist"}
    assert api.delete(f"leads({lead_id})").status_code == 404


def test_patch_is_upsert_and_conditional_headers(api: httpx.Client) -> None:
    rid = str(uuid.uuid4())
    assert api.patch(f"leads({rid})", json={"lastname": "Created"}, headers={"If-Match": "*"}).status_code == 404
    assert api.patch(f"leads({rid})", json={"lastname": "Created"}).status_code == 204  # upsert creates
    etag = api.get(f"leads({rid})").json()["@odata.etag"]
    assert api.patch(f"leads({rid})", json={"firstname": "A"}, headers={"If-Match": etag}).status_code == 204
    stale = api.patch(f"leads({rid})", json={"firstname": "B"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "0x80060882"
    assert stale.json()["error"]["message"] == \
        "The version of the existing record doesn't match the RowVersion property provided."
    dup = api.patch(f"leads({rid})", json={"firstname": "C"}, headers={"If-None-Match": "*"})
    assert dup.status_code == 412
    assert dup.json()["error"] == {"code": "0x80040237", "message": "A record with matching key values already exists."}
    other = str(uuid.uuid4())
    assert api.patch(f"leads({other})", json={"lastname": "N"}, headers={"If-None-Match": "*"}).status_code == 204
    resp = api.patch(f"leads({rid})", json={"firstname": "D"}, headers={"Prefer": "return=representation"})
    assert resp.status_code == 200 and resp.json()["firstname"] == "D"


def test_alternate_key_needs_definition_then_upserts(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    url = "leads" + odata.key_segment({"emailaddress1": "o'hara@x.com"})
    assert api.patch(url, json={"lastname": "O'Hara"}).status_code == 400
    admin.define_key("lead", ["emailaddress1"])
    assert api.get(url).status_code == 404
    assert api.get(url).json()["error"]["code"] == "0x80060891"
    assert api.patch(url, json={"lastname": "O'Hara"}).status_code == 204
    assert api.patch("leads" + odata.key_segment({"emailaddress1": "O'HARA@x.com"}),
                     json={"firstname": "Sean"}).status_code == 204
    rows = admin.find("leads", emailaddress1="o'hara@x.com")
    assert len(rows) == 1 and rows[0]["firstname"] == "Sean" and rows[0]["lastname"] == "O'Hara"
    assert api.get(url).json()["firstname"] == "Sean"
    dup = api.post("leads", json={"lastname": "X", "emailaddress1": "o'hara@x.com"})
    assert dup.status_code == 412 and dup.json()["error"]["code"] == "0x80060892"


# --- validation ----------------------------------------------------------------------------------
def test_validation_errors(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    resp = api.post("leads", json={"firstname": "x" * 51})
    assert resp.status_code == 400
    assert resp.json()["error"] == {
        "code": "0x80044331",
        "message": "A validation error occurred.  The length of the 'firstname' attribute of the 'lead' entity "
                   "exceeded the maximum allowed length of '50'.",
    }
    assert api.post("leads", json={"emailaddress1": "not-an-email"}).status_code == 400
    bad_option = api.post("leads", json={"leadsourcecode": 99})
    assert bad_option.status_code == 400 and "outside the valid range" in bad_option.json()["error"]["message"]
    unknown = api.post("leads", json={"nickname": "x"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "0x80048d19"
    for readonly in ({"fullname": "a b"}, {"createdon": "2024-01-01T00:00:00Z"}, {"versionnumber": 1}):
        assert api.post("leads", json=readonly).status_code == 400
    assert api.post("contacts", json={"new_synctomkto": "yes"}).status_code == 400
    # ApplicationRequired (lastname) is served but not enforced by the Web API.
    assert api.post("contacts", json={"firstname": "NoLast"}).status_code == 204
    admin.set_metadata("contact", "lastname", required_level="SystemRequired", max_length=5)
    assert api.post("contacts", json={"firstname": "NoLast"}).status_code == 400
    assert api.post("contacts", json={"lastname": "TooLong"}).json()["error"]["code"] == "0x80044331"
    assert api.post("contacts", json={"lastname": "Ok", "new_synctomkto": True}).status_code == 204


def test_metadata_endpoints(dataverse: Env, api: httpx.Client) -> None:
    base = "EntityDefinitions(LogicalName='lead')/Attributes"
    items = {a["LogicalName"]: a for a in api.get(base).json()["value"]}
    assert items["lastname"]["RequiredLevel"]["Value"] == "ApplicationRequired"
    assert items["fullname"]["IsValidForCreate"] is False
    assert items["new_synctomkto"]["AttributeType"] == "Boolean"
    cast = api.get(f"{base}/Microsoft.Dynamics.CRM.StringAttributeMetadata",
                   params={"$select": "LogicalName,MaxLength,FormatName"})
    strings = {a["LogicalName"]: a for a in cast.json()["value"]}
    assert strings["emailaddress1"]["MaxLength"] == 100 and strings["emailaddress1"]["FormatName"]["Value"] == "Email"
    assert "leadsourcecode" not in strings
    pick = api.get(f"{base}(LogicalName='leadsourcecode')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                   params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"}).json()
    assert [o["Value"] for o in pick["OptionSet"]["Options"]] == list(range(1, 11))
    contact = {a["LogicalName"] for a in api.get("EntityDefinitions(LogicalName='contact')/Attributes").json()["value"]}
    assert {"new_synctomkto", "parentcustomerid", "originatingleadid"} <= contact
    dataverse[1].set_metadata("lead", "firstname", max_length=10)
    strings = api.get(f"{base}/Microsoft.Dynamics.CRM.StringAttributeMetadata").json()["value"]
    assert next(a for a in strings if a["LogicalName"] == "firstname")["MaxLength"] == 10


# --- service protection and faults ----------------------------------------------------------------
def test_request_limit_gives_429_with_retry_after(dataverse: Env, api: httpx.Client) -> None:
    dataverse[1].set_limits(requests_per_window=3)
    statuses = [api.get("WhoAmI").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = api.get("WhoAmI")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"]["code"] == "0x80072322"
    assert resp.json()["error"]["message"].startswith("Number of requests exceeded the limit of 3 over time window")


def test_concurrency_limit_is_immediate(dataverse: Env, api: httpx.Client) -> None:
    emu, admin = dataverse
    assert emu.emulator is not None
    admin.set_limits(concurrency=1)
    admin.fault("slow", count=1, delay_s=5.0)  # held in flight until the second call has been refused
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(api.get("WhoAmI").status_code))
    slow.start()
    deadline = time.monotonic() + 30
    while emu.emulator.in_flight < 1 and time.monotonic() < deadline:  # the slow call is in flight
        time.sleep(0.01)
    resp = api.get("WhoAmI")
    slow.join()
    assert results == [200] and resp.status_code == 429
    assert resp.json()["error"]["code"] == "0x80072326"


def test_injected_faults_and_stats(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    admin.fault("http503", count=1)
    admin.fault("429", count=1, retry_after=7)
    assert api.get("WhoAmI").status_code == 503
    resp = api.get("WhoAmI")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"
    assert api.get("WhoAmI").status_code == 200
    admin.fault("drop", count=1)
    with pytest.raises(httpx.TransportError):
        api.get("leads")
    admin.clear_faults()
    stats = admin.stats()
    assert stats["requests_by_operation"]["GET WhoAmI"] == 3
    assert stats["responses_by_status"]["503"] == 1 and stats["total_requests"] == 4


# --- $batch -----------------------------------------------------------------------------------------
def _part(method: str, url: str, body: dict[str, object] | None = None, content_id: str | None = None) -> str:
    head = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    if content_id:
        head += f"Content-ID: {content_id}\r\n"
    req = f"{method} {url} HTTP/1.1\r\n"
    if body is not None:
        req += "Content-Type: application/json; type=entry\r\n\r\n" + json.dumps(body)
    else:
        req += "\r\n"
    return head + "\r\n" + req


def _batch(items: list[str | list[str]]) -> tuple[str, str]:
    out = []
    for item in items:
        if isinstance(item, list):
            cs = "changeset_" + uuid.uuid4().hex
            inner = "".join(f"--{cs}\r\n{p}\r\n" for p in item)
            out.append(f"--batch_x\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n{inner}--{cs}--\r\n")
        else:
            out.append(f"--batch_x\r\n{item}\r\n")
    return "multipart/mixed; boundary=batch_x", "".join(out) + "--batch_x--\r\n"


def _post_batch(api: httpx.Client, items: list[str | list[str]], prefer: str | None = None) -> httpx.Response:
    ctype, body = _batch(items)
    headers = {"Content-Type": ctype}
    if prefer:
        headers["Prefer"] = prefer
    return api.post("$batch", content=body.encode(), headers=headers)


def test_batch_stops_at_first_failure_without_continue_on_error(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    items: list[str | list[str]] = [
        _part("POST", "/api/data/v9.2/leads", lead(1)),
        _part("POST", "/api/data/v9.2/leads", {"bogus": 1}),
        _part("POST", "/api/data/v9.2/leads", lead(3)),
    ]
    resp = _post_batch(api, items)
    assert resp.status_code == 400
    assert "boundary=batchresponse_" in resp.headers["Content-Type"]
    parts = odata.decode_batch(resp.headers["Content-Type"], resp.content)
    assert [p.status for p in parts] == [400]
    assert [r["firstname"] for r in admin.find("leads")] == ["F1"]


def test_batch_continue_on_error_reports_every_part(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    items: list[str | list[str]] = [
        _part("POST", "/api/data/v9.2/leads", lead(1)),
        _part("POST", "leads", {"firstname": "x" * 60}),
        _part("GET", "/api/data/v9.2/leads?$select=firstname"),
    ]
    resp = _post_batch(api, items, "odata.continue-on-error")
    assert resp.status_code == 200
    parts = odata.decode_batch(resp.headers["Content-Type"], resp.content)
    assert [p.status for p in parts] == [204, 400, 200]
    assert parts[1].json()["error"]["code"] == "0x80044331"
    assert parts[0].headers["odata-entityid"].startswith(dataverse[0].base_url)
    assert [r["firstname"] for r in parts[2].json()["value"]] == ["F1"]
    assert len(admin.find("leads")) == 1


def test_change_set_rolls_back_and_content_id_references(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    failing = [_part("POST", "/api/data/v9.2/leads", lead(1)), _part("POST", "/api/data/v9.2/leads", {"x": 1})]
    working = [
        _part("POST", "/api/data/v9.2/leads", lead(2), content_id="1"),
        _part("PATCH", "$1", {"jobtitle": "CTO"}, content_id="2"),
        _part("POST", "/api/data/v9.2/contacts", {"lastname": "C", "originatingleadid@odata.bind": "$1"},
              content_id="3"),
    ]
    resp = _post_batch(api, [failing, working], "odata.continue-on-error")
    assert resp.status_code == 200
    parts = odata.decode_batch(resp.headers["Content-Type"], resp.content)
    assert [p.status for p in parts] == [400, 204, 204, 204]
    leads = admin.find("leads")
    assert [(r["firstname"], r["jobtitle"]) for r in leads] == [("F2", "CTO")]
    contact = admin.find("contacts")[0]
    assert contact["_originatingleadid_value"] == leads[0]["leadid"]
    resp = _post_batch(api, [[_part("PATCH", "$9", {"jobtitle": "x"})]])
    assert resp.status_code == 400
    body = odata.decode_batch(resp.headers["Content-Type"], resp.content)[0].json()
    assert body["error"]["message"] == "Content-ID Reference: '$9' does not exist in the batch context."


def test_batch_over_1000_operations_is_rejected(api: httpx.Client) -> None:
    resp = _post_batch(api, [_part("GET", "/api/data/v9.2/WhoAmI") for _ in range(1001)])
    assert resp.status_code == 400 and "1000" in resp.json()["error"]["message"]


# --- bulk actions and QualifyLead ----------------------------------------------------------------
def test_create_update_upsert_multiple(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    typed = [{**lead(i), "@odata.type": "Microsoft.Dynamics.CRM.lead"} for i in range(3)]
    resp = api.post("leads/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": typed})
    assert resp.status_code == 200
    ids = resp.json()["Ids"]
    assert len(ids) == 3 and resp.json()["@odata.context"].endswith("CreateMultipleResponse")
    untyped = api.post("leads/Microsoft.Dynamics.CRM.CreateMultiple", json={"Targets": typed[:1] + [lead(9)]})
    assert untyped.status_code == 400 and len(admin.find("leads")) == 3  # whole request rolled back
    upd = [{"leadid": i, "jobtitle": "VP", "@odata.type": "Microsoft.Dynamics.CRM.lead"} for i in ids]
    assert api.post("leads/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": upd}).status_code == 204
    bad = upd[:1] + [{"leadid": str(uuid.uuid4()), "jobtitle": "x", "@odata.type": "Microsoft.Dynamics.CRM.lead"}]
    assert api.post("leads/Microsoft.Dynamics.CRM.UpdateMultiple", json={"Targets": bad}).status_code == 404
    admin.define_key("lead", ["emailaddress1"])
    ups = [
        {"@odata.type": "Microsoft.Dynamics.CRM.lead", "@odata.id": "leads(emailaddress1='p0@example.com')",
         "jobtitle": "CEO"},
        {"@odata.type": "Microsoft.Dynamics.CRM.lead", "@odata.id": "leads(emailaddress1='new@example.com')",
         "lastname": "New"},
    ]
    resp = api.post("leads/Microsoft.Dynamics.CRM.UpsertMultiple", json={"Targets": ups})
    assert resp.status_code == 204 and resp.content == b""
    assert admin.find("leads", emailaddress1="p0@example.com")[0]["jobtitle"] == "CEO"
    assert admin.find("leads", emailaddress1="new@example.com")[0]["lastname"] == "New"
    assert {r["jobtitle"] for r in admin.find("leads")} == {"CEO", "VP", None}


def test_qualify_lead(dataverse: Env, api: httpx.Client) -> None:
    admin = dataverse[1]
    link = api.get("contacts", headers={"Prefer": "odata.track-changes"}).json()["@odata.deltaLink"]
    lead_link = api.get("leads", headers={"Prefer": "odata.track-changes"}).json()["@odata.deltaLink"]
    lead_id = admin.create("leads", lead(1, jobtitle="CTO", telephone1="+1 555", address1_city="Oslo"))["leadid"]
    body = {"CreateAccount": False, "CreateContact": True, "CreateOpportunity": False, "Status": 3}
    resp = api.post(f"leads({lead_id})/Microsoft.Dynamics.CRM.QualifyLead", json=body)
    assert resp.status_code == 200
    item = resp.json()["value"][0]
    assert item["@odata.type"] == "#Microsoft.Dynamics.CRM.contact"
    contact = admin.get("contacts", item["contactid"])
    assert contact is not None
    assert (contact["firstname"], contact["emailaddress1"], contact["jobtitle"], contact["address1_city"]) == \
        ("F1", "p1@example.com", "CTO", "Oslo")
    assert contact["_originatingleadid_value"] == lead_id
    qualified = admin.get("leads", lead_id)
    assert qualified is not None and (qualified["statecode"], qualified["statuscode"]) == (1, 3)
    again = api.post(f"leads({lead_id})/Microsoft.Dynamics.CRM.QualifyLead", json=body)
    assert again.status_code == 400
    contacts_delta = api.get(link, headers={"Prefer": "odata.track-changes"}).json()["value"]
    assert [c["contactid"] for c in contacts_delta] == [item["contactid"]]
    leads_delta = api.get(lead_link, headers={"Prefer": "odata.track-changes"}).json()["value"]
    assert [r["statecode"] for r in leads_delta] == [1]
    assert admin.qualify(admin.create("leads", lead(2))["leadid"])


# --- run mode (b) ---------------------------------------------------------------------------------
def test_cli_serves_https_and_writes_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "dataverse", "--port", "0", "--tenant", "t1", "--client-id", "cid",
         "--client-secret", "sec", "--ca-out", str(ca)],
        cwd=root, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("https://127.0.0.1:") and ca.exists()
        ctx = ssl.create_default_context(cafile=str(ca))
        doc = httpx.get(f"{base}/t1/v2.0/.well-known/openid-configuration", verify=ctx).json()
        assert doc["token_endpoint"] == f"{base}/t1/oauth2/v2.0/token"
        token = httpx.post(doc["token_endpoint"], verify=ctx, data={
            "grant_type": "client_credentials", "client_id": "cid", "client_secret": "sec",
            "scope": f"{base}/.default"}).json()["access_token"]
        who = httpx.get(f"{base}/api/data/v9.2/WhoAmI", headers={"Authorization": f"Bearer {token}"}, verify=ctx)
        assert who.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
