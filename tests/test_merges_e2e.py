"""End to end: merges on either side, through devhost (the app on Azurite, both emulators).

A Dynamics merge moves the link to the master, or merges the two Marketo people with
Marketo's merge API; a Marketo merge leaves the winner linked and the loser's Dynamics
record alone (reported as a suggestion), never re-created in Marketo. No value is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devhost.harness import Harness, by_hand, running
from shared.ops.backfill import backfill
from shared.runtime import services
from shared.state import activity
from shared.state.links import Link
from shared.state.workqueue import Work

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand()) as harness:
        yield harness


def email() -> str:
    return f"m{uuid.uuid4().hex[:10]}@example.com"


def link_of(marketo_id: int) -> Link | None:
    return services().links.get(marketo_id)


def lead_values(**fields: Any) -> dict[str, Any]:
    return {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": email(), "subject": "web form", **fields}


def linked_lead(h: Harness, **fields: Any) -> tuple[str, int]:
    """A Dynamics lead, synced: (lead id, Marketo id)."""
    record = lead_values(**fields)
    lead_id = h.dataverse.create("leads", record)["leadid"]
    h.sync()
    (person,) = h.marketo.find_leads(record["emailaddress1"])
    link = link_of(int(person["id"]))
    assert link is not None and link.dynamics_id == lead_id
    return lead_id, int(person["id"])


def kinds(h: Harness, marketo_id: int) -> list[str]:
    return [e.kind for e in h.activity(f"m{marketo_id}")]


def test_a_dynamics_merge_of_two_linked_leads_merges_their_marketo_people(h: Harness) -> None:
    master, winner = linked_lead(h, jobtitle="CEO")
    sub, loser = linked_lead(h, companyname="Analytical Engines")
    sub_email = h.dataverse.get("leads", sub)["emailaddress1"]  # type: ignore[index]
    h.marketo.update_lead(loser, phone="+44 20 7946 0000")  # a Marketo edit not synced yet: must survive
    h.dataverse.merge("lead", master, sub, {"jobtitle": "CEO"})
    h.sync(rounds=3)

    assert h.marketo.get_lead(loser) is None  # merged away in Marketo
    assert h.marketo.find_leads(sub_email) == []  # and not re-created for the subordinate
    person = h.marketo.get_lead(winner)
    assert person is not None
    assert (person["title"], person["company"], person["phone"]) == ("CEO", "Analytical Engines", "+44 20 7946 0000")
    record = h.dataverse.get("leads", master)
    assert record is not None
    assert (record["jobtitle"], record["companyname"], record["telephone1"]) == \
        ("CEO", "Analytical Engines", "+44 20 7946 0000")
    link = link_of(winner)
    assert link is not None and link.dynamics_id == master
    assert link_of(loser) is None and services().links.by_dynamics("lead", sub) is None
    assert activity.MERGED in kinds(h, winner)
    subordinate = h.dataverse.get("leads", sub)
    assert subordinate is not None and subordinate["merged"] is True  # Dynamics keeps it, deactivated


def test_a_dynamics_merge_into_an_unlinked_master_moves_the_link(h: Harness) -> None:
    sub, person_id = linked_lead(h, jobtitle="CTO")
    master_values = lead_values(companyname="Difference Engines")
    master = h.dataverse.create("leads", master_values)["leadid"]  # not synced yet: no link
    h.dataverse.merge("lead", master, sub, {"jobtitle": "CTO"})
    h.sync(rounds=3)

    link = link_of(person_id)
    assert link is not None and (link.entity, link.dynamics_id) == ("lead", master)
    assert services().links.by_dynamics("lead", sub) is None
    person = h.marketo.get_lead(person_id)
    assert person is not None
    assert (person["email"], person["company"], person["title"]) == \
        (master_values["emailaddress1"], "Difference Engines", "CTO")
    assert len(h.marketo.find_leads(master_values["emailaddress1"])) == 1  # no second person for the master
    assert activity.MERGED in kinds(h, person_id)


def test_a_marketo_merge_of_two_linked_people_keeps_the_loser_record_out_and_suggests(h: Harness) -> None:
    kept, winner = linked_lead(h)
    other, loser = linked_lead(h, jobtitle="Analyst")
    other_email = h.dataverse.get("leads", other)["emailaddress1"]  # type: ignore[index]
    h.marketo.merge_leads(winner, [loser])  # as a marketer does in the UI
    h.sync(rounds=3)

    assert link_of(loser) is None
    link = link_of(winner)
    assert link is not None and link.dynamics_id == kept
    record = h.dataverse.get("leads", kept)
    assert record is not None and record["jobtitle"] == "Analyst"  # the winner took the loser's value: kept
    loser_record = h.dataverse.get("leads", other)
    assert loser_record is not None and loser_record["statecode"] == 0  # neither deleted nor closed
    assert h.marketo.find_leads(other_email) == []
    assert services().links.lookup("lead", [other]).merged == {other: winner}
    assert activity.MERGE_SUGGESTED in kinds(h, winner)
    suggestion = next(e for e in h.activity(f"m{winner}") if e.kind == activity.MERGE_SUGGESTED)
    assert other in suggestion.message and kept in suggestion.message

    h.dataverse.update("leads", other, {"jobtitle": "Edited after the merge"})  # a later Dynamics edit
    h.sync()
    assert h.marketo.find_leads(other_email) == []  # still not brought back: that would undo the merge
    assert activity.MERGE_SUGGESTED in [e.kind for e in h.activity(f"lead:{other}")]
    preview = backfill(services(), entities=("lead",), dry_run=True)  # nor by a backfill
    assert other in {s.dynamics_id for s in preview.skipped}
    assert other not in {s.dynamics_id for s in preview.unmatched} | {n.dynamics_id for n in preview.linked}


def test_a_marketo_merge_into_an_unlinked_winner_hands_it_the_link(h: Harness) -> None:
    lead_id, loser = linked_lead(h, jobtitle="Engineer")
    winner_email = email()
    winner = h.marketo.create_lead(email=winner_email, lastName="Lovelace", company="Babbage & Co")
    h.marketo.merge_leads(winner, [loser])
    h.sync(rounds=3)

    assert link_of(loser) is None
    link = link_of(winner)
    assert link is not None and (link.entity, link.dynamics_id) == ("lead", lead_id)
    record = h.dataverse.get("leads", lead_id)
    assert record is not None
    # The winner's values go through the normal merge (Marketo wins on leads); its blanks took the loser's.
    assert (record["emailaddress1"], record["companyname"], record["jobtitle"]) == \
        (winner_email, "Babbage & Co", "Engineer")
    assert len(h.marketo.find_leads(winner_email)) == 1
    assert activity.MERGED in kinds(h, winner)


def test_a_loser_record_edited_before_the_merge_feed_is_read_is_still_not_brought_back(h: Harness) -> None:
    kept, winner = linked_lead(h)
    other, loser = linked_lead(h)
    other_email = h.dataverse.get("leads", other)["emailaddress1"]  # type: ignore[index]
    h.marketo.merge_leads(winner, [loser])
    h.dataverse.update("leads", other, {"jobtitle": "Edited before LeadSync saw the merge"})
    h.sync(rounds=1, marketo=False)  # the person is gone, but no Marketo feed said why yet
    h.sync()
    h.dataverse.update("leads", other, {"jobtitle": "Edited again"})
    h.sync()

    assert h.marketo.find_leads(other_email) == []
    assert services().links.lookup("lead", [other]).merged == {other: winner}
    assert activity.MERGE_SUGGESTED in kinds(h, winner)


def test_a_merge_reported_after_its_loser_was_handled_as_a_deletion_still_keeps_the_record_out(h: Harness) -> None:
    kept, winner = linked_lead(h)
    other, loser = linked_lead(h)
    other_email = h.dataverse.get("leads", other)["emailaddress1"]  # type: ignore[index]
    h.marketo.merge_leads(winner, [loser])
    # The deleted-leads feed came first (the merge landed between the two feeds' reads).
    services().queues.send([Work("marketo", "deleted", (loser,))])
    h.drain()
    assert services().links.lookup("lead", [other]).buried
    h.sync()
    h.dataverse.update("leads", other, {"jobtitle": "Edited after the merge"})
    h.sync()

    assert h.marketo.find_leads(other_email) == []
    assert services().links.lookup("lead", [other]).merged == {other: winner}
    assert activity.MERGE_SUGGESTED in kinds(h, winner)
