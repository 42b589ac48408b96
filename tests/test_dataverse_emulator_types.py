"""The Dataverse emulator's typed columns against the Web API's documented behaviour, over
real HTTPS: date behaviours, numbers' precision and range, money's currency, multi-select
choices, lookups bound with @odata.bind, and the metadata and formatted values of each."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from devhost.emulators.dataverse.typed import BASE_CURRENCY, EURO

Env = tuple[DataverseEmulator, DataverseAdmin]
ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0", "If-None-Match": "null"}
ANNOTATED = {"Prefer": 'odata.include-annotations="*"'}
FORMATTED = "@OData.Community.Display.V1.FormattedValue"


@pytest.fixture
def api(dataverse: Env, dataverse_token: str) -> Iterator[httpx.Client]:
    emu = dataverse[0]
    with httpx.Client(base_url=emu.base_url + "/api/data/v9.2/",
                      headers={**ODATA, "Authorization": f"Bearer {dataverse_token}"},
                      verify=ssl.create_default_context(cafile=emu.ca_path), timeout=10) as client:
        yield client


def create(api: httpx.Client, entity_set: str, body: dict[str, Any]) -> str:
    resp = api.post(entity_set, json=body)
    assert resp.status_code == 204, resp.text
    return resp.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def read(api: httpx.Client, lead_id: str, select: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = api.get(f"leads({lead_id})", params={"$select": select}, headers=headers or {})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def error(resp: httpx.Response) -> tuple[int, str, str]:
    err = resp.json()["error"]
    return resp.status_code, err["code"], err["message"]


def test_metadata_of_each_typed_column(api: httpx.Client) -> None:
    base = "EntityDefinitions(LogicalName='lead')/Attributes"
    dates = {a["LogicalName"]: a for a in api.get(
        f"{base}/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
        params={"$select": "LogicalName,Format,DateTimeBehavior"}).json()["value"]}
    assert dates["estimatedclosedate"]["Format"] == "DateOnly"
    assert dates["estimatedclosedate"]["DateTimeBehavior"]["Value"] == "DateOnly"
    assert dates["new_lastvisit"]["DateTimeBehavior"]["Value"] == "UserLocal"
    [score] = [a for a in api.get(f"{base}/Microsoft.Dynamics.CRM.DecimalAttributeMetadata",
                                  params={"$select": "LogicalName,Precision,MinValue,MaxValue"}).json()["value"]
               if a["LogicalName"] == "new_score"]
    assert (score["Precision"], score["MinValue"], score["MaxValue"]) == (2, -100000000000.0, 100000000000.0)
    money = {a["LogicalName"]: a for a in api.get(f"{base}/Microsoft.Dynamics.CRM.MoneyAttributeMetadata",
                                                  params={"$select": "LogicalName,Precision"}).json()["value"]}
    assert money["budgetamount"]["Precision"] == 2
    [multi] = api.get(f"{base}/Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata",
                      params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"}).json()["value"]
    assert multi["LogicalName"] == "new_interests"
    assert [o["Value"] for o in multi["OptionSet"]["Options"]] == [1, 2, 3, 4]
    every = {a["LogicalName"]: a for a in api.get(base, params={"$select": "LogicalName,AttributeType,"
                                                                          "AttributeTypeName"}).json()["value"]}
    assert (every["new_interests"]["AttributeType"], every["new_interests"]["AttributeTypeName"]["Value"]) == \
        ("Virtual", "MultiSelectPicklistType")
    lookups = {a["LogicalName"]: a["Targets"] for a in api.get(
        f"{base}/Microsoft.Dynamics.CRM.LookupAttributeMetadata",
        params={"$select": "LogicalName,Targets"}).json()["value"]}
    assert lookups["parentaccountid"] == ["account"] and lookups["campaignid"] == ["campaign"]
    assert lookups["transactioncurrencyid"] == ["transactioncurrency"]


def test_dates_as_each_behaviour_stores_them(api: httpx.Client) -> None:
    lead_id = create(api, "leads", {"lastname": "D", "estimatedclosedate": "2024-05-01",
                                    "new_lastvisit": "2024-05-01T12:22:33+02:00"})
    row = read(api, lead_id, "estimatedclosedate,new_lastvisit", ANNOTATED)
    assert (row["estimatedclosedate"], row["new_lastvisit"]) == ("2024-05-01", "2024-05-01T10:22:33Z")
    assert row[f"estimatedclosedate{FORMATTED}"] == "5/1/2024"
    refused = [
        {"estimatedclosedate": "2024-05-01T00:00:00Z"},  # a Date Only column takes an Edm.Date
        {"estimatedclosedate": "2024-02-30"},
        {"new_lastvisit": "2024-05-01T10:00:00"},  # Edm.DateTimeOffset needs its offset
        {"new_lastvisit": "2024-05-01"},
    ]
    for body in refused:
        status, code, message = error(api.patch(f"leads({lead_id})", json=body))
        assert (status, code) == (400, "0x80048d19") and "Cannot convert the literal" in message, body
    status, _, message = error(api.patch(f"leads({lead_id})", json={"estimatedclosedate": "1752-12-31"}))
    assert status == 400 and "outside the valid range" in message


def test_numbers_are_rounded_to_precision_and_kept_in_range(api: httpx.Client) -> None:
    lead_id = create(api, "leads", {"lastname": "N", "new_score": 12.345, "budgetamount": 1234.5})
    row = read(api, lead_id, "new_score,budgetamount,_transactioncurrencyid_value", ANNOTATED)
    assert (row["new_score"], row["budgetamount"]) == (12.35, 1234.5)
    assert row["_transactioncurrencyid_value"] == BASE_CURRENCY  # the org's base currency, set by the platform
    assert row[f"budgetamount{FORMATTED}"] == "$1,234.50"
    for body in ({"budgetamount": -1}, {"new_score": 1e12}):
        status, code, message = error(api.patch(f"leads({lead_id})", json=body))
        assert (status, code) == (400, "0x80044330") and "outside the valid range" in message
    for body in ({"new_score": "12.5"}, {"budgetamount": True}):
        assert error(api.patch(f"leads({lead_id})", json=body))[:2] == (400, "0x80048d19")
    euro = create(api, "leads", {"lastname": "E", "budgetamount": 10,
                                 "transactioncurrencyid@odata.bind": f"/transactioncurrencies({EURO})"})
    assert read(api, euro, "budgetamount", ANNOTATED)[f"budgetamount{FORMATTED}"] == "€10.00"


def test_multi_select_choices_are_option_numbers_as_text(api: httpx.Client) -> None:
    lead_id = create(api, "leads", {"lastname": "M", "new_interests": "3,1"})
    row = read(api, lead_id, "new_interests", ANNOTATED)
    assert (row["new_interests"], row[f"new_interests{FORMATTED}"]) == ("1,3", "Software; Services")
    status, code, message = error(api.patch(f"leads({lead_id})", json={"new_interests": "1,9"}))
    assert (status, code) == (400, "0x8004431a") and "The value 9 of 'new_interests'" in message
    assert error(api.patch(f"leads({lead_id})", json={"new_interests": [1, 3]}))[:2] == (400, "0x80048d19")


def test_lookups_are_written_by_bind_and_read_as_value_properties(api: httpx.Client) -> None:
    account = create(api, "accounts", {"name": "Acme"})
    lead_id = create(api, "leads", {"lastname": "L", "parentaccountid@odata.bind": f"/accounts({account})"})
    row = read(api, lead_id, "_parentaccountid_value", ANNOTATED)
    assert row["_parentaccountid_value"] == account
    assert row[f"_parentaccountid_value{FORMATTED}"] == "Acme"
    assert row["_parentaccountid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    # The column itself is no property of the entity type: only its navigation property binds.
    status, code, _ = error(api.patch(f"leads({lead_id})", json={"parentaccountid": account}))
    assert (status, code) == (400, "0x80048d19")
    missing = "0f8fad5b-d9cb-469f-a165-70867728950e"
    status, code, message = error(api.patch(f"leads({lead_id})",
                                            json={"parentaccountid@odata.bind": f"/accounts({missing})"}))
    assert (status, code, message) == (404, "0x80040217", f"account With Id = {missing} Does Not Exist")
    status, code, _ = error(api.patch(f"leads({lead_id})",
                                      json={"parentaccountid@odata.bind": f"/campaigns({account})"}))
    assert (status, code) == (400, "0x8004431a")
    assert api.patch(f"leads({lead_id})", json={"parentaccountid@odata.bind": None}).status_code == 204
    assert read(api, lead_id, "_parentaccountid_value")["_parentaccountid_value"] is None
    found = api.get("accounts", params={"$select": "name",
                                        "$filter": "Microsoft.Dynamics.CRM.In(PropertyName='name',"
                                                   "PropertyValues=['ACME'])"}).json()["value"]
    assert [a["accountid"] for a in found] == [account]  # text compares ignoring case
