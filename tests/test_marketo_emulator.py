"""The Marketo emulator against the wire facts in Adobe's Marketo REST API documentation, over real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.marketo_fixtures import MarketoEnv

TOKEN_PATH = "/identity/oauth/token"


class Rest:
    """A bare REST caller (no retries, no budget) so tests see exactly what the emulator says."""

    def __init__(self, env: MarketoEnv) -> None:
        self.env = env
        self.base = env.emu.base_url
        self.http = httpx.Client(base_url=self.base, timeout=30)
        self.token = self.new_token()["access_token"]

    def new_token(self) -> dict[str, Any]:
        params = {"grant_type": "client_credentials", "client_id": self.env.emu.client_id,
                  "client_secret": self.env.emu.client_secret}
        response = self.http.get(TOKEN_PATH, params=params)
        assert response.status_code == 200
        return dict(response.json())

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.http.get("/rest" + path, params=params, headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def post(self, path: str, body: Any, **params: Any) -> dict[str, Any]:
        response = self.http.post("/rest" + path, json=body, params=params,
                                  headers={"Authorization": f"Bearer {self.token}"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def sync(self, records: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
        body = self.post("/v1/leads.json", {"input": records, **kw})
        assert body["success"], body
        return list(body["result"])

    def since_now(self) -> str:
        """A paging token for "from now on" (the emulator's clock)."""
        now = self.env.admin.advance_clock(0).replace("+0000", "Z")
        return str(self.get("/v1/activities/pagingtoken.json", sinceDatetime=now)["nextPageToken"])

    def drain(self, path: str, token: str, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All items from `token` to the end, and every page envelope seen."""
        items: list[dict[str, Any]] = []
        pages: list[dict[str, Any]] = []
        while True:
            page = self.get(path, nextPageToken=token, **params)
            assert page["success"], page
            pages.append(page)
            items.extend(page["result"])
            token = page["nextPageToken"]
            if not page["moreResult"]:
                return items, pages


@pytest.fixture
def rest(marketo: MarketoEnv) -> Iterator[Rest]:  # noqa: F811
    caller = Rest(marketo)
    yield caller
    caller.http.close()


def error_code(body: dict[str, Any]) -> str:
    assert body["success"] is False and isinstance(body["errors"][0]["code"], str), body
    return str(body["errors"][0]["code"])


# --------------------------------------------------------------------------- identity and auth


def test_identity_returns_same_token_with_remaining_life(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    first = rest.new_token()
    assert first["token_type"] == "bearer" and first["access_token"].endswith(":int") and first["scope"]
    marketo.admin.advance_clock(100)
    second = rest.new_token()
    assert second["access_token"] == first["access_token"]
    assert first["expires_in"] - 101 <= second["expires_in"] <= first["expires_in"] - 99
    bad = rest.http.get(TOKEN_PATH, params={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"})
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"
    assert marketo.admin.stats()["counted_calls"] == 0


def test_auth_codes_and_they_are_not_counted(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    path = "/rest/v1/leads/describe.json"
    assert error_code(rest.http.get(path).json()) == "600"
    assert error_code(rest.http.get(path, params={"access_token": rest.token}).json()) == "600"  # query token ignored
    assert error_code(rest.http.get(path, headers={"Authorization": "Bearer nope:int"}).json()) == "601"
    marketo.admin.advance_clock(3601)
    assert error_code(rest.http.get(path, headers={"Authorization": f"Bearer {rest.token}"}).json()) == "602"
    stats = marketo.admin.stats()
    assert stats["counted_calls"] == 0 and stats["total_calls"] == 4
    rest.token = rest.new_token()["access_token"]  # a new token after expiry
    assert rest.get("/v1/leads/describe.json")["success"]


# --------------------------------------------------------------------------- leads


def test_describe_has_realistic_fields(rest: Rest) -> None:
    body = rest.get("/v1/leads/describe.json")
    fields = {f["rest"]["name"]: f for f in body["result"]}
    assert set(body) >= {"requestId", "success", "result"}
    assert fields["email"]["dataType"] == "email" and fields["email"]["length"] == 255
    assert fields["id"]["rest"]["readOnly"] is True and fields["updatedAt"]["dataType"] == "datetime"
    assert fields["msftIsDeleted"]["dataType"] == "boolean"
    assert fields["msftIsDeleted"]["displayName"] == "Microsoft is Deleted"
    for name in ("firstName", "lastName", "company", "title", "phone", "mobilePhone", "address", "city", "state",
                 "postalCode", "country", "leadSource", "createdAt"):
        assert name in fields


def test_sync_results_follow_input_order_with_reasons(rest: Rest) -> None:
    rest.sync([{"email": "dup@x.com"}], action="createDuplicate")
    rest.sync([{"email": "dup@x.com"}], action="createDuplicate")
    results = rest.sync([
        {"email": "new@x.com", "firstName": "New"},          # created
        {"email": "bad-email"},                                # 1003 format
        {"email": "NEW@x.com", "lastName": "Case"},          # updated (email lookup is case-insensitive)
        {"email": "long@x.com", "city": "x" * 256},           # 1003 length
        {"email": "what@x.com", "noSuchField": 1},            # 1006
        {"email": "dup@x.com", "firstName": "D"},             # 1007
        {"email": "int@x.com", "numberOfEmployees": "many"},  # 1003 integer
        {"email": "b@x.com", "msftIsDeleted": "maybe"},       # 1003 boolean
        {"email": "d@x.com", "msftLastModifiedOn": "yesterday"},  # 1003 datetime
        {"id": 5, "email": "id@x.com"},                        # 1003: id only with updateOnly
    ])
    assert [r["status"] for r in results] == ["created", "skipped", "updated"] + ["skipped"] * 7
    codes = [r["reasons"][0]["code"] if r["status"] == "skipped" else None for r in results]
    assert codes == [None, "1003", None, "1003", "1006", "1007", "1003", "1003", "1003", "1003"]
    assert results[0]["id"] == results[2]["id"]
    assert rest.sync([{"email": "new@x.com"}], action="createOnly")[0]["reasons"][0]["code"] == "1005"
    assert rest.sync([{"email": "none@x.com"}], action="updateOnly")[0]["reasons"][0]["code"] == "1004"
    by_id = rest.sync([{"id": results[0]["id"], "title": "CEO"}], action="updateOnly", lookupField="id")
    assert by_id == [{"id": results[0]["id"], "status": "updated"}]


def test_sync_call_level_errors(rest: Rest) -> None:
    headers = {"Authorization": f"Bearer {rest.token}", "Content-Type": "text/plain"}
    plain = rest.http.post("/rest/v1/leads.json", content=b'{"input":[{"email":"a@x.com"}]}', headers=headers)
    assert error_code(plain.json()) == "612"
    too_many = rest.post("/v1/leads.json", {"input": [{"email": f"{i}@x.com"} for i in range(301)]})
    assert error_code(too_many) == "1003"


def test_get_leads_fields_nulls_and_limits(rest: Rest) -> None:
    created = rest.sync([{"email": "a@x.com", "firstName": "Ann"}, {"email": "b@x.com", "company": "B"}])
    ids = ",".join(str(r["id"]) for r in created)
    body = rest.get("/v1/leads.json", filterType="id", filterValues=ids)
    first, second = body["result"]
    assert set(first) == {"id", "email", "firstName", "createdAt", "updatedAt"}  # null lastName omitted
    assert "firstName" not in second
    custom = rest.get("/v1/leads.json", filterType="email", filterValues="B@X.COM", fields="company,msftIsDeleted")
    assert custom["result"] == [{"id": created[1]["id"], "company": "B"}]
    assert rest.get("/v1/leads.json", filterType="email", filterValues="nobody@x.com")["result"] == []
    many = ",".join(str(i) for i in range(301))
    assert error_code(rest.get("/v1/leads.json", filterType="id", filterValues=many)) == "1003"
    assert error_code(rest.get("/v1/leads.json", filterType="firstName", filterValues="Ann")) == "1011"
    form = rest.http.post("/rest/v1/leads.json", params={"_method": "GET"},
                          data={"filterType": "id", "filterValues": ids, "fields": "email"},
                          headers={"Authorization": f"Bearer {rest.token}"}).json()
    assert [r["email"] for r in form["result"]] == ["a@x.com", "b@x.com"]


# --------------------------------------------------------------------------- activities


def test_api_and_ui_writes_log_activities(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    token = rest.since_now()
    lead_id = rest.sync([{"email": "a@x.com", "firstName": "Ann", "city": "Paris"}])[0]["id"]
    rest.sync([{"email": "a@x.com", "firstName": "Anne", "city": "Paris", "title": "CTO"}])  # city unchanged
    marketo.admin.update_lead(lead_id, lastName="Lee", city="Lyon")
    items, _ = rest.drain("/v1/activities/leadchanges.json", token, fields="firstName,lastName,title")
    assert [i["activityTypeId"] for i in items] == [12, 13, 13, 13]  # city was not requested
    assert set(items[0]) >= {"id", "marketoGUID", "leadId", "activityDate", "activityTypeId", "attributes"}
    changes = [(i["fields"][0]["name"], i["fields"][0]["oldValue"], i["fields"][0]["newValue"]) for i in items[1:]]
    assert changes == [("firstName", "Ann", "Anne"), ("title", None, "CTO"), ("lastName", None, "Lee")]
    sources = [{a["name"]: a["value"] for a in i["attributes"]}.get("Source") for i in items[1:]]
    assert sources == ["Web service API", "Web service API", "Marketo UI"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", items[0]["activityDate"])  # Z, as the service
    assert all(i["leadId"] == lead_id for i in items)
    assert error_code(rest.get("/v1/activities/leadchanges.json", nextPageToken=token)) == "701"  # fields required
    bad_date = rest.get("/v1/activities/pagingtoken.json", sinceDatetime="last tuesday")
    assert error_code(bad_date) == "704"


def test_paging_over_short_and_empty_pages(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    token = rest.since_now()
    ids = marketo.admin.bulk([{"email": f"p{i}@x.com"} for i in range(700)])
    marketo.admin.bulk([{"id": i, "firstName": f"F{i}"} for i in ids])
    marketo.admin.bulk([{"id": i, "city": "Nowhere"} for i in ids])  # not requested: filtered out
    items, pages = rest.drain("/v1/activities/leadchanges.json", token, fields="firstName")
    assert len(items) == 1400 and len({i["marketoGUID"] for i in items}) == 1400
    assert all("nextPageToken" in p for p in pages)
    assert any(p["moreResult"] and not p["result"] for p in pages), "an empty page with moreResult"
    assert any(p["moreResult"] and 0 < len(p["result"]) < 300 for p in pages), "a short page with moreResult"
    assert all(len(p["result"]) <= 300 for p in pages)
    # the last token resumes exactly after what was read
    marketo.admin.update_lead(ids[0], firstName="Again")
    more, _ = rest.drain("/v1/activities/leadchanges.json", pages[-1]["nextPageToken"], fields="firstName")
    assert [i["fields"][0]["newValue"] for i in more] == ["Again"]


def test_deleted_leads_and_retention(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    token = rest.get("/v1/activities/pagingtoken.json", sinceDatetime="2020-01-01T00:00:00+00:00")["nextPageToken"]
    assert error_code(rest.get("/v1/activities/deletedleads.json", nextPageToken=token)) == "701"  # too old
    token = rest.since_now()
    lead_id = marketo.admin.create_lead(email="gone@x.com", lastName="Gone")
    marketo.admin.delete_lead(lead_id)
    items, _ = rest.drain("/v1/activities/deletedleads.json", token)
    assert [(i["activityTypeId"], i["primaryAttributeValueId"], i["leadId"]) for i in items] == [(37, lead_id, lead_id)]
    marketo.admin.advance_clock(15 * 86400)
    rest.token = rest.new_token()["access_token"]  # the old one expired too
    assert error_code(rest.get("/v1/activities/deletedleads.json", nextPageToken=token)) == "701"
    assert rest.get("/v1/activities/leadchanges.json", nextPageToken=token, fields="email")["success"]  # 90 days
    marketo.admin.advance_clock(76 * 86400)
    rest.token = rest.new_token()["access_token"]
    assert error_code(rest.get("/v1/activities/leadchanges.json", nextPageToken=token, fields="email")) == "701"


def test_custom_activities(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    lead_id = marketo.admin.create_lead(email="a@x.com")
    created = rest.post("/v1/activities/external/type.json", {
        "apiName": "syncError", "name": "Sync Error", "triggerName": "Has Sync Error", "filterName": "Had Sync Error",
        "primaryAttribute": {"apiName": "operation", "name": "Operation", "dataType": "string"},
    })
    type_id = created["result"][0]["id"]
    assert created["result"][0]["status"] == "draft"
    rest.post("/v1/activities/external/type/syncError/attributes/create.json",
              {"attribute": [{"apiName": "code", "name": "Code", "dataType": "string"}]})
    entry = {"leadId": lead_id, "activityTypeId": type_id, "activityDate": "2026-01-01T00:00:00Z",
             "primaryAttributeValue": "update", "attributes": [{"apiName": "code", "value": "0x80040237"}]}
    draft = rest.post("/v1/activities/external.json", {"input": [entry]})
    assert draft["result"][0]["status"] == "skipped" and draft["result"][0]["errors"][0]["code"] == "1013"
    assert rest.post("/v1/activities/external/type/syncError/approve.json", None)["success"]
    types = rest.get("/v1/activities/external/types.json")["result"]
    assert [(t["apiName"], t["status"]) for t in types] == [("syncError", "approved")]
    result = rest.post("/v1/activities/external.json", {"input": [entry, {**entry, "leadId": 999999}]})["result"]
    assert result[0]["status"] == "added" and result[0]["marketoGUID"]
    assert result[1] == {"status": "skipped", "errors": [{"code": "1004", "message": "Lead not found"}]}
    logged = marketo.admin.activities(lead_id)
    assert [(a["activityTypeId"], a["primaryAttributeValue"]) for a in logged] == [(type_id, "update")]
    assert logged[0]["attributes"] == [{"apiName": "code", "value": "0x80040237"}]


def test_usage_counts_today(rest: Rest) -> None:
    rest.get("/v1/leads/describe.json")
    usage = rest.get("/v1/stats/usage.json")["result"][0]
    assert usage["total"] == 2 and usage["users"][0]["count"] == 2 and len(usage["date"]) == 10


# --------------------------------------------------------------------------- limits


def test_rate_limit_606(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    marketo.admin.set_limits(rate_calls=10, rate_window_s=20)
    codes = [rest.get("/v1/leads/describe.json").get("success") for _ in range(10)]
    assert all(codes)
    assert error_code(rest.get("/v1/leads/describe.json")) == "606"
    marketo.admin.advance_clock(21)
    assert rest.get("/v1/leads/describe.json")["success"]


def test_real_rate_limit_is_100_per_20s(rest: Rest) -> None:
    bodies = [rest.get("/v1/leads/describe.json") for _ in range(101)]
    assert all(b["success"] for b in bodies[:100])
    assert error_code(bodies[100]) == "606"
    assert bodies[100]["errors"][0]["message"] == "Max rate limit '100' exceeded with in '20' secs"


def test_concurrency_limit_615(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    # Each call is held 3 s and all start together, so all 14 are in flight at once even on a
    # loaded machine (with 0.4 s, slow thread starts let early calls finish before late ones came).
    marketo.admin.set_limits(latency_s=3.0)
    codes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(14)

    def call() -> None:
        with httpx.Client(base_url=rest.base, timeout=30) as http:
            start.wait()
            body = http.get("/rest/v1/leads/describe.json", headers={"Authorization": f"Bearer {rest.token}"}).json()
        with lock:
            codes.append("ok" if body["success"] else body["errors"][0]["code"])

    threads = [threading.Thread(target=call) for _ in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count("ok") == 10 and codes.count("615") == 4


def test_daily_quota_607(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    marketo.admin.set_limits(daily_quota=3)
    for _ in range(3):
        assert rest.get("/v1/leads/describe.json")["success"]
    body = rest.get("/v1/leads/describe.json")
    assert error_code(body) == "607" and "3" in body["errors"][0]["message"]
    marketo.admin.advance_clock(86400)  # next US Central day
    rest.token = rest.new_token()["access_token"]
    assert rest.get("/v1/leads/describe.json")["success"]


def test_http_413_and_414(rest: Rest) -> None:
    headers = {"Authorization": f"Bearer {rest.token}"}
    big = {"input": [{"email": f"{i}@x.com", "address": "y" * 5000} for i in range(250)]}
    assert rest.http.post("/rest/v1/leads.json", json=big, headers=headers).status_code == 413
    long_values = ",".join(f"someone.with.a.long.address.{i}@example.com" for i in range(250))
    response = rest.http.get("/rest/v1/leads.json", params={"filterType": "email", "filterValues": long_values},
                             headers=headers)
    assert response.status_code == 414


# --------------------------------------------------------------------------- faults, admin, CLI


def test_faults_are_injected_and_reported(rest: Rest, marketo: MarketoEnv) -> None:  # noqa: F811
    marketo.admin.fault("http502", count=1)
    marketo.admin.fault("615", count=1)
    headers = {"Authorization": f"Bearer {rest.token}"}
    assert rest.http.get("/rest/v1/leads/describe.json", headers=headers).status_code == 502
    assert error_code(rest.get("/v1/leads/describe.json")) == "615"
    assert rest.get("/v1/leads/describe.json")["success"]
    marketo.admin.fault("drop", count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        rest.http.get("/rest/v1/leads/describe.json", headers=headers)
    stats = marketo.admin.stats()
    assert stats["faults_injected"] == {"http502": 1, "615": 1, "drop": 1}
    assert stats["responses_by_code"]["615"] == 1 and stats["counted_calls"] == 1
    marketo.admin.fault("606", rate=1.0)
    assert error_code(rest.get("/v1/leads/describe.json")) == "606"
    marketo.admin.clear_faults()
    assert rest.get("/v1/leads/describe.json")["success"]


def test_admin_reads_and_finds_people(marketo: MarketoEnv) -> None:  # noqa: F811
    lead_id = marketo.admin.create_lead(email="Mixed@Case.com", firstName="M")
    lead = marketo.admin.get_lead(lead_id)
    assert lead is not None and lead["lastName"] is None and lead["msftIsDeleted"] is None
    assert [p["id"] for p in marketo.admin.find_leads("mixed@case.COM")] == [lead_id]
    assert marketo.admin.update_lead(lead_id, firstName="M") == []  # no change, no activity
    with pytest.raises(httpx.HTTPStatusError):
        marketo.admin.create_lead(email="not an email")
    marketo.admin.delete_lead(lead_id)
    assert marketo.admin.get_lead(lead_id) is None


def test_cli_prints_url_and_serves() -> None:
    args = [sys.executable, "-m", "devhost", "marketo", "--port", "0", "--client-id", "cli", "--client-secret", "s"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        params = {"grant_type": "client_credentials", "client_id": "cli", "client_secret": "s"}
        response = httpx.get(url + TOKEN_PATH, params=params)
        assert response.status_code == 200 and response.json()["expires_in"] == 3600
        limits = httpx.get(url + "/_admin/limits").json()
        assert (limits["rate_calls"], limits["concurrency"], limits["daily_quota"]) == (100, 10, 50000)
    finally:
        process.terminate()
        process.wait(10)
