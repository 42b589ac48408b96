"""End to end: Marketo's daily quota (607) runs out in the middle of edits on both sides.

The real app in devhost, on Azurite, against both emulators (limits on). The quota is
made to run out with the emulator's `daily_quota` limit and comes back the way it does in
Marketo: the emulator's clock passes midnight US Central. Failed messages are retried
1 s apart here (host.json says 10 s), so a message retried like any error would reach the
poison queue within seconds; the pause is re-checked every second.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from devhost.harness import Harness, eventually, running
from devhost.stack import ROOT, StackConfig
from shared.errors import QuotaExhausted
from shared.runtime import services
from shared.state import activity
from shared.state.cursors import MARKETO_CHANGES
from shared.state.links import Link
from shared.state.pending import PENDING_QUEUE
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

pytestmark = pytest.mark.e2e
NEVER = "0 0 0 1 1 *"
PEOPLE = 8
POISON = (f"{FROM_MARKETO}-poison", f"{FROM_DYNAMICS}-poison")
PAUSED = "because Marketo daily quota (607)"


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    host = json.loads((ROOT / "host.json").read_text())
    host["extensions"]["queues"]["visibilityTimeout"] = "00:00:01"
    with tempfile.TemporaryDirectory(prefix="leadsync-quota-") as tmp:
        host_json = Path(tmp) / "host.json"
        host_json.write_text(json.dumps(host))
        config = StackConfig(app_port=0, host_json=host_json, extra_env={
            "MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER, "MARKETO_DELETES_EVERY_S": "0",
            "MARKETO_QUOTA_RECHECK_S": "1", "LEADSYNC_CLOSED_LEAD_ACTION": "mark:leadStatus"})
        with running(config) as harness:
            yield harness


def leadsync_status(h: Harness, *args: str) -> str:
    # The CLI as an operator runs it: the app settings exported in its environment.
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], "status", *args],
                                env={**h.stack.env, "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def status(h: Harness, *args: str) -> dict[str, Any]:
    return dict(json.loads(leadsync_status(h, "--json", *args)))


def health_json(h: Harness) -> dict[str, Any]:
    response = httpx.get(f"{h.stack.app_url}/api/health.json",
                         headers={"x-functions-key": h.stack.config.function_key}, timeout=60)
    assert response.status_code == 200
    return dict(response.json())


def reasons(doc: dict[str, Any]) -> list[str]:
    return [r["text"] for r in doc["reasons"]]


def link_of(marketo_id: int) -> Link | None:
    return services().links.get(marketo_id)


def poisoned() -> int:
    return sum(services().queues.depth(name) for name in POISON)


def linked_people(h: Harness, count: int) -> list[tuple[str, int]]:
    """`count` Dynamics leads, synced: (lead id, Marketo id) each."""
    made = []
    for i in range(count):
        address = f"q{uuid.uuid4().hex[:10]}@example.com"
        lead = h.dataverse.create("leads", {"firstname": f"Quota{i}", "lastname": "Person", "emailaddress1": address,
                                            "companyname": "Before", "subject": "web form"})
        made.append((lead["leadid"], address))
    h.sync()
    return [(lead_id, int(h.marketo.find_leads(address)[0]["id"])) for lead_id, address in made]


def test_a_607_mid_edits_pauses_everything_loses_nothing_and_resumes_after_the_reset(h: Harness) -> None:
    people = linked_people(h, PEOPLE)
    half = PEOPLE // 2
    for i, (_, marketo_id) in enumerate(people[:half]):
        h.marketo.update_lead(marketo_id, title=f"Marketo edit {i}")
    for i, (lead_id, _) in enumerate(people[half:]):
        h.dataverse.update("leads", lead_id, {"telephone1": f"+1 555 0100 {i:03d}"})

    # A handful of calls are left: the quota runs out while both sides' edits are in flight.
    h.marketo.set_limits(daily_quota=h.marketo.stats()["counted_calls"] + 3)
    h.poll()
    eventually(lambda: h.marketo.stats()["responses_by_code"].get("607"), timeout=60)
    cursor = services().cursors.get(MARKETO_CHANGES)

    # Out of quota: more polls, and messages coming back, neither poison work nor move the cursor.
    for _ in range(5):
        h.poll()
        time.sleep(1.5)
    assert poisoned() == 0
    after = services().cursors.get(MARKETO_CHANGES)
    assert cursor is not None and after is not None and after.value == cursor.value
    pause = services().pauses.current(fresh=True)
    assert pause is not None and pause.code == "607" and PAUSED in pause.describe()
    waiting = services().queues.depth(FROM_MARKETO) + services().queues.depth(FROM_DYNAMICS)
    assert waiting >= 1  # the Dynamics edits wait on the queue, not in the poison queue

    # The webhook answers 503 with Retry-After and says so in the person's activity log.
    newcomer = h.marketo.create_lead(email=f"q{uuid.uuid4().hex[:10]}@example.com", firstName="Late",
                                     lastName="Comer", company="Quota")
    response = h.sync_person(newcomer)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["status"] == "paused" and PAUSED in response.json()["error"]
    assert [e.kind for e in h.activity(f"m{newcomer}")] == [activity.PAUSED]

    # The health page and `leadsync status` say why, from the shared state.
    for doc in (health_json(h), status(h)["health"]):
        assert doc["status"] == "failing"
        assert any(t.startswith("paused until ") and t.endswith(PAUSED) for t in reasons(doc)), reasons(doc)

    # The backlog: the people waiting, and no ETA while nothing can move.
    backlog = status(h)["backlog"]
    assert backlog["people"] >= waiting and backlog["eta_s"] is None, backlog
    assert backlog["text"].endswith("ETA — (paused)"), backlog

    # Marketo's day ends: the quota is back and everything that waited is applied.
    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)
    h.sync(3)
    assert poisoned() == 0
    for i, (lead_id, _) in enumerate(people[:half]):
        lead = h.dataverse.get("leads", lead_id)
        assert lead is not None and lead["jobtitle"] == f"Marketo edit {i}"
    for i, (_, marketo_id) in enumerate(people[half:]):
        person = h.marketo.get_lead(marketo_id)
        assert person is not None and person["phone"] == f"+1 555 0100 {i:03d}"
    assert services().pauses.current(fresh=True) is None
    for doc in (health_json(h), status(h)["health"]):
        assert not any(PAUSED in t for t in reasons(doc)), reasons(doc)
        assert doc["paused"] is None and doc["quota"]["used"] is not None
    backlog = status(h)["backlog"]
    assert (backlog["people"], backlog["eta_s"]) == (0, 0.0) and "ETA now" in backlog["text"], backlog
    # Nobody called the webhook again: the app finished the paused request itself.
    link = link_of(newcomer)
    assert link is not None and link.entity == "lead"
    assert h.sync_person(newcomer).status_code == 200


def test_the_webhook_answers_503_with_retry_after_and_an_activity_entry_until_the_reset(h: Harness) -> None:
    ((lead_id, linked),) = linked_people(h, 1)
    newcomer = h.marketo.create_lead(email=f"q{uuid.uuid4().hex[:10]}@example.com", firstName="Web",
                                     lastName="Hook", company="Quota")
    h.marketo.set_limits(daily_quota=1)
    with contextlib.suppress(QuotaExhausted):
        services().marketo.usage()  # today has spent at least this one call: the quota is used up
    pending = services().storage.queue(PENDING_QUEUE)
    waiting = pending.get_queue_properties().approximate_message_count
    response = h.sync_person(newcomer)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1 and response.json()["status"] == "paused"
    # Marketo will not call again: the request waits for the app to finish it after the pause.
    assert pending.get_queue_properties().approximate_message_count == waiting + 1
    (entry,) = h.activity(f"m{newcomer}")
    assert entry.kind == activity.PAUSED and PAUSED in entry.message
    assert h.marketo.get_lead(newcomer) is not None and link_of(newcomer) is None
    # A person linked already is answered from the link, which needs no Marketo call.
    known = h.sync_person(linked)
    assert known.status_code == 200 and known.json()["dynamicsId"] == lead_id
    assert services().pauses.current(fresh=True) is not None

    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)
    # Calls during the last second of the pause may still be answered 503 before a re-check.
    statuses = eventually(lambda: [s for s in [h.sync_person(newcomer).status_code] if s != 503], timeout=60,
                          every=0.5)
    assert statuses == [201]
    assert services().pauses.current(fresh=True) is None
    link = link_of(newcomer)
    assert link is not None and link.entity == "lead"


def test_a_linked_persons_webhook_never_takes_the_re_check_turn(h: Harness) -> None:
    """Answered from the link with no Marketo call, it cannot tell whether the quota is back."""
    ((_, linked),) = linked_people(h, 1)
    newcomer = h.marketo.create_lead(email=f"q{uuid.uuid4().hex[:10]}@example.com", firstName="Turn",
                                     lastName="Taker", company="Quota")
    h.marketo.set_limits(daily_quota=1)
    with contextlib.suppress(QuotaExhausted):
        services().marketo.usage()
    assert h.sync_person(newcomer).status_code == 503  # meets the 607: the pause is stored
    before = services().pauses.current(fresh=True)
    assert before is not None
    time.sleep(1.2)  # past the 1 s re-check: the next caller through the gate would probe Marketo
    for _ in range(3):
        assert h.sync_person(linked).status_code == 200
    after = services().pauses.current(fresh=True)
    assert after is not None and after.recheck_at == before.recheck_at
    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)
    eventually(lambda: h.poll(dataverse=False) or services().pauses.current(fresh=True) is None, timeout=60, every=0.5)


def test_health_and_status_say_paused_with_the_reason_and_stop_once_the_quota_is_back(h: Harness) -> None:
    health_json(h)  # a usage reading from before the quota ran out, as the page caches it
    h.marketo.set_limits(daily_quota=1)
    with contextlib.suppress(QuotaExhausted):
        services().marketo.usage()
    h.poll(dataverse=False)  # the poller meets the 607 and pauses the sync for every reader
    for doc in (health_json(h), status(h)["health"]):
        assert doc["status"] == "failing" and doc["quota"]["exhausted"] is True
        assert any(t.startswith("paused until ") and t.endswith(PAUSED) for t in reasons(doc)), reasons(doc)
    assert status(h, "--storage-only")["paused"]["because"] == "Marketo daily quota (607)"
    for table in (leadsync_status(h), leadsync_status(h, "--storage-only")):
        assert "paused until " in table and PAUSED in table

    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)
    eventually(lambda: h.poll(dataverse=False) or services().pauses.current(fresh=True) is None, timeout=60, every=0.5)
    for doc in (health_json(h), status(h)["health"]):
        assert doc["paused"] is None and doc["quota"]["exhausted"] is False and doc["quota"]["used"] is not None
        assert not any("quota" in t for t in reasons(doc)), reasons(doc)
    assert status(h, "--storage-only")["paused"] is None
    assert "paused" not in leadsync_status(h, "--storage-only")


def test_a_607_in_the_middle_of_the_marketo_feed_keeps_the_pages_read_and_skips_no_edit(h: Harness) -> None:
    people = linked_people(h, 10)
    before = services().cursors.get(MARKETO_CHANGES)
    for i, (_, marketo_id) in enumerate(people):
        h.marketo.update_lead(marketo_id, title=f"Paged edit {i}")
    # Two changes a page: the quota left runs out after about two of the five pages.
    used = services().marketo.usage()
    h.marketo.set_limits(max_batch=2, daily_quota=used + 3)
    h.poll(dataverse=False)
    moved = services().cursors.get(MARKETO_CHANGES)
    assert before is not None and moved is not None and moved.value != before.value  # the pages read are kept
    assert services().pauses.current(fresh=True) is not None

    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(max_batch=300, daily_quota=50_000)
    h.sync(3)
    assert poisoned() == 0
    for i, (lead_id, _) in enumerate(people):
        lead = h.dataverse.get("leads", lead_id)
        assert lead is not None and lead["jobtitle"] == f"Paged edit {i}"


def test_a_collision_and_a_webhook_caught_by_a_607_land_once_after_the_reset_with_no_second_call(
        h: Harness) -> None:
    """The collision is logged once, won by Marketo (a lead); the paused webhook's person is
    created by the app itself once the quota is back (the finisher looks again at each
    re-check, not at our clock's midnight), with no second call from Marketo."""
    people = linked_people(h, 3)
    (lead_id, marketo_id), (other_lead, other_id), (third_lead, _) = people
    h.marketo.update_lead(marketo_id, title="M wins")
    h.dataverse.update("leads", lead_id, {"jobtitle": "D loses"})
    h.marketo.update_lead(other_id, title="M only")
    h.dataverse.update("leads", third_lead, {"telephone1": "+1 555 0199"})
    h.marketo.set_limits(daily_quota=h.marketo.spend(0) + 2)  # today's calls, every user's
    h.poll()
    eventually(lambda: services().pauses.current(fresh=True), timeout=60)
    address = f"q{uuid.uuid4().hex[:10]}@example.com"
    newcomer = h.marketo.create_lead(email=address, firstName="Later", lastName="Comer", company="Quota")
    assert h.sync_person(newcomer).status_code == 503
    for _ in range(3):
        h.poll()
        time.sleep(1.5)
    assert poisoned() == 0

    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)

    def landed() -> bool:
        h.poll()
        lead, person = h.dataverse.get("leads", lead_id) or {}, h.marketo.get_lead(marketo_id) or {}
        return (lead.get("jobtitle") == person.get("title") == "M wins" and link_of(newcomer) is not None
                and (h.dataverse.get("leads", other_lead) or {}).get("jobtitle") == "M only")

    eventually(landed, timeout=120, every=1.0)
    h.sync(2)
    assert poisoned() == 0
    collisions = [e for e in h.activity(f"m{marketo_id}") if e.kind == activity.COLLISION]
    assert [e.details.get("winner") for e in collisions] == ["marketo"], [e.message for e in collisions]
    assert len(h.dataverse.find("leads", emailaddress1=address)) == 1
    assert (h.marketo.get_lead(people[2][1]) or {}).get("phone") == "+1 555 0199"


def test_a_607_on_a_dynamics_merge_defers_it_and_the_people_are_merged_once_the_quota_is_back(h: Harness) -> None:
    """Not a refusal to log and drop: the merge message waits, and its replay merges them."""
    (master, winner), (sub, loser) = linked_people(h, 2)
    h.marketo.fault("607", count=1, path_prefix=f"/rest/v1/leads/{winner}/merge")
    h.dataverse.merge("lead", master, sub, {})
    h.sync(3)
    assert h.marketo.stats()["faults_injected"].get("607") == 1
    assert h.marketo.get_lead(loser) is None  # merged away in Marketo after the pause
    assert activity.MERGED in [e.kind for e in h.activity(f"m{winner}")]
    assert activity.REJECTED not in [e.kind for e in h.activity(f"m{winner}")]
    assert poisoned() == 0 and services().pauses.current(fresh=True) is None


def test_a_607_on_a_closed_leads_mark_defers_it_and_the_mark_lands_once_the_quota_is_back(h: Harness) -> None:
    """The read of the person goes through, the mark meets the 607: the message waits and its
    replay marks and parks the lead, rather than logging a refusal and parking it unmarked."""
    ((lead_id, marketo_id),) = linked_people(h, 1)
    h.marketo.set_limits(daily_quota=h.marketo.spend(0) + 1)  # the applier's read, then 607 on the mark
    h.dataverse.update("leads", lead_id, {"statecode": 2, "statuscode": 4})  # disqualified: Lost
    h.poll(marketo=False)
    eventually(lambda: services().pauses.current(fresh=True), timeout=60)
    h.marketo.advance_to_daily_reset()
    h.marketo.set_limits(daily_quota=50_000)
    h.sync(2)
    assert (h.marketo.get_lead(marketo_id) or {}).get("leadStatus") == "Lost"
    kinds = [e.kind for e in h.activity(f"m{marketo_id}")]
    assert kinds.count(activity.DISQUALIFIED) == 1 and activity.REJECTED not in kinds, kinds
    link = link_of(marketo_id)
    assert link is not None and link.state == "parked"
    assert poisoned() == 0 and services().pauses.current(fresh=True) is None
