"""A `sync-person` call that never gets its work done is finished by the app itself, exactly once.

Marketo calls a webhook once: a call that dies (here: Dataverse failing until the call
gives up with a 500) must not leave its person without a lead. Its pending request
surfaces after LEADSYNC_REALTIME_FINISH_AFTER_S and the Marketo poll timer finishes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devhost.harness import Harness, by_hand, eventually, running
from shared.config import Settings
from shared.ops.commands import poison_messages, retry_poison
from shared.runtime import Services
from shared.state import activity
from shared.state.pending import PENDING_QUEUE, Pending

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand(LEADSYNC_REALTIME_FINISH_AFTER_S="2"), first_sync=False) as harness:
        yield harness


@pytest.fixture
def svc(h: Harness) -> Iterator[Services]:
    services = Services.from_settings(Settings.from_env(h.stack.env))
    try:
        yield services
    finally:
        services.close()


def pending_depth(svc: Services) -> int:
    return int(svc.storage.queue(PENDING_QUEUE).get_queue_properties().approximate_message_count)


def test_an_answered_call_leaves_nothing_to_finish(h: Harness, svc: Services) -> None:
    email = f"answered-{uuid.uuid4().hex[:8]}@example.com"
    lead_id = h.marketo.create_lead(email=email, lastName="Answered")
    assert h.sync_person(lead_id).status_code == 201
    assert pending_depth(svc) == 0


def test_a_linked_persons_call_records_no_request_and_a_new_persons_call_always_does(h: Harness,
                                                                                     svc: Services) -> None:
    """A linked person is answered from its link, with nothing to finish; a person the call may
    create a lead for is never served before its request is recorded (here: cannot be)."""
    linked = h.marketo.create_lead(email=f"linked-{uuid.uuid4().hex[:8]}@example.com", lastName="Linked")
    assert h.sync_person(linked).status_code == 201
    new_email = f"unrecorded-{uuid.uuid4().hex[:8]}@example.com"
    new = h.marketo.create_lead(email=new_email, lastName="Unrecorded")
    queue = svc.storage.raw_queue(PENDING_QUEUE)
    queue.delete_queue()  # no request can be recorded while it is gone
    try:
        again = h.sync_person(linked)
        assert (again.status_code, again.json()["status"], again.json()["linked"]) == (200, "exists", True)
        assert h.sync_person(new).status_code == 500
    finally:
        queue.create_queue()
    assert h.dataverse.find("leads", emailaddress1=new_email) == []


def test_the_webhooks_marketo_entries_go_in_one_call_at_the_next_marketo_poll(h: Harness) -> None:
    people = [h.marketo.create_lead(email=f"outbox-{uuid.uuid4().hex[:8]}@example.com", lastName=f"Box{i}")
              for i in range(3)]
    for marketo_id in people:
        assert h.sync_person(marketo_id).status_code == 201
    assert not any("created Dynamics lead" in str(a) for m in people for a in h.marketo.activities(m))
    before = h.marketo.stats()["calls_by_endpoint"]
    h.poll(dataverse=False)
    for marketo_id in people:
        assert any("created Dynamics lead" in str(a) for a in h.marketo.activities(marketo_id))
    sent = h.marketo.stats()["calls_by_endpoint"]
    key = next(k for k in sent if "activities/external" in k and "types" not in k)
    assert sent[key] - before.get(key, 0) == 1  # three people's entries, one Marketo call


def test_a_call_that_died_is_finished_by_the_app_with_one_lead(h: Harness, svc: Services) -> None:
    email = f"finished-{uuid.uuid4().hex[:8]}@example.com"
    lead_id = h.marketo.create_lead(email=email, firstName="Late", lastName="Finished")
    h.dataverse.fault("http503", count=1000, path_prefix="/api/data/v9.2/leads")
    try:
        # Dataverse down: the call answers 503 "unavailable" (never a bare 500), and the app finishes it later.
        response = h.sync_person(lead_id)
        assert (response.status_code, response.json()["status"]) == (503, "unavailable"), response.text
    finally:
        h.dataverse.clear_faults()
    assert h.dataverse.find("leads", emailaddress1=email) == []

    def finished() -> bool:
        h.poll(dataverse=False)  # the Marketo timer finishes requests whose calls died
        return len(h.dataverse.find("leads", emailaddress1=email)) == 1

    eventually(finished, timeout=90, every=1.0)
    link = svc.links.get(lead_id)
    assert link is not None and link.entity == "lead"
    for _ in range(2):  # nothing is left to run again: still exactly one lead
        h.poll(dataverse=False)
    assert len(h.dataverse.find("leads", emailaddress1=email)) == 1
    assert pending_depth(svc) == 0
    assert activity.CREATED in [e.kind for e in h.activity(f"m{lead_id}")]


def test_a_call_killed_before_its_answer_is_finished_by_the_poll_timer(h: Harness, svc: Services) -> None:
    """What a host killed mid-call leaves in storage: the pending request it accepted, nothing else."""
    email = f"killed-{uuid.uuid4().hex[:8]}@example.com"
    lead_id = h.marketo.create_lead(email=email, firstName="Killed", lastName="Midway")
    svc.pending.accept(Pending(lead_id, "op-killed"))  # surfaces after LEADSYNC_REALTIME_FINISH_AFTER_S (2 s)

    def finished() -> bool:
        h.poll(dataverse=False)
        return len(h.dataverse.find("leads", emailaddress1=email)) == 1

    eventually(finished, timeout=90, every=1.0)
    h.poll(dataverse=False)
    assert len(h.dataverse.find("leads", emailaddress1=email)) == 1 and pending_depth(svc) == 0


def test_a_bad_pending_message_is_poisoned_with_its_reason(h: Harness, svc: Services) -> None:
    poison = svc.storage.queue(f"{PENDING_QUEUE}-poison")
    poison.clear_messages()
    svc.storage.queue(PENDING_QUEUE).send_message('{"v": 1, "leadId": "seven", "op": "x"}')
    eventually(lambda: h.poll(dataverse=False) or pending_depth(svc) == 0, timeout=60, every=1.0)
    assert [m.content for m in poison.peek_messages()] == ['{"v": 1, "leadId": "seven", "op": "x"}']
    # Listed with its reason by `leadsync failures`, and left where it is by a retry (it would fail again).
    listed, _ = poison_messages(svc)
    (mine,) = [m for m in listed if m.queue == f"{PENDING_QUEUE}-poison"]
    assert "leadId must be a positive integer" in mine.reason
    (verdict,) = retry_poison(svc, dry_run=True, message_ids=[mine.message_id]).poison
    assert verdict.outcome == "left" and "leadId" in verdict.note


@pytest.mark.parametrize("text, reason", [
    ("nope", "not JSON"),
    ('{"v": 2, "leadId": 1, "op": "x"}', "version 1"),
    ('{"v": 1, "leadId": 0, "op": "x"}', "leadId"),
    ('{"v": 1, "leadId": true, "op": "x"}', "leadId"),
    ('{"v": 1, "leadId": 5}', "op"),
    ('{"v": 1, "leadId": 5, "op": "x", "try": 0}', "try"),
])
def test_pending_messages_are_read_strictly(text: str, reason: str) -> None:
    from shared.errors import BadMessage
    with pytest.raises(BadMessage, match=reason):
        Pending.from_json(text)


def test_a_pending_message_round_trips() -> None:
    request = Pending(1042, "op-1", tries=3)
    assert Pending.from_json(request.to_json()) == request
