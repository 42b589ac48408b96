"""A collision's activity entry survives a storage failure in the middle of its batch.

Once both sides hold the winner's value, a retry of the message finds them equal and sees no
collision: the entry must be durable before the writes. The failure is real storage's: the
activity table is deleted under the app (every write to it answers 404) and created again
before the queue's retry, which these tests run in-process with the same message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.core.exceptions import AzureError

from devhost.harness import Harness, by_hand, running
from shared.errors import TransientError
from shared.rules.merge import Collision, Side
from shared.runtime import services
from shared.state import activity
from shared.state.tablebatch import TransactionFailed
from shared.state.workqueue import Work
from shared.sync.apply import apply_work
from shared.sync.report import Decision, Outcomes, log_decisions, withdraw_decisions

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def collided_lead(h: Harness) -> tuple[str, int]:
    """A synced Dynamics lead whose title was then changed on both sides (Marketo wins for leads)."""
    address = f"p{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "companyname": "Analytical",
                                        "emailaddress1": address, "jobtitle": "Analyst"})
    h.sync()
    (person,) = h.marketo.find_leads(lead["emailaddress1"])
    marketo_id = int(person["id"])
    h.marketo.update_lead(marketo_id, title="Marketing Title")
    h.dataverse.update("leads", lead["leadid"], {"jobtitle": "Sales Title"})
    return lead["leadid"], marketo_id


def collisions(marketo_id: int) -> list[activity.Entry]:
    return collisions_of(f"m{marketo_id}")


def test_a_collision_is_logged_when_the_activity_log_fails_during_its_batch(h: Harness) -> None:
    lead_id, marketo_id = collided_lead(h)
    svc = services()
    table = svc.storage.table("activity")
    work = Work("dynamics", "changed", (lead_id,), entity="lead")
    svc.storage._tables.delete_table(table.table_name)  # storage fails for this attempt's log
    try:
        with pytest.raises((AzureError, TransactionFailed)):
            apply_work(svc, work)
    finally:
        svc.storage._tables.create_table_if_not_exists(table.table_name)
    apply_work(svc, work)  # the queue delivers the same message again
    assert h.dataverse.get("leads", lead_id)["jobtitle"] == "Marketing Title"  # type: ignore[index]
    assert h.marketo.get_lead(marketo_id)["title"] == "Marketing Title"  # type: ignore[index]
    (collision,) = collisions(marketo_id)
    assert (collision.details["field"], collision.details["winner"]) == ("title", "marketo")
    assert (collision.details["marketo"], collision.details["dynamics"]) == ("Marketing Title", "Sales Title")


def test_a_retry_after_a_failed_write_logs_the_collision_once(h: Harness) -> None:
    lead_id, marketo_id = collided_lead(h)
    svc = services()
    work = Work("dynamics", "changed", (lead_id,), entity="lead")
    h.dataverse.fault("http503", count=50, path_prefix="/api/data/v9.2/$batch")  # more than the client's retries
    try:
        with pytest.raises(TransientError):  # the queue retries the message
            apply_work(svc, work)
    finally:
        h.dataverse.clear_faults()
    apply_work(svc, work)
    assert h.dataverse.get("leads", lead_id)["jobtitle"] == "Marketing Title"  # type: ignore[index]
    (collision,) = collisions(marketo_id)
    assert collision.details["winner"] == "marketo"


def test_a_decision_logged_again_is_found_and_withdrawn_only_by_the_attempt_that_wrote_it(h: Harness) -> None:
    svc = services()
    person = f"m{uuid.uuid4().int % 10**9}"
    since = datetime.now(UTC) - timedelta(minutes=1)
    c = Collision("title", "Marketing Title", "Sales Title", "Analyst", Side.MARKETO, "marketo-wins")

    def logged() -> tuple[int, int]:
        hourly = [e for e in svc.activity.since(since, [activity.COLLISION]) if e.person == person]
        return len(collisions_of(person)), len(hourly)

    first, retry = Outcomes("op-1"), Outcomes("op-1")
    log_decisions(svc, first, [Decision(person, "lead", "etag-1", [c])])
    log_decisions(svc, retry, [Decision(person, "lead", "etag-1", [c])])  # the same decision, retried
    assert logged() == (1, 1)
    withdraw_decisions(svc, retry, [person])  # found, not written: another attempt may have applied it
    assert logged() == (1, 1)
    log_decisions(svc, Outcomes("op-2"), [Decision(person, "lead", "etag-2", [c])])  # a later link version
    assert logged() == (2, 2)
    withdraw_decisions(svc, first, [person])
    assert logged() == (1, 1)


def collisions_of(person: str) -> list[activity.Entry]:
    return [e for e in services().activity.for_person(person) if e.kind == activity.COLLISION]


def test_decisions_logged_together_are_found_together_on_a_retry(h: Harness) -> None:
    svc = services()
    first = f"m{uuid.uuid4().int % 10**9}"
    same_bucket = next(p for p in (f"m{uuid.uuid4().int % 10**9}" for _ in range(1000))
                       if activity.person_partition(p) == activity.person_partition(first))
    c = Collision("city", "Paris", "Lyon", "Nice", Side.MARKETO, "marketo-wins")
    decisions = [Decision(first, "lead", "etag-1", [c]), Decision(same_bucket, "lead", "etag-1", [c])]
    log_decisions(svc, Outcomes("op-1"), decisions)  # one transaction for the partition
    retry = Outcomes("op-1")
    log_decisions(svc, retry, decisions)
    assert retry.logged_here == set()
    assert (len(collisions_of(first)), len(collisions_of(same_bucket))) == (1, 1)
