"""Conformance: Microsoft's `PowerPlatform-Dataverse-Client` (pinned in requirements-dev.txt) with
`azure-identity` drives the Dataverse emulator over HTTPS, as a user's script would.

The script points `ClientSecretCredential` at the emulator's authority (instance discovery off,
the emulator's CA trusted) and the SDK at the emulator's URL; the SDK's `requests` trusts the CA
through `REQUESTS_CA_BUNDLE`, as behind any private CA. Every limit stays at its real value.

Client gaps, documented and worked around here (never by a kinder emulator):
- the SDK never retries a 429: it raises `HttpError` with `retry_after`; the script waits and retries;
- the SDK has no change-tracking (delta link) API, so the change feed a script can build with it
  is "rows modified since" through `records.list(filter=modifiedon ge …)`.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from azure.identity import ClientSecretCredential
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError
from PowerPlatform.Dataverse.models.upsert import UpsertItem

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator

FORMATTED = "@OData.Community.Display.V1.FormattedValue"
T = TypeVar("T")
Env = tuple[DataverseEmulator, DataverseAdmin]


def make_sdk(emu: DataverseEmulator, monkeypatch: pytest.MonkeyPatch) -> DataverseClient:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_path)
    credential = ClientSecretCredential(
        emu.tenant, emu.client_id, emu.client_secret or "", authority=emu.base_url.removeprefix("https://"),
        disable_instance_discovery=True, connection_verify=emu.ca_path,
    )
    return DataverseClient(emu.base_url, credential)


@pytest.fixture
def sdk(dataverse: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[DataverseClient]:
    with make_sdk(dataverse[0], monkeypatch) as client:
        yield client


def service_code(err: pytest.ExceptionInfo[HttpError]) -> str:
    return str(err.value.details.get("service_error_code"))


def test_crud_and_error_codes(sdk: DataverseClient, dataverse: Env) -> None:
    lead_id = sdk.records.create("lead", {"firstname": "Ann", "lastname": "Lee", "subject": "Web lead"})
    ids = sdk.records.create("lead", [{"lastname": f"L{i}", "subject": "bulk"} for i in range(3)])  # CreateMultiple
    assert len(ids) == 3 and len(set(ids) | {lead_id}) == 4
    sdk.records.update("lead", lead_id, {"jobtitle": "CTO"})
    sdk.records.update("lead", ids, {"companyname": "Contoso"})  # UpdateMultiple
    record = sdk.records.retrieve("lead", lead_id, select=["firstname", "jobtitle"])
    assert record is not None and record["firstname"] == "Ann" and record["jobtitle"] == "CTO"
    assert {dataverse[1].get("leads", i)["companyname"] for i in ids} == {"Contoso"}  # type: ignore[index]
    with pytest.raises(HttpError) as too_long:
        sdk.records.create("lead", {"lastname": "x" * 51})
    assert too_long.value.status_code == 400 and service_code(too_long) == "0x80044331"
    with pytest.raises(HttpError) as unknown:
        sdk.records.create("lead", {"lastname": "x", "nosuchcolumn": 1})
    assert unknown.value.status_code == 400 and service_code(unknown) == "0x80048d19"
    sdk.records.delete("lead", lead_id)
    assert sdk.records.retrieve("lead", lead_id) is None  # 404 → None
    with pytest.raises(HttpError) as gone:
        sdk.records.delete("lead", lead_id)
    assert gone.value.status_code == 404 and service_code(gone) == "0x80040217"


def test_upsert_by_alternate_key(sdk: DataverseClient, dataverse: Env) -> None:
    item = UpsertItem(alternate_key={"emailaddress1": "ann@example.com"}, record={"lastname": "Lee"})
    with pytest.raises(HttpError) as undefined:  # leads ship with no alternate key: the service refuses
        sdk.records.upsert("lead", [item])
    assert undefined.value.status_code == 400 and service_code(undefined) == "0x80060888"
    dataverse[1].define_key("lead", ["emailaddress1"])
    sdk.records.upsert("lead", [item])
    sdk.records.upsert("lead", [UpsertItem(alternate_key={"emailaddress1": "ann@example.com"},
                                           record={"firstname": "Ann"})])
    sdk.records.upsert("lead", [  # UpsertMultiple
        UpsertItem(alternate_key={"emailaddress1": "ann@example.com"}, record={"jobtitle": "CTO"}),
        UpsertItem(alternate_key={"emailaddress1": "bob@example.com"}, record={"lastname": "Bob"}),
    ])
    rows = {r["emailaddress1"]: r for r in dataverse[1].find("leads")}
    assert set(rows) == {"ann@example.com", "bob@example.com"}
    assert (rows["ann@example.com"]["firstname"], rows["ann@example.com"]["jobtitle"]) == ("Ann", "CTO")


def test_paging_and_modified_since_feed(sdk: DataverseClient, dataverse: Env) -> None:
    dataverse[1].bulk("leads", [{"lastname": f"P{i}", "subject": "s"} for i in range(7)])
    pages = [len(page) for page in sdk.records.list_pages("lead", select=["lastname"], page_size=3)]
    assert pages == [3, 3, 1]
    ordered = sdk.records.list("lead", select=["lastname"], orderby=["lastname desc"], page_size=2)
    assert [r["lastname"] for r in ordered] == [f"P{i}" for i in range(6, -1, -1)]
    since = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(1.1)  # modifiedon has second precision; the feed's cursor must be strictly older
    changed = sdk.records.create("lead", {"lastname": "Changed", "subject": "s"})
    feed = sdk.records.list("lead", select=["lastname", "modifiedon"], filter=f"modifiedon gt {since}")
    assert changed in {r["leadid"] for r in feed}
    with pytest.raises(HttpError) as bad:
        sdk.records.list("lead", filter="nosuchcolumn eq 1")
    assert bad.value.status_code == 400


def test_formatted_values_and_lookup_annotations(
    sdk: DataverseClient, dataverse: Env
) -> None:
    contact = sdk.records.create("contact", {"firstname": "Cat", "lastname": "Doe"})
    lead_id = sdk.records.create("lead", {
        "lastname": "Lee", "subject": "s", "leadsourcecode": 8, "revenue": 1234.5, "new_synctomkto": True,
        "parentcontactid@odata.bind": f"/contacts({contact})",
    })
    cols = ["leadsourcecode", "statecode", "statuscode", "revenue", "new_synctomkto", "createdon",
            "_parentcontactid_value", "_ownerid_value"]
    plain = sdk.records.retrieve("lead", lead_id, select=cols)
    assert plain is not None and not [k for k in plain.data if "@" in k]
    shown = sdk.records.retrieve("lead", lead_id, select=cols,
                                 include_annotations="OData.Community.Display.V1.FormattedValue")
    assert shown is not None
    labels = {c: shown[c + FORMATTED] for c in cols if c + FORMATTED in shown.data}
    created = datetime.strptime(shown["createdon"], "%Y-%m-%dT%H:%M:%SZ")
    assert labels == {
        "leadsourcecode": "Web", "statecode": "Open", "statuscode": "New", "revenue": "$1,234.50",
        "new_synctomkto": "Yes", "createdon": f"{created:%-m/%-d/%Y %-I:%M %p}", "_parentcontactid_value": "Cat Doe",
        "_ownerid_value": labels["_ownerid_value"],
    } and labels["_ownerid_value"]
    assert "_parentcontactid_value@Microsoft.Dynamics.CRM.lookuplogicalname" not in shown.data
    every = sdk.records.list("lead", select=cols, include_annotations="*")
    row = every[0]
    assert row["_parentcontactid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert row["_parentcontactid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "parentcontactid"
    assert row["leadsourcecode" + FORMATTED] == "Web"


def test_table_and_column_metadata(sdk: DataverseClient, dataverse: Env) -> None:
    table = sdk.tables.get("lead")
    assert table is not None and table["entity_set_name"] == "leads" and table["primary_id_attribute"] == "leadid"
    assert sdk.tables.get("nosuchtable") is None
    strings = sdk.tables.list_columns("lead", select=["LogicalName", "MaxLength"], filter="AttributeType eq 'String'")
    lengths = {c["LogicalName"]: c["MaxLength"] for c in strings}
    assert lengths["firstname"] == 50 and lengths["subject"] == 300 and "leadsourcecode" not in lengths
    column = sdk.tables.get_column("lead", "leadsourcecode")
    assert column is not None and column["LogicalName"] == "leadsourcecode"
    typed = sdk.tables.list_columns("lead", typed=True)  # one RetrieveMetadataChanges call
    assert "revenue" in {c["LogicalName"] for c in typed}
    one = sdk.tables.get_column("lead", "firstname", typed=True, select=["LogicalName", "MaxLength"])
    assert one is not None and one["MaxLength"] == 50
    assert dataverse[1].stats()["requests_by_operation"].get("GET RetrieveMetadataChanges", 0) == 2


def test_retrieve_metadata_changes_version_stamps(dataverse: Env,
                                                  dataverse_token: str) -> None:
    emu, admin = dataverse
    query = ('{"Criteria":{"Conditions":[{"PropertyName":"LogicalName","ConditionOperator":"Equals",'
             '"Value":{"Type":"System.String","Value":"lead"}}]},"Properties":{"PropertyNames":["LogicalName"]}}')
    with httpx.Client(base_url=f"{emu.base_url}/api/data/v9.2/", verify=ssl.create_default_context(cafile=emu.ca_path),
                      headers={"Authorization": f"Bearer {dataverse_token}"}) as http:
        def changes(stamp: str | None) -> httpx.Response:
            path = "RetrieveMetadataChanges(Query=@q" + (",ClientVersionStamp=@s)" if stamp else ")")
            params = {"@q": query, **({"@s": f"'{stamp}'"} if stamp else {})}
            return http.get(path, params=params)

        first = changes(None).json()
        assert [e["LogicalName"] for e in first["EntityMetadata"]] == ["lead"]
        assert changes(first["ServerVersionStamp"]).json()["EntityMetadata"] == []  # nothing changed since
        admin.set_metadata("lead", "firstname", max_length=80)
        assert [e["LogicalName"] for e in changes(first["ServerVersionStamp"]).json()["EntityMetadata"]] == ["lead"]
        expired = changes("123!01/01/2020 00:00:00")
        assert expired.status_code == 400 and expired.json()["error"]["code"] == "0x80044352"
        assert http.post("RetrieveMetadataChanges(Query=@q)", params={"@q": query}).status_code == 405
        # The collection is strict too: unknown properties and tables are refused with the service's codes.
        bogus = http.get("EntityDefinitions", params={"$select": "LogicalName,Bogus"})
        assert bogus.status_code == 400 and "Bogus" in bogus.json()["error"]["message"]
        assert http.get("EntityDefinitions", params={"$filter": "Bogus eq 'x'"}).status_code == 400
        missing = http.get("EntityDefinitions(00000000-0000-0000-0000-000000000001)")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "0x80040217"
        by_name = http.get("EntityDefinitions", params={"$filter": "LogicalName eq 'contact'",
                                                        "$select": "MetadataId,EntitySetName"}).json()["value"]
        by_id = http.get(f"EntityDefinitions({by_name[0]['MetadataId']})").json()
        assert by_name[0]["EntitySetName"] == by_id["EntitySetName"] == "contacts"


def test_batch_with_changesets(sdk: DataverseClient, dataverse: Env) -> None:
    batch = sdk.batch.new()
    batch.records.create("lead", {"lastname": "Solo", "subject": "s"})
    with batch.changeset() as changes:
        changes.records.create("lead", {"lastname": "A", "subject": "s"})
        changes.records.create("lead", {"lastname": "B", "subject": "s"})
    result = batch.execute()
    assert not result.has_errors and len(result.entity_ids) == 3
    failing = sdk.batch.new()
    with failing.changeset() as changes:
        changes.records.create("lead", {"lastname": "Kept?", "subject": "s"})
        changes.records.create("lead", {"lastname": "x" * 51})
    outcome = failing.execute(continue_on_error=True)
    assert outcome.has_errors and outcome.failed[0].error_code == "0x80044331"
    assert sorted(r["lastname"] for r in dataverse[1].find("leads")) == ["A", "B", "Solo"]  # change set rolled back


def _retry_429(call: Callable[[], T], attempts: int = 20) -> T:
    """The SDK raises on 429 without retrying; a script honours Retry-After itself."""
    for _ in range(attempts - 1):
        try:
            return call()
        except HttpError as err:
            if err.status_code != 429:
                raise
            time.sleep(err.details.get("retry_after") or 1)
    return call()


def test_concurrency_429_is_raised_with_retry_after(
    sdk: DataverseClient, dataverse: Env, dataverse_token: str
) -> None:
    emu, admin = dataverse
    lead_id = sdk.records.create("lead", {"lastname": "Lee", "subject": "s"})
    assert emu.emulator is not None
    limit = emu.emulator.limits.concurrency
    assert limit == 52  # the real default
    admin.fault("slow", count=limit, delay_s=5.0)
    tls = ssl.create_default_context(cafile=emu.ca_path)
    holders = [threading.Thread(target=httpx.get, args=(f"{emu.base_url}/api/data/v9.2/WhoAmI",),
                                kwargs={"headers": {"Authorization": f"Bearer {dataverse_token}"},
                                        "verify": tls, "timeout": 30})
               for _ in range(limit)]
    for t in holders:
        t.start()
    deadline = time.monotonic() + 20
    while emu.emulator.in_flight < limit and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.emulator.in_flight == limit  # every slot is held by a slow call
    with pytest.raises(HttpError) as throttled:
        sdk.records.retrieve("lead", lead_id)
    assert throttled.value.status_code == 429 and service_code(throttled) == "0x80072326"
    assert throttled.value.details.get("retry_after") == 1
    record: Any = _retry_429(lambda: sdk.records.retrieve("lead", lead_id))
    assert record is not None and record["lastname"] == "Lee"
    for t in holders:
        t.join()


def test_token_is_renewed_near_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    # A short-lived token: azure-identity renews it before use instead of sending an expired one.
    with DataverseEmulator(tenant="t-short", client_id="app", client_secret="s", token_lifetime_s=2) as emu:
        admin = DataverseAdmin(emu.base_url, emu.ca_path)
        try:
            with make_sdk(emu, monkeypatch) as client:
                lead_id = client.records.create("lead", {"lastname": "Lee", "subject": "s"})
                time.sleep(2.5)  # the first token has expired at the emulator
                assert client.records.retrieve("lead", lead_id) is not None
            stats = admin.stats()
            assert stats["token_requests"] >= 2 and stats["responses_by_status"].get("401", 0) == 0
        finally:
            admin.close()
