"""End to end: change events POSTed to the real app in devhost, as each service sends them,
cross to the other side with no poll (the pollers never fire here once people are linked).

The emulators do not fire webhooks on this branch, so the test posts the documented wire
formats itself: a RemoteExecutionContext for Dataverse, `{"leadId": …}` for Marketo.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from devhost.harness import Harness, by_hand, eventually, running
from shared.runtime import services
from tests.test_events import context

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def event(h: Harness, source: str, body: bytes, **headers: str) -> httpx.Response:
    """A webhook call with the function key as Dataverse's WebhookKey auth sends it (?code=)."""
    return httpx.post(f"{h.stack.app_url}/api/events/{source}", params={"code": h.stack.config.function_key},
                      content=body, headers={"content-type": "application/json", **headers}, timeout=60)


def dataverse_event(h: Harness, message: str, entity: str, record_id: str) -> httpx.Response:
    return event(h, "dataverse", json.dumps(context(message, entity, record_id)).encode(),
                 **{"x-ms-dynamics-entity-name": entity, "x-ms-dynamics-request-name": message})


def linked_lead(h: Harness) -> tuple[str, int]:
    address = f"ev{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Grace", "lastname": "Hopper", "emailaddress1": address,
                                        "subject": "events"})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    return str(lead["leadid"]), int(person["id"])


def test_a_dataverse_update_event_reaches_marketo_without_a_poll(h: Harness) -> None:
    lead_id, marketo_id = linked_lead(h)
    h.dataverse.update("leads", lead_id, {"jobtitle": "Rear Admiral"})
    assert dataverse_event(h, "Update", "lead", lead_id).status_code == 202

    def title() -> Any:
        person = h.marketo.get_lead(marketo_id)
        return person is not None and person.get("title") == "Rear Admiral"

    eventually(title, timeout=60)


def marketo_reads(h: Harness) -> int:
    return int(h.marketo.stats()["calls_by_endpoint"].get("GET /rest/v1/leads.json", 0))


def test_an_event_for_our_own_write_costs_no_marketo_read(h: Harness) -> None:
    """Dataverse calls for LeadSync's own writes too: such an echo is dropped after the
    Dataverse read, as the poller drops it, before it costs a Marketo read."""
    lead_id, _ = linked_lead(h)
    before = marketo_reads(h)
    assert dataverse_event(h, "Update", "lead", lead_id).status_code == 202
    eventually(lambda: not services().events.pending(), timeout=60)
    h.drain()
    assert marketo_reads(h) == before


def dataverse_reads(h: Harness) -> int:
    return int(h.dataverse.stats()["requests_by_operation"].get("GET leads", 0))


def test_a_marketo_event_for_an_unchanged_person_costs_no_dataverse_read(h: Harness) -> None:
    """Marketo calls for LeadSync's own writes too, and its webhook does not say who made a
    change: a person whose values all equal the last agreed ones is dropped after the
    Marketo read, before it costs a Dataverse read; a changed one is read and applied."""
    lead_id, marketo_id = linked_lead(h)
    before = dataverse_reads(h)
    assert event(h, "marketo", b'{"leadId": %d}' % marketo_id).status_code == 202
    eventually(lambda: not services().events.pending(), timeout=60)
    h.drain()
    assert dataverse_reads(h) == before
    h.marketo.update_lead(marketo_id, title="Navigator")
    assert event(h, "marketo", b'{"leadId": %d}' % marketo_id).status_code == 202
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("jobtitle") == "Navigator", timeout=60)
    assert dataverse_reads(h) > before


def test_an_event_for_a_change_leadsync_made_is_dropped_before_it_is_buffered(h: Harness) -> None:
    """A context naming LeadSync's own application user (WhoAmI) as the initiating user is
    answered "ignored" and costs nothing more; the same change by anyone else is buffered."""
    lead_id, _ = linked_lead(h)
    ours = str(services().dataverse.who_am_i()["UserId"])
    body = context("Update", "lead", lead_id)
    mine = json.dumps({**body, "InitiatingUserId": ours.upper()}).encode()
    # The app asks WhoAmI in the background on its first Dataverse event: until then it buffers.
    eventually(lambda: event(h, "dataverse", mine).json()["status"] == "ignored", timeout=60)
    eventually(lambda: not services().events.pending(), timeout=60)
    answer = event(h, "dataverse", mine)
    assert answer.status_code == 202 and answer.json()["status"] == "ignored"
    assert services().events.pending() == {}
    assert event(h, "dataverse", json.dumps(body).encode()).json()["status"] == "accepted"


def test_a_marketo_event_reaches_dynamics_without_a_poll(h: Harness) -> None:
    lead_id, marketo_id = linked_lead(h)
    h.marketo.update_lead(marketo_id, title="Commodore")
    assert event(h, "marketo", b'{"leadId": %d}' % marketo_id).status_code == 202
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("jobtitle") == "Commodore", timeout=60)


def test_a_marketo_event_for_a_new_person_creates_no_dynamics_lead(h: Harness) -> None:
    address = f"ev{uuid.uuid4().hex[:10]}@example.com"
    marketo_id = h.marketo.create_lead(email=address, lastName="Newcomer")
    assert event(h, "marketo", b'{"leadId": %d}' % marketo_id).status_code == 202
    eventually(lambda: not services().events.pending(), timeout=60)  # drained into work...
    h.drain()  # ...and the work applied
    assert h.dataverse.find("leads", emailaddress1=address) == []
    assert services().links.get(marketo_id) is None


def test_a_dataverse_delete_event_flags_the_marketo_person(h: Harness) -> None:
    lead_id, marketo_id = linked_lead(h)
    h.dataverse.delete("leads", lead_id)
    assert dataverse_event(h, "Delete", "lead", lead_id).status_code == 202
    eventually(lambda: (h.marketo.get_lead(marketo_id) or {}).get("msftIsDeleted") is True, timeout=60)
    assert services().links.get(marketo_id) is None


def test_a_delete_event_for_a_record_that_still_exists_deletes_nothing(h: Harness) -> None:
    """A forged, replayed or reordered Delete: the record is still there, so nothing is flagged."""
    lead_id, marketo_id = linked_lead(h)
    assert dataverse_event(h, "Delete", "lead", lead_id).status_code == 202
    eventually(lambda: not services().events.pending(), timeout=60)
    h.drain()
    assert (h.marketo.get_lead(marketo_id) or {}).get("msftIsDeleted") is not True
    link = services().links.get(marketo_id)
    assert link is not None and link.dynamics_id == lead_id.lower()


@pytest.mark.parametrize("source,body", [
    ("marketo", b'{"leadId": 1}'),
    ("dataverse", json.dumps(context("Update", "lead", str(uuid.uuid4()))).encode()),
])
@pytest.mark.parametrize("code", [None, "wrong-key"])
def test_without_the_function_key_an_event_is_refused_and_nothing_is_buffered(h: Harness, source: str, body: bytes,
                                                                              code: str | None) -> None:
    """The host checks the key (`?code=`, as Dataverse's WebhookKey sends it) before the function runs."""
    eventually(lambda: services().events.pending() == {}, timeout=60)  # what earlier tests buffered is drained
    response = httpx.post(f"{h.stack.app_url}/api/events/{source}", params={"code": code} if code else None,
                          content=body, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 401
    assert services().events.pending() == {}


def test_a_burst_of_a_thousand_events_costs_a_few_marketo_reads(h: Harness) -> None:
    """1,000 Marketo events for 100 linked people, 20 calls in flight (Marketo's cap): they
    are coalesced into a few work messages, each one Marketo read, instead of 1,000."""
    people = []
    for _ in range(4):  # 25 new leads per round, linked by one sync
        addresses = [f"burst{uuid.uuid4().hex[:10]}@example.com" for _ in range(25)]
        for address in addresses:
            h.dataverse.create("leads", {"lastname": "Burst", "emailaddress1": address, "subject": "burst"})
        h.sync()
        people += [int(h.marketo.find_leads(a)[0]["id"]) for a in addresses]
    for person in people:
        h.marketo.update_lead(person, title="Burst edit")
    reads_before = marketo_reads(h)
    calls = [people[i % len(people)] for i in range(1000)]
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda p: event(h, "marketo", b'{"leadId": %d}' % p).status_code, calls))
    assert set(statuses) == {202}
    eventually(lambda: not services().events.pending(), timeout=120)
    h.drain()
    reads = marketo_reads(h) - reads_before
    print(f"1000 events for {len(people)} people: {reads} Marketo reads")
    assert 1 <= reads <= 100
    assert all(h.dataverse.find("leads", emailaddress1=p["email"])[0]["jobtitle"] == "Burst edit"
               for p in (h.marketo.get_lead(i) or {} for i in people[:5]))
