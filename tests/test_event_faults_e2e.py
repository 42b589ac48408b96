"""The chaos campaign's event faults, small: both services wired to the app, their webhook calls
duplicated, reordered, delayed and dropped, edits on both sides; once the events are done and
a poll has run, every edit is on the other side, nobody twice, and nothing was won by the
wrong side. (`make chaos` runs the same faults at scale, with host kills; chaos/events.py.)"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from chaos.events import idle
from devhost.events import wire
from devhost.harness import Harness, by_hand, eventually, running
from shared.runtime import services
from shared.state import activity

pytestmark = pytest.mark.e2e

PEOPLE = 12


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def settled(h: Harness) -> bool:
    return eventually(lambda: idle(h.marketo, h.dataverse, h.stack.env["AzureWebJobsStorage"]), timeout=120)


def test_faulty_events_lose_nothing_and_duplicate_nobody(h: Harness) -> None:
    tag, started = f"evf{uuid.uuid4().hex[:6]}", datetime.now(UTC)
    leads = [h.dataverse.create("leads", {"firstname": f"P{i}", "lastname": tag, "subject": "events",
                                          "emailaddress1": f"{tag}-{i}@example.com"}) for i in range(PEOPLE)]
    h.sync()
    marketo_ids = {p["email"]: int(p["id"]) for p in h.marketo.all_leads() if tag in str(p.get("email"))}
    pairs = [(str(lead["leadid"]), marketo_ids[lead["emailaddress1"]]) for lead in leads]
    wire(h.stack)
    # Count-limited, so every kind surely fires: the first calls of each service meet them in turn.
    for kind in ("duplicate", "reorder", "delay", "drop"):
        h.dataverse.webhook_fault(kind, count=3, delay_s=2.0 if kind == "delay" else 0.0)
    for kind in ("delay", "drop"):
        h.marketo.webhook_fault(kind, count=3, delay_s=2.0 if kind == "delay" else 0.0)

    half = PEOPLE // 2
    want_marketo: dict[int, str] = {}
    want_dynamics: dict[str, str] = {}

    def edit_round(number: int) -> None:
        """The first half of the people edited in Dynamics, the other half in Marketo."""
        for i, (lead_id, marketo_id) in enumerate(pairs):
            if i < half:
                value = f"D{number}-{i}"
                h.dataverse.update("leads", lead_id, {"jobtitle": value})
                want_marketo[marketo_id] = value
            else:
                value = f"M{number}-{i}"
                h.marketo.update_lead(marketo_id, title=value)
                want_dynamics[lead_id] = value

    edit_round(1)
    edit_round(2)  # the second value must win, whatever order the events come in
    settled(h)
    served = Counter({k: h.dataverse.webhook_stats()[k] for k in ("duplicated", "reordered", "delayed", "dropped")})
    served["marketo dropped"] = h.marketo.webhook_stats()["dropped"]
    served["marketo delayed"] = h.marketo.webhook_stats()["delayed"]
    assert all(n > 0 for n in served.values()), served  # (a reorder that meets a held call is spent unused)

    def off() -> tuple[list[Any], list[Any]]:
        titles = {int(p["id"]): p.get("title") for p in h.marketo.all_leads() if tag in str(p.get("email"))}
        jobs = {r["leadid"]: r.get("jobtitle") for r in h.dataverse.find("leads", lastname=tag)}
        return ([m for m, v in want_marketo.items() if titles.get(m) != v],
                [d for d, v in want_dynamics.items() if jobs.get(d) != v])

    by_events = PEOPLE - sum(map(len, off()))
    assert by_events > 0  # events alone carried edits (no poll has run since they were made)

    # A round whose every event is dropped (a late event reads fresh values, so the drops
    # above may have cost nothing): only the poll can bring it.
    h.dataverse.webhook_fault("drop", count=half)
    h.marketo.webhook_fault("drop", count=PEOPLE - half)
    edit_round(3)
    settled(h)
    assert off() == (list(want_marketo), list(want_dynamics))
    h.sync()  # the safety net
    settled(h)
    assert off() == ([], [])
    emails = Counter(str(p.get("email")) for p in h.marketo.all_leads() if tag in str(p.get("email")))
    assert sorted(emails.values()) == [1] * PEOPLE  # nobody created twice
    assert len(h.dataverse.find("leads", lastname=tag)) == PEOPLE
    collisions = list(activity.ActivityLog(services().storage).since(started, [activity.COLLISION]))
    assert collisions == []  # each field was edited on one side only: no event may make a collision of it
