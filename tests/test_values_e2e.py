"""End to end: values travel exactly as written, and a malformed message leaks no personal data.

One devhost stack (Azurite, both emulators); pollers run on demand.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest

from devhost.harness import Harness, by_hand, eventually, running
from shared.runtime import services
from shared.state.workqueue import FROM_MARKETO

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def email() -> str:
    return f"p{uuid.uuid4().hex[:10]}@example.com"


def test_surrounding_spaces_are_kept_alike_on_create_and_on_update(h: Harness) -> None:
    marketo_id = h.marketo.create_lead(email=email(), firstName="  Bob  ", lastName="\tSmith ", company=" Acme")
    created = h.sync_person(marketo_id)
    assert created.status_code == 201, created.text
    lead_id = created.json()["dynamicsId"]
    lead = h.dataverse.get("leads", lead_id)
    assert lead is not None
    assert (lead["firstname"], lead["lastname"], lead["companyname"]) == ("  Bob  ", "\tSmith ", " Acme")

    h.marketo.update_lead(marketo_id, firstName=" Carl ", title="  Boss")
    h.sync()
    lead = h.dataverse.get("leads", lead_id)
    assert lead is not None and (lead["firstname"], lead["jobtitle"]) == (" Carl ", "  Boss")

    # A change of spaces alone is a change too, and the other way round.
    h.dataverse.update("leads", lead_id, {"firstname": "Carl", "companyname": " Acme "})
    h.sync()
    person = h.marketo.get_lead(marketo_id)
    assert person is not None and (person["firstName"], person["company"]) == ("Carl", " Acme ")


def test_a_new_dynamics_lead_reaches_marketo_with_its_spaces(h: Harness) -> None:
    address = email()
    h.dataverse.create("leads", {"firstname": " Dan", "lastname": "Doe  ", "emailaddress1": address, "subject": "x"})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    assert (person["firstName"], person["lastName"]) == (" Dan", "Doe  ")


@pytest.mark.parametrize("body", [
    '{"v": "Zebedee Quux", "source": "marketo", "kind": "changed", "ids": [1]}',
    '{"v": 1, "source": "Zebedee Quux <zq@example.com>", "kind": "changed", "ids": [1]}',
    '{"v": 1, "source": "dynamics", "kind": "changed", "entity": "Zebedee Quux", "ids": ["x"]}',
    '{"v": 1, "source": "marketo", "kind": "changed", "ids": ["Zebedee Quux"], "note": "zq@example.com"}',
    "Zebedee Quux, zq@example.com",
])
def test_a_malformed_message_leaks_no_name_to_the_log_or_the_activity_entry(
        h: Harness, body: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sent = services().storage.queue(FROM_MARKETO).send_message(body)
    (entry,) = eventually(lambda: [e for e in h.activity("poison") if e.details.get("message_id") == sent.id])
    assert entry.message.startswith(f"bad message on {FROM_MARKETO}: ")
    logged = eventually(lambda: [r for r in caplog.records if sent.id in r.getMessage()])
    for text in (entry.message, json.dumps(entry.details), *(r.getMessage() for r in logged)):
        assert "Zebedee" not in text and "Quux" not in text and "zq@" not in text, text
    poisoned = services().storage.queue(f"{FROM_MARKETO}-poison").peek_messages(max_messages=32)
    assert body in [m.content for m in poisoned]  # the message itself is kept unchanged for a retry
