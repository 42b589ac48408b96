"""Events end to end, nothing posted by hand: `leadsync setup dataverse-webhook` registers the
app with the Dataverse emulator, a Marketo trigger campaign calls the app's receiver as the
definition `leadsync setup marketo-webhook` prints, and an edit on either side crosses with
no poll at all."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from devhost.harness import Harness, by_hand, eventually, running
from shared.runtime import services

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def leadsync(h: Harness, *args: str) -> str:
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={**h.stack.env, "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_edits_cross_by_events_alone_once_both_services_are_wired(h: Harness) -> None:
    key = h.stack.config.function_key
    registered = json.loads(leadsync(h, "setup", "dataverse-webhook", "--url",
                                     f"{h.stack.app_url}/api/events/dataverse", "--key", key, "--json"))
    again = json.loads(leadsync(h, "setup", "dataverse-webhook", "--url",
                                f"{h.stack.app_url}/api/events/dataverse", "--key", key, "--json"))
    assert [s["id"] for s in again["steps"]] == [s["id"] for s in registered["steps"]]  # updated, not added
    h.marketo.add_campaign("LeadSync: changes", "Data Value Changes", fields=["title", "firstName"],
                           url=f"{h.stack.app_url}/api/events/marketo", template='{"leadId": {{lead.Id}}}',
                           headers={"x-functions-key": key})

    address = f"wired{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address,
                                        "subject": "events"})
    h.sync()  # links the pair (the background sync creates the Marketo person)
    (person,) = h.marketo.find_leads(address)
    marketo_id, lead_id = int(person["id"]), str(lead["leadid"])

    h.dataverse.update("leads", lead_id, {"jobtitle": "Analyst by event"})

    def marketo_title() -> Any:
        found = h.marketo.get_lead(marketo_id)
        return found is not None and found.get("title") == "Analyst by event"

    eventually(marketo_title, timeout=60)  # no poll ran: the Dataverse webhook carried it

    heard = services().events.last_received().get("dynamics")
    assert heard is not None
    calls = h.dataverse.webhook_stats()["sent"]
    h.marketo.update_lead(marketo_id, firstName="Augusta")

    def dynamics_first_name() -> Any:
        return (h.dataverse.get("leads", lead_id) or {}).get("firstname") == "Augusta"

    eventually(dynamics_first_name, timeout=60)  # and the Marketo campaign's webhook the other way
    # LeadSync's own write came back as a Dataverse event: answered, and dropped before any read.
    eventually(lambda: h.dataverse.webhook_stats()["sent"] > calls, timeout=60)
    assert services().events.last_received().get("dynamics") == heard
