"""End to end: money follows the map's currency. With Marketo's amounts in euros, a new lead
is bound to the euro; a lead kept in dollars takes no euro amount and gives none, reported."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devhost.emulators.dataverse.typed import BASE_CURRENCY, EURO
from devhost.harness import Harness, by_hand, eventually, running
from shared.state import activity
from tests.test_fieldtypes_e2e import FIELD_MAP

pytestmark = pytest.mark.e2e

IN_EUROS: dict[str, Any] = copy.deepcopy(FIELD_MAP)
for _entry in IN_EUROS["fields"]:
    if _entry["marketo"] == "budget":
        _entry["currency"] = "EUR"


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand(LEADSYNC_FIELD_MAP=json.dumps(IN_EUROS))) as harness:
        yield harness


def test_a_new_lead_is_bound_to_the_maps_currency_not_the_orgs(h: Harness) -> None:
    marketo_id = h.marketo.create_lead(email=f"eur.{uuid.uuid4().hex[:8]}@example.com", lastName="Euro", budget=250)
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    row = h.dataverse.get("leads", created.json()["dynamicsId"])
    assert row is not None and (row["budgetamount"], row["_transactioncurrencyid_value"]) == (250, EURO)


def test_a_lead_in_another_currency_exchanges_no_amount_either_way(h: Harness) -> None:
    marketo_id = h.marketo.create_lead(email=f"usd.{uuid.uuid4().hex[:8]}@example.com", lastName="Dollar")
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    lead_id = created.json()["dynamicsId"]
    h.sync()
    h.dataverse.update("leads", lead_id, {"_transactioncurrencyid_value": BASE_CURRENCY, "budgetamount": 5})
    h.marketo.update_lead(marketo_id, budget=7)
    h.sync()
    row = h.dataverse.get("leads", lead_id)
    person = h.marketo.get_lead(marketo_id)
    assert row is not None and person is not None
    assert (row["budgetamount"], person["budget"]) == (5, 7.0)
    failure = eventually(lambda: [e for e in h.activity(f"m{marketo_id}") if e.kind in activity.FAILURE_KINDS])[-1]
    messages = [p["message"] for p in failure.details.get("problems", []) if p["rule"] == "currency"]
    assert messages and all("USD" in m for m in messages), failure.details
