"""Conformance: PyPI `marketorestpython` (pinned in requirements-dev.txt) drives the Marketo emulator.

Each test is what a user's script does with the client's public API (`MarketoClient.execute`),
pointed at the emulator by its public `host` attribute (the client builds
`https://<munchkin>.mktorest.com` otherwise). The emulator keeps every limit at Marketo's real
value. Bugs of the client itself are documented where they show and worked around here, never
by making the emulator kinder:

- after a retryable error (606/615) its backoff retries the call without the access token (it
  pops the token out of the argument dict on the first try), so the retry fails with 600;
- it refreshes a token only from its own clock (`valid_until`), so it cannot recover from a 602
  that arrives earlier than its clock expects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from marketorestpython.client import MarketoClient

from tests.marketo_fixtures import MarketoEnv


@pytest.fixture
def mc(marketo: MarketoEnv) -> Iterator[MarketoClient]:
    client = MarketoClient("emulator", marketo.emu.client_id, marketo.emu.client_secret, max_retry_time=5,
                           requests_timeout=30)
    client.host = marketo.emu.base_url  # the emulator instead of <munchkin>.mktorest.com
    yield client


def code_of(exc: pytest.ExceptionInfo[Exception]) -> str:
    """marketorestpython raises `Exception({'message': …, 'code': …})` for a failed call."""
    return str(exc.value.args[0]["code"])


def test_auth_create_update_upsert_and_record_level_errors(mc: MarketoClient, marketo: MarketoEnv) -> None:
    created = mc.execute(method="create_update_leads", leads=[
        {"email": "ann@example.com", "firstName": "Ann"}, {"email": "bob@example.com"},
    ], action="createOnly", lookupField="email")
    assert [r["status"] for r in created] == ["created", "created"]
    assert mc.token and mc.scope  # authenticated through /identity/oauth/token
    again = mc.execute(method="create_update_leads", leads=[
        {"email": "ann@example.com", "lastName": "Lee"},  # exists: createOnly skips it
        {"email": "new@example.com", "noSuchField": "x"},  # unknown field
    ], action="createOnly", lookupField="email")
    assert [r["reasons"][0]["code"] for r in again] == ["1005", "1006"]
    upsert = mc.execute(method="create_update_leads", leads=[
        {"email": "ann@example.com", "lastName": "Lee"}, {"email": "cat@example.com", "lastName": "Cat"},
    ], action="createOrUpdate", lookupField="email")
    assert [r["status"] for r in upsert] == ["updated", "created"]
    missing = mc.execute(method="create_update_leads", leads=[{"id": 999999, "title": "CTO"}],
                         action="updateOnly", lookupField="id")
    assert missing[0]["status"] == "skipped" and missing[0]["reasons"][0]["code"] == "1004"
    lead = marketo.admin.get_lead(created[0]["id"])
    assert lead is not None and lead["lastName"] == "Lee" and lead["firstName"] == "Ann"


def test_token_near_expiry_is_refreshed(mc: MarketoClient, marketo: MarketoEnv) -> None:
    marketo.admin.set_limits(token_ttl_s=30)  # under the client's 60 s margin: it asks before every call
    mc.execute(method="describe")
    first = mc.token
    marketo.admin.advance_clock(31)  # the emulator's token has now expired
    assert len(mc.execute(method="describe")) > 10
    assert mc.token != first
    assert marketo.admin.stats()["responses_by_code"].get("602", 0) == 0  # refreshed before, never refused


def test_lead_by_id_with_repeated_fields_param(mc: MarketoClient, marketo: MarketoEnv) -> None:
    lead_id = marketo.admin.create_lead(email="ann@example.com", firstName="Ann", city="Lyon")
    # A list becomes `fields=email&fields=city` on the wire: the same list as `fields=email,city`.
    assert mc.execute(method="get_lead_by_id", id=lead_id, fields=["email", "city"]) == [
        {"id": lead_id, "email": "ann@example.com", "city": "Lyon"}]
    assert mc.execute(method="get_lead_by_id", id=lead_id, fields="email,city") == [
        {"id": lead_id, "email": "ann@example.com", "city": "Lyon"}]
    default = mc.execute(method="get_lead_by_id", id=lead_id)[0]
    assert set(default) == {"id", "email", "firstName", "createdAt", "updatedAt"}  # null lastName omitted
    assert mc.execute(method="get_lead_by_id", id=424242) == []
    with pytest.raises(Exception) as exc:
        mc.execute(method="get_lead_by_id", id=lead_id, fields=["email", "noSuchField"])
    assert code_of(exc) == "1006"


def test_filter_query_in_form_body_with_paging(mc: MarketoClient, marketo: MarketoEnv) -> None:
    emails = [f"p{i}@example.com" for i in range(5)]
    marketo.admin.bulk([{"email": e, "lastName": f"P{i}"} for i, e in enumerate(emails)])
    # `_method=GET` rides in the form body here, with the filter list and the paging token.
    found = mc.execute(method="get_multiple_leads_by_filter_type", filterType="email", filterValues=emails,
                       fields=["email", "lastName"], batchSize=2)
    assert sorted(f["email"] for f in found) == emails and all(f["lastName"] for f in found)
    with pytest.raises(Exception) as exc:
        mc.execute(method="get_multiple_leads_by_filter_type", filterType="city", filterValues=["Lyon"])
    assert code_of(exc) == "1011"  # not a searchable field


def test_change_feeds_activities_and_deletes(mc: MarketoClient, marketo: MarketoEnv) -> None:
    since = marketo.admin.advance_clock(0)
    lead_id = marketo.admin.create_lead(email="ann@example.com", firstName="Ann")
    marketo.admin.update_lead(lead_id, firstName="Anne", city="Lyon")
    changes = mc.execute(method="get_lead_changes", fields=["firstName"], sinceDatetime=since)
    assert [c["activityTypeId"] for c in changes] == [12, 13]  # city was not asked for
    assert changes[1]["fields"][0] == {"id": 29, "name": "firstName", "newValue": "Anne", "oldValue": "Ann"}
    # untilDatetime makes the client parse activityDate with '%Y-%m-%dT%H:%M:%SZ'
    acts = mc.execute(method="get_lead_activities", activityTypeIds=["12", "13"], sinceDatetime=since,
                      untilDatetime="2999-01-01T00:00:00")
    assert [a["activityTypeId"] for a in acts] == [12, 13, 13]
    values = {a["name"]: a["value"] for a in acts[1]["attributes"]}
    assert values["New Value"] == "Anne" and values["Old Value"] == "Ann"
    with pytest.raises(Exception) as exc:
        mc.execute(method="get_lead_activities", activityTypeIds=[str(i) for i in range(1, 12)], sinceDatetime=since)
    assert code_of(exc) == "1003"  # at most 10 activity types
    marketo.admin.delete_lead(lead_id)
    deleted = mc.execute(method="get_deleted_leads", sinceDatetime=since)
    assert [(d["activityTypeId"], d["primaryAttributeValueId"]) for d in deleted] == [(37, lead_id)]


def test_custom_activity_type_and_entries(mc: MarketoClient, marketo: MarketoEnv) -> None:
    since = marketo.admin.advance_clock(0)
    lead_id = marketo.admin.create_lead(email="ann@example.com")
    mc.execute(method="create_custom_activity_type", apiName="syncError", name="Sync Error",
               triggerName="Has sync error", filterName="Had sync error", primaryAttributeApiName="reason",
               primaryAttributeName="Reason")
    mc.execute(method="create_custom_activity_type_attribute", apiName="syncError",
               attributes=[{"apiName": "errorCode", "name": "Error Code", "dataType": "string"}])
    approved = mc.execute(method="approve_custom_activity_type", apiName="syncError")[0]
    assert approved["status"] == "approved"
    assert approved["id"] in [t["id"] for t in mc.execute(method="get_activity_types")]
    entry: dict[str, Any] = {"leadId": lead_id, "activityTypeId": approved["id"], "primaryAttributeValue": "x",
                             "activityDate": "2026-01-02T03:04:05Z"}
    results = mc.execute(method="add_custom_activities", input=[
        {**entry, "attributes": [{"apiName": "errorCode", "value": "E1"}]},
        {**entry, "attributes": [{"name": "Error Code", "value": "E2"}]},
        {**entry, "attributes": [{"name": "Nope", "value": "E3"}]},
        {**entry, "leadId": 424242},
    ])
    assert [r["status"] for r in results] == ["added", "added", "skipped", "skipped"]
    assert [r["errors"][0]["code"] for r in results[2:]] == ["1006", "1004"]
    logged = marketo.admin.activities(lead_id)
    assert [a["activityDate"] for a in logged] == ["2026-01-02T03:04:05Z"] * 2
    feed = mc.execute(method="get_lead_activities", activityTypeIds=[str(approved["id"]), "12"], sinceDatetime=since)
    assert [a["activityTypeId"] for a in feed] == [12, approved["id"], approved["id"]]
    assert feed[1]["primaryAttributeValue"] == "x" and feed[1]["leadId"] == lead_id
    assert [a["attributes"] for a in logged] == [[{"apiName": "errorCode", "value": "E1"}],
                                                 [{"apiName": "errorCode", "value": "E2"}]]


def test_metadata_and_usage(mc: MarketoClient, marketo: MarketoEnv) -> None:
    names = {f["rest"]["name"] for f in mc.execute(method="describe")}
    assert {"email", "firstName", "msftIsDeleted"} <= names
    lead_object = mc.execute(method="describe2")[0]
    assert lead_object["name"] == "API Lead" and ["email"] in lead_object["searchableFields"]
    assert {f["name"] for f in lead_object["fields"]} == names
    types = {t["id"]: t["name"] for t in mc.execute(method="get_activity_types")}
    assert types[12] == "New Lead" and types[13] == "Change Data Value" and types[37] == "Delete Lead"
    today = mc.execute(method="get_daily_usage")[0]
    week = mc.execute(method="get_last_7_days_usage")
    assert len(week) == 7 and week[-1]["date"] == today["date"]
    assert week[-1]["total"] == today["total"] + 1  # the daily-usage call itself was counted


def _burn_rate_window(marketo: MarketoEnv) -> None:
    """Another integration on the same instance spends the shared 100-calls-per-20-s budget."""
    token = httpx.get(f"{marketo.emu.base_url}/identity/oauth/token", params={
        "grant_type": "client_credentials", "client_id": marketo.emu.client_id,
        "client_secret": marketo.emu.client_secret}).json()["access_token"]
    with httpx.Client(base_url=marketo.emu.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(101):
            if http.get("/rest/v1/leads/describe.json").json().get("success") is False:
                return
    raise AssertionError("the rate limit never answered 606")


def test_rate_limit_606_and_the_clients_retry_without_token(mc: MarketoClient, marketo: MarketoEnv) -> None:
    lead_id = marketo.admin.create_lead(email="ann@example.com")
    mc.execute(method="describe")  # authenticated before the budget is gone
    _burn_rate_window(marketo)
    with pytest.raises(Exception) as exc:
        mc.execute(method="get_lead_by_id", id=lead_id)
    # Client bug: the 606 is retried (good), but the retry carries no token, so it dies on 600.
    codes = marketo.admin.stats()["responses_by_code"]
    assert codes.get("606", 0) >= 2 and codes.get("600", 0) == 1 and code_of(exc) == "600"
    # Work-around in the script: wait for the 20 s window to slide, then call again.
    marketo.admin.advance_clock(21)
    assert mc.execute(method="get_lead_by_id", id=lead_id)[0]["id"] == lead_id


def test_concurrency_615_at_the_real_limit(mc: MarketoClient, marketo: MarketoEnv) -> None:
    lead_id = marketo.admin.create_lead(email="ann@example.com")
    mc.execute(method="describe")
    token = mc.token
    mc.max_retry_time = 60  # its backoff outlasts the slow calls below, so the retry is what ends it
    marketo.admin.fault("slow", count=10, delay_s=4.0)  # ten slow calls hold Marketo's ten slots
    holders = [threading.Thread(target=httpx.get, args=(f"{marketo.emu.base_url}/rest/v1/leads/describe.json",),
                                kwargs={"headers": {"Authorization": f"Bearer {token}"}, "timeout": 30})
               for _ in range(10)]
    for t in holders:
        t.start()
    deadline = time.monotonic() + 20
    while marketo.admin.stats()["faults_injected"].get("slow", 0) < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(Exception) as exc:
        mc.execute(method="get_lead_by_id", id=lead_id)
    # Same client bug as after 606: the retry of the 615 goes out without the token.
    codes = marketo.admin.stats()["responses_by_code"]
    assert codes.get("615", 0) >= 1 and codes.get("600", 0) == 1 and code_of(exc) == "600"
    for t in holders:
        t.join()
    assert mc.execute(method="get_lead_by_id", id=lead_id)[0]["id"] == lead_id  # the script's retry, later


def test_emulator_stays_strict_where_marketo_is(marketo: MarketoEnv) -> None:
    token = httpx.get(f"{marketo.emu.base_url}/identity/oauth/token", params={
        "grant_type": "client_credentials", "client_id": marketo.emu.client_id,
        "client_secret": marketo.emu.client_secret}).json()["access_token"]
    with httpx.Client(base_url=marketo.emu.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        # A form body without `_method=GET` is a Sync Leads call, which takes JSON only.
        form = http.post("/rest/v1/leads.json", data={"filterType": "email", "filterValues": "a@x.com"}).json()
        assert form["errors"][0]["code"] == "612"
        no_types = http.get("/rest/v1/activities.json", params={"nextPageToken": "GAYDAMBQ"}).json()
        assert no_types["errors"][0]["code"] == "701"  # activityTypeIds is required
        bad_id = http.get("/rest/v1/lead/abc.json").json()
        assert bad_id["errors"][0]["code"] == "1003"
        wrong_verb = http.post("/rest/v1/leads/describe2.json", json={}).json()
        assert wrong_verb["errors"][0]["code"] == "605"


def test_repeated_parameter_is_the_comma_list(marketo: MarketoEnv) -> None:
    marketo.admin.create_lead(email="ann@example.com", firstName="Ann", city="Lyon")
    token = httpx.get(f"{marketo.emu.base_url}/identity/oauth/token", params={
        "grant_type": "client_credentials", "client_id": marketo.emu.client_id,
        "client_secret": marketo.emu.client_secret}).json()["access_token"]
    with httpx.Client(base_url=marketo.emu.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        repeated = http.get("/rest/v1/leads.json", params=[
            ("filterType", "email"), ("filterValues", "ann@example.com"), ("fields", "email"), ("fields", "city")])
        listed = http.get("/rest/v1/leads.json", params={
            "filterType": "email", "filterValues": "ann@example.com", "fields": "email,city"})
    assert repeated.json()["result"] == listed.json()["result"]
    assert set(listed.json()["result"][0]) == {"id", "email", "city"}
