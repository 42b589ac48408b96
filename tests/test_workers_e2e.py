"""End to end with FUNCTIONS_WORKER_PROCESS_COUNT=2: the real app in two worker processes.

What changes when the functions run in several processes: each has its own clients,
caches and Marketo budget, so what keeps the sync correct must live in storage. These
tests run the product's own paths through both workers: the background sync, the
real-time endpoint, and concurrent calls for one person landing in different processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devhost.harness import Harness, by_hand, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand(FUNCTIONS_WORKER_PROCESS_COUNT="2")) as harness:
        yield harness


def email() -> str:
    return f"w{uuid.uuid4().hex[:10]}@example.com"


def test_the_app_runs_in_two_worker_processes(h: Harness) -> None:
    assert len(h.stack.host.worker_pids) == 2


def test_the_background_sync_works_through_the_workers(h: Harness) -> None:
    address = email()
    lead = h.dataverse.create("leads", {"lastname": "Worker", "emailaddress1": address, "subject": "w"})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    h.marketo.update_lead(int(person["id"]), title="Set in Marketo")
    h.sync()
    assert h.dataverse.get("leads", lead["leadid"])["jobtitle"] == "Set in Marketo"  # type: ignore[index]


def test_concurrent_calls_in_different_workers_create_exactly_one_lead(h: Harness) -> None:
    address = email()
    marketo_id = h.marketo.create_lead(email=address, lastName="Twin")
    assert h.sync_person_at_once(marketo_id, 10) == [200] * 9 + [201]
    assert len(h.dataverse.find("leads", emailaddress1=address)) == 1
