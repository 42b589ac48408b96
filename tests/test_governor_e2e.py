"""End to end: LeadSync's daily cap on Marketo's quota, and the operator's pause.

The real app in devhost against both emulators. The quota is configured (10,000 calls),
LeadSync may use 50 % of it and keeps 10 % for the real-time endpoint: the background sync
stops at 4,000 calls today, the real-time endpoint at 5,000. Another integration's calls
are counted by the emulator's admin API (`spend`), as Marketo's usage counts every user's.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from devhost.harness import Harness, by_hand, eventually, running
from shared.runtime import services
from shared.state.pause import CLEAR_FOR_S, PauseKind

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    config = by_hand(MARKETO_DAILY_QUOTA="10000", LEADSYNC_DAILY_CAP_PCT="50", LEADSYNC_REALTIME_RESERVE_PCT="10",
                     LEADSYNC_CAP_CHECK_S="0")
    with running(config) as harness:
        yield harness


def leadsync(h: Harness, *args: str) -> Result:
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={**h.stack.env, "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result


def paused(h: Harness) -> dict[str, Any] | None:
    found = json.loads(leadsync(h, "status", "--storage-only", "--json").stdout)["paused"]
    return dict(found) if found else None


def linked_person(h: Harness) -> tuple[str, int]:
    address = f"g{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Gov", "lastname": "Ernor", "emailaddress1": address,
                                        "companyname": "Cap"})
    h.sync()
    return lead["leadid"], int(h.marketo.find_leads(address)[0]["id"])


def newcomer(h: Harness) -> int:
    return h.marketo.create_lead(email=f"n{uuid.uuid4().hex[:10]}@example.com", firstName="New", lastName="Comer")


def spend_until(h: Harness, total: int) -> None:
    """Another integration spends calls until today's usage is `total` (or just over it)."""
    h.marketo.spend(max(0, total - h.marketo.spend(0)))


def title_of(h: Harness, lead_id: str) -> Any:
    return h.dataverse.get("leads", lead_id)["jobtitle"]  # type: ignore[index]


def test_the_cap_stops_the_background_then_the_real_time_endpoint_and_lifts_after_the_reset(h: Harness) -> None:
    lead_id, marketo_id = linked_person(h)
    spend_until(h, 4_010)
    h.marketo.update_lead(marketo_id, title="Edited over the cap")
    h.poll(dataverse=False)  # checks the cap first: paused, so the poll spends nothing more
    h.drain()
    assert title_of(h, lead_id) != "Edited over the cap"
    pause = services().pauses.current(fresh=True)
    assert pause is not None and pause.kind == PauseKind.CAP and not pause.realtime
    shown = paused(h)
    assert shown is not None and "LeadSync's daily cap" in shown["because"] and "of 10,000" in shown["because"]
    assert h.sync_person(newcomer(h)).status_code == 201  # the real-time reserve still serves

    spend_until(h, 5_010)
    h.poll(dataverse=False)
    pause = services().pauses.current(fresh=True, realtime=True)
    assert pause is not None and pause.realtime
    refused = h.sync_person(newcomer(h))
    assert refused.status_code == 503 and "daily cap" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1

    h.marketo.advance_to_daily_reset()  # a new day in Marketo: usage starts again from 0
    h.poll(dataverse=False)
    h.drain()
    assert services().pauses.current(fresh=True) is None
    eventually(lambda: title_of(h, lead_id) == "Edited over the cap", timeout=60)


def test_an_operator_pauses_and_resumes_the_background_sync(h: Harness) -> None:
    lead_id, marketo_id = linked_person(h)
    out = leadsync(h, "pause", "--reason", "moving the Dynamics org").stdout
    assert "an operator paused it: moving the Dynamics org" in out
    shown = paused(h)
    assert shown is not None and shown["because"] == "an operator paused it: moving the Dynamics org"
    time.sleep(CLEAR_FOR_S + 0.5)  # the app's processes trust their last "no pause" read this long
    h.marketo.update_lead(marketo_id, title="Edited while paused")
    h.poll(dataverse=False)
    h.drain()
    assert title_of(h, lead_id) != "Edited while paused"
    assert h.sync_person(newcomer(h)).status_code == 201  # the real-time endpoint keeps serving

    assert "resumed" in leadsync(h, "resume").stdout
    assert "not paused" in leadsync(h, "resume").stdout
    assert paused(h) is None
    h.poll(dataverse=False)  # the cursor never moved: the edit is read now
    h.drain()
    eventually(lambda: title_of(h, lead_id) == "Edited while paused", timeout=60)
