"""MarketoClient against the real emulator over HTTP: paging, resume, limits, faults, batching."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clients.marketo import ActivityAttribute, ActivityEntry, LeadChange, MarketoClient
from shared.clients.ratelimit import CallBudget
from shared.errors import CursorExpired, MarketoError, MarketoTransient, QuotaExhausted
from tests.marketo_fixtures import MarketoEnv

Make = Callable[..., MarketoClient]
FIELDS = ["firstName", "lastName", "title", "city"]


def now_of(marketo: MarketoEnv) -> datetime:  # noqa: F811
    return datetime.strptime(marketo.admin.advance_clock(0), "%Y-%m-%dT%H:%M:%S%z")


def drain(client: MarketoClient, token: str, fields: list[str]) -> tuple[list[LeadChange], str]:
    changes: list[LeadChange] = []
    for page in client.lead_changes(token, fields):
        changes.extend(page.changes)
        token = page.next_token
    return changes, token


def violations(marketo: MarketoEnv) -> dict[str, int]:  # noqa: F811
    """Limit errors the emulator gave that were not injected on purpose."""
    stats = marketo.admin.stats()
    codes, injected = stats["responses_by_code"], stats["faults_injected"]
    return {c: codes.get(c, 0) - injected.get(c, 0) for c in ("606", "607", "615", "413", "414")
            if codes.get(c, 0) != injected.get(c, 0)}


def test_drains_10000_changes_and_resumes_exactly(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    start = client.paging_token(now_of(marketo))
    ids = marketo.admin.bulk([{"email": f"lead{i}@x.com"} for i in range(2000)])  # 2,000 New Lead
    marketo.admin.bulk([{"id": i, "firstName": f"F{i}", "lastName": f"L{i}", "title": "T", "city": "C"}
                        for i in ids])  # 8,000 Change Data Value
    first, stored = drain(client, start, FIELDS)
    guids = [c.marketo_guid for c in first]
    assert len(guids) == 10_000 and len(set(guids)) == 10_000
    assert sum(c.activity_type_id == 12 for c in first) == 2000
    assert {c.lead_id for c in first} == set(ids)
    assert first[-1].fields == {"city": first[-1].fields["city"]} and first[-1].fields["city"].new == "C"

    # new changes, by people in the UI and by the sync's own writes: exactly these come next
    marketo.admin.update_lead(ids[0], firstName="Changed")
    marketo.admin.update_lead(ids[1], city="Elsewhere", company="not requested")
    written = client.sync_leads([{"email": "lead2@x.com", "title": "Boss"}, {"email": "brand@new.com"}])
    second, stored_again = drain(client, stored, FIELDS)
    assert not {c.marketo_guid for c in second} & set(guids)
    got = sorted((c.lead_id, c.activity_type_id, tuple(c.fields)) for c in second)
    assert got == sorted([(ids[0], 13, ("firstName",)), (ids[1], 13, ("city",)), (ids[2], 13, ("title",)),
                          (written[1].id, 12, ())])
    api_change = next(c for c in second if c.lead_id == ids[2])
    assert api_change.attributes["Source"] == "Web service API"
    assert drain(client, stored_again, FIELDS)[0] == []  # nothing new: nothing repeated
    assert violations(marketo) == {}


def test_recovers_from_injected_faults(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client(max_attempts=20)  # every fault below hits the first calls in a row
    start = client.paging_token(now_of(marketo))
    for kind, count in [("606", 3), ("615", 2), ("602", 2), ("http502", 2), ("http500", 1), ("drop", 1),
                        ("713", 1)]:
        marketo.admin.fault(kind, count=count)
    results = client.sync_leads([{"email": f"f{i}@x.com", "firstName": "F"} for i in range(50)])
    assert [r.status for r in results] == ["created"] * 50
    leads = client.get_leads([r.id for r in results if r.id], ["email", "firstName"])
    assert len(leads) == 50
    changes, _ = drain(client, start, ["firstName"])
    assert len(changes) == 50
    stats = marketo.admin.stats()
    assert stats["faults_injected"] == {"606": 3, "615": 2, "602": 2, "http502": 2, "http500": 1, "drop": 1,
                                        "713": 1}
    assert violations(marketo) == {}
    assert stats["calls_by_endpoint"]["POST /rest/v1/leads.json"] >= 2  # the create was retried, not duplicated
    assert len(marketo.admin.all_leads()) == 50


def test_budget_keeps_the_client_under_rate_and_concurrency(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    marketo.admin.set_limits(rate_calls=10, rate_window_s=1.0, concurrency=3, latency_s=0.05)
    client = marketo_client(budget=CallBudget(calls=8, window_s=1.0, concurrency=2))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(4):
                client.usage()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = marketo.admin.stats()
    assert stats["responses_by_code"] == {"200": 24} and client.calls == 24


def test_quota_raises_quota_exhausted(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    marketo.admin.set_limits(daily_quota=2)
    client = marketo_client()
    client.usage()
    assert client.usage() == 2
    with pytest.raises(QuotaExhausted) as caught:
        client.describe()
    resets = caught.value.resets_at.astimezone(ZoneInfo("America/Chicago"))
    assert caught.value.code == "607" and (resets.hour, resets.minute) == (0, 0)
    assert timedelta(0) < resets - datetime.now(UTC) <= timedelta(hours=25)
    assert client.calls == 3  # never retried


def test_1000_leads_in_4_calls_aligned_to_input(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    records = [{"email": f"bulk{i}@x.com", "lastName": f"L{i}"} for i in range(1000)]
    records[500] = {"email": "broken"}
    results = client.sync_leads(records)
    assert marketo.admin.stats()["calls_by_endpoint"] == {"POST /rest/v1/leads.json": 4} and client.calls == 4
    assert [r.status for r in results].count("created") == 999
    assert results[500].status == "skipped" and results[500].reasons[0].code == "1003"
    leads = {lead["email"]: lead["id"] for lead in marketo.admin.all_leads()}
    assert all(results[i].id == leads[f"bulk{i}@x.com"] for i in range(1000) if i != 500)
    again = client.sync_leads(records[:10], action="updateOnly")
    assert [r.status for r in again] == ["updated"] * 10


def test_get_leads_switches_to_post_for_long_uris(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    emails = [f"a.rather.long.mailbox.name.number.{i:04d}@subdomain.example.com" for i in range(600)]
    ids = marketo.admin.bulk([{"email": e} for e in emails])
    found = client.find_leads("email", emails, ["email"])
    assert sorted(lead["id"] for lead in found) == sorted(ids)
    by_id = client.get_leads(ids, ["email", "firstName"])
    assert [lead["email"] for lead in by_id] == emails
    endpoints = marketo.admin.stats()["calls_by_endpoint"]
    assert endpoints == {"POST /rest/v1/leads.json": 2, "GET /rest/v1/leads.json": 2}  # emails long, ids short
    assert violations(marketo) == {}


def test_token_refresh_on_expiry(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    client.usage()
    marketo.admin.advance_clock(3601)  # the emulator's token expires; the client's clock does not know
    client.usage()
    stats = marketo.admin.stats()
    assert stats["responses_by_code"] == {"200": 2, "602": 1} and stats["identity_calls"] >= 2


def test_stale_cursor_raises_cursor_expired(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    token = client.paging_token(now_of(marketo))
    marketo.admin.advance_clock(91 * 86400)
    with pytest.raises(CursorExpired):
        list(client.lead_changes(token, ["email"]))
    with pytest.raises(CursorExpired):
        list(client.deleted_leads(token))


def test_deleted_leads(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    token = client.paging_token(now_of(marketo))
    ids = marketo.admin.bulk([{"email": f"d{i}@x.com"} for i in range(5)])
    for lead_id in ids[:3]:
        marketo.admin.delete_lead(lead_id)
    pages = list(client.deleted_leads(token))
    assert [i for p in pages for i in p.lead_ids] == ids[:3] and not pages[-1].more


def test_custom_activities(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    primary = ActivityAttribute("operation", "Operation")
    attrs = [ActivityAttribute("code", "Code"), ActivityAttribute("detail", "Detail")]
    type_id = client.ensure_activity_type("leadsyncError", "LeadSync Error", primary, attrs)
    assert client.ensure_activity_type("leadsyncError", "LeadSync Error", primary, attrs) == type_id
    lead_id = marketo.admin.create_lead(email="a@x.com")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    results = client.add_activities([
        ActivityEntry(lead_id, type_id, "update", when, {"code": "0x1", "detail": "too long"}),
        ActivityEntry(424242, type_id, "update", when, {"code": "0x2"}),
    ])
    assert results[0].status == "added" and results[0].marketo_guid
    assert results[1].status == "skipped" and results[1].reasons[0].code == "1004"
    logged = marketo.admin.activities(lead_id)
    assert len(logged) == 1 and logged[0]["activityDate"] == "2026-01-02T03:04:05Z"
    # the plain forms: a string primary attribute, tuple attributes, raw wire dicts
    other = client.ensure_activity_type("plain", "Plain", "reason", [("detail", "Detail", "text")])
    assert other != type_id
    raw = client.add_activities([{"leadId": lead_id, "activityTypeId": other, "activityDate": "2026-01-01T00:00:00Z",
                                  "primaryAttributeValue": "r", "attributes": [{"apiName": "detail", "value": "d"}]}])
    assert raw[0].status == "added"


def test_describe_is_cached_and_errors_carry_codes(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    fields = {f.name: f for f in client.describe()}
    client.describe()
    assert client.calls == 1 and fields["email"].length == 255 and fields["id"].read_only
    with pytest.raises(MarketoError) as caught:
        client.find_leads("firstName", ["Ann"], ["email"])
    assert caught.value.code == "1011" and caught.value.request_id
    assert not isinstance(caught.value, MarketoTransient)


def test_gives_up_with_marketo_transient(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client(max_attempts=3)
    marketo.admin.fault("606", count=10)
    with pytest.raises(MarketoTransient) as caught:
        client.usage()
    assert caught.value.code == "606" and client.calls == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["createOnly", "updateOnly", "createOrUpdate"]),
                          st.sampled_from(["a@x.com", "B@x.com", "b@X.com", "c@x.com"]),
                          st.text(alphabet="abc", max_size=3)),
                min_size=1, max_size=12))
def test_sync_results_match_a_model(marketo: MarketoEnv, marketo_client: Make,  # noqa: F811
                                    ops: list[tuple[str, str, str]]) -> None:
    marketo.admin.reset()
    client = marketo_client()
    existing: set[str] = set()
    for action, email, name in ops:
        result = client.sync_leads([{"email": email, "firstName": name}], action=action)[0]
        key = email.lower()
        if action == "createOnly" and key in existing:
            assert (result.status, result.reasons[0].code) == ("skipped", "1005")
        elif action == "updateOnly" and key not in existing:
            assert (result.status, result.reasons[0].code) == ("skipped", "1004")
        else:
            assert result.status == ("updated" if key in existing else "created")
            existing.add(key)
    assert {lead["email"].lower() for lead in marketo.admin.all_leads()} == existing


def test_new_people_go_to_the_named_partition(marketo: MarketoEnv, marketo_client: Make) -> None:  # noqa: F811
    client = marketo_client()
    europe = marketo.admin.add_partition("Europe")
    assert [p["name"] for p in client.partitions()] == ["Default", "Europe"]
    (made,) = client.sync_leads([{"email": "eu@x.com"}], action="createOnly", partition_name="Europe")
    assert made.status == "created" and made.id is not None
    assert marketo.admin.get_lead(int(made.id))["leadPartitionId"] == europe  # type: ignore[index]
    (default,) = client.sync_leads([{"email": "home@x.com"}], action="createOnly")
    assert default.id is not None and marketo.admin.get_lead(int(default.id))["leadPartitionId"] == 1  # type: ignore[index]
    (twin,) = client.sync_leads([{"email": "home@x.com"}], action="createOnly", partition_name="Europe")
    assert twin.status == "created"  # the email lookup is scoped to the partition
    (home,) = client.sync_leads([{"email": "home@x.com", "title": "x"}], action="updateOnly", partition_name="Default")
    assert (home.status, home.id) == ("updated", default.id)  # not the Europe twin: no 1007
    (other,) = client.sync_leads([{"id": twin.id, "title": "x"}], action="updateOnly", lookup_field="id",
                                 partition_name="Default")
    assert other.status == "skipped" and [r.code for r in other.reasons] == ["1010"]
    (unknown,) = client.sync_leads([{"email": "no@x.com"}], action="createOnly", partition_name="Asia")
    assert unknown.status == "skipped" and [r.code for r in unknown.reasons] == ["1008"]
