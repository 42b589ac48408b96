"""The fault campaign, reduced: 60 people, 3 rounds, one host SIGKILL (during the initial
sync), one Azurite restart (round 3), every fault kind armed at most once per round.

The full campaign (`make chaos`, 2,000 people) runs the same code; this keeps it honest
inside `make test`. Deselect with `-m "not chaos"`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.campaign import ACCEPTED, Campaign, Config, Tally
from chaos.checks import Check, run_checks, table
from chaos.oracle import DYNAMICS, MARKETO, Oracle, Person

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]


@pytest.fixture(scope="module")
def campaign() -> Iterator[tuple[Campaign, Tally, dict[str, Check]]]:
    config = Config(seed=11, people=60, rounds=3, realtime_per_round=2, kill_rounds=0.0, azurite_every=3,
                    faults_per_kind=1, lease_s=8.0, merges_per_round=2, log=lambda _line: None, events=True)
    with Campaign(config) as c:
        tally = c.run()
        checks = run_checks(c)
        print(table(checks))
        yield c, tally, {check.name: check for check in checks}


def test_the_campaign_really_injected_every_kind_of_trouble(campaign: tuple[Campaign, Tally, dict[str, Check]]) -> None:
    c, tally, _ = campaign
    assert tally.kills == 1 and tally.azurite_restarts == 1
    assert tally.revocations == 4  # one per sync phase: the initial sync and three rounds
    assert tally.collisions_made > 0 and tally.edits[MARKETO] > 0 and tally.edits[DYNAMICS] > 0
    assert sum(c.faults.marketo_served().values()) > 0 and sum(c.faults.dataverse_served.values()) > 0
    assert len(tally.bad_messages) == 3 and tally.realtime_people == 6
    assert c.merger.log.made == {DYNAMICS: 6, MARKETO: 6}  # two pairs per side in each of three rounds


@pytest.mark.parametrize("name", ["lost updates", "duplicates", "rule violations", "poison messages", "API limits",
                                  "merges"])
def test_check(campaign: tuple[Campaign, Tally, dict[str, Check]], name: str) -> None:
    check = campaign[2][name]
    assert check.ok, f"{check.figure}\n" + "\n".join(check.examples)


# -- the oracle itself -----------------------------------------------------------------
def _oracle() -> Oracle:
    o = Oracle()
    o.add(Person("a", "a@x", "lead", "d-a", 1), {"title": "t0", "city": "c0"})
    o.add(Person("b", "b@x", "contact", "d-b", 2), {"title": "t0"})
    return o


def test_oracle_one_side_edit_is_its_last_value() -> None:
    o = _oracle()
    o.begin_round(1)
    o.edit(MARKETO, "a", "title", "t1")
    o.edit(MARKETO, "a", "title", "t2")
    o.edit(DYNAMICS, "a", "city", "c1")
    o.end_round()
    assert (o.people["a"].agreed["title"], o.people["a"].agreed["city"]) == ("t2", "c1")
    assert o.collisions == []


def test_oracle_collisions_go_to_the_configured_winner() -> None:
    o = _oracle()
    o.begin_round(1)
    for key in ("a", "b"):
        o.edit(MARKETO, key, "title", f"m-{key}")
        o.edit(DYNAMICS, key, "title", f"d-{key}")
    o.edit(MARKETO, "a", "city", "same")
    o.edit(DYNAMICS, "a", "city", "same")
    o.end_round()
    assert o.people["a"].agreed["title"] == "m-a"  # a lead: Marketo wins
    assert o.people["b"].agreed["title"] == "d-b"  # a contact: Dynamics wins
    assert [(x.person, x.winner) for x in o.collisions] == [("a", MARKETO), ("b", DYNAMICS)]


def test_oracle_initial_link_never_lets_a_blank_win() -> None:
    o = Oracle()
    o.add_linked_by_email(Person("c", "c@x", "contact", "d-c", 3),
                          marketo={"title": "mt", "state": "ms", "city": None},
                          dynamics={"title": "dt", "state": None, "city": "dc"})
    assert o.people["c"].agreed == {"firstName": None, "lastName": None, "title": "dt", "address": None,
                                    "city": "dc", "state": "ms", "postalCode": None, "country": None}


def test_oracle_comparison_names_each_side_and_field() -> None:
    o = _oracle()
    off = o.compare({1: {"title": "t0", "city": "c0"}, 2: {"title": "zz"}},
                    {"d-a": {"jobtitle": "t0", "address1_city": ""}, "d-b": {"jobtitle": "t0"}})
    assert {(m.person, m.side, m.field) for m in off} == {("a", DYNAMICS, "city"), ("b", MARKETO, "title")}


def test_the_webhook_people_the_app_kept_are_read_from_its_log() -> None:
    """A webhook person with no lead counts as unfinished only if the app kept its request."""
    log = "\n".join([
        "2026-11-30 12:04:22,481 leadsync INFO op=a sync-person m3001 accepted: the app finishes it if this call dies",
        "2026-11-30 12:04:22,510 leadsync INFO op=b sync-person m3002 -> created",
        "2026-11-30 12:09:18,943 leadsync INFO op=c sync-person m3005 finished after its call died -> exists",
        "12:04:22 http  sync_person_http  POST /api/sync-person  201  1057 ms",
        "2026-11-30 12:09:19,000 leadsync INFO op=d poll marketo-leadchanges: 3007 changed",
    ])
    assert {int(m) for m in ACCEPTED.findall(log)} == {3001, 3002, 3005}
