"""shared.clients.dataverse.DataverseClient against the real emulator over HTTPS (msal + httpx, CA bundle)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients import odata
from shared.clients.dataverse import DataverseClient, WriteOp
from shared.errors import ConcurrencyConflict, ConfigError, CursorExpired, DataverseError, DataverseTransient

Env = tuple[DataverseEmulator, DataverseAdmin]
Factory = Callable[..., DataverseClient]
INJECTION = "x' or 1 eq 1 or emailaddress1 eq 'y"
SELECT = ["firstname", "lastname", "emailaddress1"]


def leads(n: int, prefix: str = "p") -> list[dict[str, object]]:
    return [{"firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"{prefix}{i}@example.com"} for i in range(n)]


def test_msal_talks_tls_with_the_ca_bundle(
    dataverse: Env, dataverse_client_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = dataverse[0]
    # A bogus env bundle must not win over the explicit ca_bundle (requests honours it unless trust_env=False).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    client = dataverse_client_factory()
    assert set(client.who_am_i()) >= {"UserId", "OrganizationId", "BusinessUnitId"}
    assert client.authority == emu.authority and client.scope == f"{emu.base_url}/.default"


def test_wrong_secret_is_a_config_error(dataverse_client_factory: Factory) -> None:
    client = dataverse_client_factory(client_secret="wrong")
    with pytest.raises(ConfigError):
        client.who_am_i()


def test_drains_10000_changes_and_resumes_from_delta_link(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    ids = admin.bulk("leads", leads(10_000))
    seen: list[str] = []
    delta_link = None
    pages = list(dataverse_client.changes("leads", SELECT, None, page_size=3000))
    for page in pages[:-1]:
        assert page.delta_link is None and page.next_link
    for page in pages:
        seen += [r["leadid"] for r in page.records]
        assert not page.deleted_ids
    delta_link = pages[-1].delta_link
    assert len(pages) == 4 and delta_link and pages[-1].next_link is None
    assert len(seen) == 10_000 and set(seen) == set(ids)

    for rid in ids[:50]:
        admin.update("leads", rid, {"jobtitle": "changed"})
    for rid in ids[50:70]:
        admin.delete("leads", rid)
    created = admin.bulk("leads", leads(30, "new"))
    changed: list[str] = []
    deleted: list[str] = []
    last = None
    for page in dataverse_client.changes("leads", SELECT, delta_link, page_size=40):
        changed += [r["leadid"] for r in page.records]
        deleted += page.deleted_ids
        assert all(r["@odata.etag"].startswith('W/"') for r in page.records)
        last = page
    assert last is not None and last.delta_link
    assert sorted(changed) == sorted(ids[:50] + created) and len(changed) == 80
    assert sorted(deleted) == sorted(ids[50:70])
    again = list(dataverse_client.changes("leads", SELECT, last.delta_link))
    assert [(p.records, p.deleted_ids) for p in again] == [([], [])]


def test_expired_delta_link_raises_cursor_expired(dataverse: Env, dataverse_client: DataverseClient) -> None:
    link = list(dataverse_client.changes("contacts", SELECT, None))[-1].delta_link
    dataverse[1].expire_delta_tokens()
    with pytest.raises(CursorExpired) as info:
        list(dataverse_client.changes("contacts", SELECT, link))
    assert info.value.source == "dataverse"


def test_recovers_from_429_5xx_drop_and_revoked_token(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    admin.bulk("leads", leads(3))
    dataverse_client.who_am_i()
    admin.fault("429", count=1, retry_after=1)
    admin.fault("http503", count=1, retry_after=0)
    admin.fault("http500", count=1)
    admin.fault("drop", count=1)
    before = dataverse_client.requests_made
    assert len(dataverse_client.query("leads", None, SELECT)) == 3
    assert dataverse_client.requests_made - before == 5
    assert admin.revoke_tokens() >= 1
    assert len(dataverse_client.query("leads", odata.eq("firstname", "F1"), SELECT)) == 1
    stats = admin.stats()
    assert stats["token_requests"] == 2 and stats["responses_by_status"]["401"] == 1


def test_gives_up_with_dataverse_transient(dataverse: Env, dataverse_client_factory: Factory) -> None:
    admin = dataverse[1]
    client = dataverse_client_factory(max_attempts=3)
    client.who_am_i()
    admin.fault("http503", count=10, retry_after=0)
    before = client.requests_made
    with pytest.raises(DataverseTransient) as info:
        client.who_am_i()
    assert info.value.status == 503 and client.requests_made - before == 3


def test_batch_write_1000_records_in_one_request(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    dataverse_client.who_am_i()
    before = admin.stats()["total_requests"]
    results = dataverse_client.batch_write([WriteOp.create("leads", r) for r in leads(1000)])
    assert admin.stats()["total_requests"] - before <= 2
    assert len(results) == 1000 and all(r.ok and r.created and r.status == 201 for r in results)
    stored = admin.get("leads", results[7].id or "")
    assert stored is not None and results[7].etag == f'W/"{stored["versionnumber"]}"'
    assert stored["emailaddress1"] == "p7@example.com"

    ops = [
        WriteOp.update("leads", results[0].id or "", {"jobtitle": "A"}, etag=results[0].etag),
        WriteOp.update("leads", results[0].id or "", {"jobtitle": "B"}, etag=results[0].etag),  # now stale
        WriteOp.update("leads", str(uuid.uuid4()), {"jobtitle": "C"}),  # missing: never created
        WriteOp.create("leads", {"firstname": "x" * 80}),
        WriteOp.upsert("leads", str(uuid.uuid4()), {"lastname": "Upserted"}),
    ]
    out = dataverse_client.batch_write(ops)
    assert [r.status for r in out] == [200, 412, 404, 400, 201]
    assert out[0].etag and out[0].etag != results[0].etag
    assert out[1].error_code == "0x80060882" and out[3].error_code == "0x80044331"
    assert not out[2].ok and out[4].ok and out[4].created
    assert len(admin.find("leads")) == 1001


def test_bulk_actions_are_chunked(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    dataverse_client.who_am_i()
    before = dataverse_client.requests_made
    ids = dataverse_client.create_multiple("leads", "lead", leads(1000))
    assert len(ids) == 1000 and dataverse_client.requests_made - before == 1
    dataverse_client.update_multiple("leads", "lead", [{"leadid": i, "jobtitle": "VP"} for i in ids[:10]],
                                     chunk_size=4)
    assert dataverse_client.requests_made - before == 4
    admin.define_key("lead", ["emailaddress1"])
    dataverse_client.upsert_multiple("leads", "lead", [
        {"@odata.id": "leads(emailaddress1='p1@example.com')", "jobtitle": "CEO"},
        {"@odata.id": "leads(emailaddress1='zz@example.com')", "lastname": "Z"},
    ])
    assert admin.find("leads", emailaddress1="p1@example.com")[0]["jobtitle"] == "CEO"
    assert len(admin.find("leads")) == 1001
    with pytest.raises(DataverseError) as info:
        dataverse_client.create_multiple("leads", "lead", [{"firstname": "ok"}, {"bogus": 1}])
    assert info.value.status == 400 and len(admin.find("leads")) == 1001


def test_injection_string_matches_nothing(dataverse: Env, dataverse_client: DataverseClient) -> None:
    dataverse[1].bulk("leads", [{"emailaddress1": "x"}, {"emailaddress1": "y"}, {"lastname": "z"}])
    assert dataverse_client.find_by("leads", "emailaddress1", [INJECTION], SELECT) == []
    assert dataverse_client.query("leads", odata.eq("emailaddress1", INJECTION), SELECT) == []
    assert dataverse_client.query("leads", odata.eq("lastname", INJECTION), SELECT, top=5) == []
    plus = dataverse_client.find_by("leads", "emailaddress1", ["X", "a+b@x.com"], SELECT)
    assert [r["emailaddress1"] for r in plus] == ["x"]


def test_get_by_ids_chunks_urls(dataverse: Env, dataverse_client_factory: Factory) -> None:
    admin = dataverse[1]
    client = dataverse_client_factory(url_budget=4000)
    ids = admin.bulk("leads", leads(300))
    wanted = list(reversed(ids[:250])) + [str(uuid.uuid4())]
    before = client.requests_made
    rows = client.get_by_ids("leads", wanted, ["emailaddress1"])
    assert [r["leadid"] for r in rows] == wanted[:-1]
    assert all("@odata.etag" in r for r in rows)
    assert client.requests_made - before > 1


def test_single_writes_and_error_mapping(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    c = dataverse_client
    rid = c.create("leads", {"firstname": "A", "lastname": "B"})
    row = c.get_by_ids("leads", [rid], ["firstname"])[0]
    c.update("leads", rid, {"firstname": "A2"}, etag=row["@odata.etag"])
    with pytest.raises(ConcurrencyConflict):
        c.update("leads", rid, {"firstname": "A3"}, etag=row["@odata.etag"])
    before = c.requests_made
    with pytest.raises(DataverseError) as info:
        c.update("leads", str(uuid.uuid4()), {"firstname": "nobody"})
    assert (info.value.status, info.value.code) == (404, "0x80040217") and c.requests_made - before == 1
    with pytest.raises(DataverseError) as info:
        c.create("leads", {"lastname": "x" * 51})
    assert info.value.code == "0x80044331" and not isinstance(info.value, DataverseTransient)
    with pytest.raises(ConcurrencyConflict):
        c.upsert("leads", rid, {"firstname": "dup"}, create_only=True)
    with pytest.raises(DataverseError):
        c.upsert("leads", str(uuid.uuid4()), {"firstname": "none"}, update_only=True)
    admin.define_key("contact", ["emailaddress1"])
    cid = c.upsert("contacts", {"emailaddress1": "o'neil@x.com"}, {"lastname": "O'Neil"})
    assert c.upsert("contacts", {"emailaddress1": "O'NEIL@x.com"}, {"firstname": "Ed"}) == cid
    assert admin.get("contacts", cid)["fullname"] == "Ed O'Neil"  # type: ignore[index]
    c.delete("contacts", cid)
    assert admin.get("contacts", cid) is None


def test_qualify_lead_and_metadata(dataverse: Env, dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    lead_id = admin.create("leads", {"firstname": "Q", "lastname": "L", "emailaddress1": "q@x.com"})["leadid"]
    contact_id = dataverse_client.qualify_lead(lead_id)
    assert admin.get("contacts", contact_id)["_originatingleadid_value"] == lead_id  # type: ignore[index]
    with pytest.raises(DataverseError):
        dataverse_client.qualify_lead(lead_id)
    meta = dataverse_client.attributes("lead")
    email = meta.attributes["emailaddress1"]
    assert (email.attribute_type, email.max_length, email.format) == ("String", 100, "Email")
    assert meta.attributes["lastname"].required_level == "ApplicationRequired"
    assert meta.attributes["leadsourcecode"].options == tuple(range(1, 11))
    assert meta.attributes["statecode"].options == (0, 1, 2)
    assert meta.attributes["fullname"].valid_for_create is False
    before = dataverse_client.requests_made
    assert dataverse_client.attributes("lead") is meta and dataverse_client.requests_made == before


def test_owners_refusals_and_lead_states_as_dataverse_answers_them(dataverse: Env,
                                                                  dataverse_client: DataverseClient) -> None:
    admin, c = dataverse[1], dataverse_client
    user = admin.create("systemusers", {"fullname": "Grace Hopper", "internalemailaddress": "grace@x.com",
                                        "isdisabled": False})["systemuserid"]
    team = admin.create("teams", {"name": "Inside Sales"})["teamid"]
    gone = admin.create("systemusers", {"fullname": "Gone", "isdisabled": True})["systemuserid"]
    for table, owner in (("systemusers", user), ("teams", team)):
        rid = c.create("leads", {"lastname": "Owned", "ownerid@odata.bind": f"/{table}({owner})"})
        assert admin.get("leads", rid)["_ownerid_value"] == owner  # type: ignore[index]
    refusals = [({"ownerid@odata.bind": f"/systemusers({uuid.uuid4()})"}, 404, "0x80040217"),
                ({"ownerid@odata.bind": f"/systemusers({gone})"}, 400, "0x80040225"),
                ({"ownerid@odata.bind": f"/contacts({user})"}, 400, "0x8004431a"),
                ({"statecode": 2, "statuscode": 3}, 400, "0x80040203")]
    for body, status, code in refusals:
        with pytest.raises(DataverseError) as info:
            c.create("leads", {"lastname": "Refused", **body})
        assert (info.value.status, info.value.code) == (status, code)
    admin.deny("prvAssignLead")
    with pytest.raises(DataverseError) as info:
        c.create("leads", {"lastname": "Assigned", "ownerid@odata.bind": f"/teams({team})"})
    assert info.value.status == 403 and "prvAssignLead" in info.value.message
    admin.deny()
    closed = c.create("leads", {"lastname": "Closed", "statecode": 2})
    assert admin.get("leads", closed)["statuscode"] == 4  # type: ignore[index]  # the state's default reason
    # duplicate detection: only when asked for, and only while a rule is published
    admin.duplicate_rule("lead", ["lastname"])
    assert c.create("leads", {"lastname": "Closed"}) and c.create("leads", {"lastname": "Twin"})
    with pytest.raises(ConcurrencyConflict) as dup:
        c.create("leads", {"lastname": "TWIN"}, detect_duplicates=True)
    assert dup.value.code == "0x80040333"
    admin.clear_duplicate_rules()
    assert c.create("leads", {"lastname": "TWIN"}, detect_duplicates=True)
    admin.plugin_error("lead", "Create", "No leads on Sundays.")
    with pytest.raises(DataverseError) as plugin:
        c.create("leads", {"lastname": "Plug"})
    assert (plugin.value.status, plugin.value.code, plugin.value.message) == (400, "0x80040265", "No leads on Sundays.")
    admin.clear_plugins()


def test_qualify_into_an_existing_contact_creates_none(dataverse: Env) -> None:
    admin = dataverse[1]
    lead_id = admin.create("leads", {"lastname": "L", "emailaddress1": "e@x.com"})["leadid"]
    contact_id = admin.create("contacts", {"lastname": "L", "emailaddress1": "e@x.com"})["contactid"]
    assert admin.qualify(lead_id, existing_contact=contact_id) == contact_id
    lead = admin.get("leads", lead_id)
    assert lead is not None and (lead["statecode"], lead["statuscode"], lead["_parentcontactid_value"]) == (
        1, 3, contact_id)
    assert len(admin.find("contacts", emailaddress1="e@x.com")) == 1
