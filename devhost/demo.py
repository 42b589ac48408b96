"""`python -m devhost demo` (what `make demo` runs): the sync end to end, narrated and checked.

Starts Azurite, both emulators (real limits on) and the app in devhost, then plays a
scenario. The pollers are run on cue (as the host's admin endpoint would) so that edits
on both sides land in the same sync cycle when the scenario wants a collision; queue
triggers run live. Every step prints what each side holds and whether it is what the
rules promise; the exit code is 0 only if every expectation held.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from devhost.demo_merges import play_merges
from devhost.events import wire
from devhost.harness import Harness, running
from devhost.stack import StackConfig
from shared.runtime import services
from shared.state import activity

NEVER = "0 0 0 1 1 *"
DEMO_TEAM = "Inside Sales"
# The owner of a new lead: the user whose email is in Marketo's dynamicsOwnerEmail, else the team;
# the owner's email goes back to that field.
OWNER_ENV = {"LEADSYNC_LEAD_OWNER_FIELD": "dynamicsOwnerEmail", "LEADSYNC_OWNER_EMAIL_FIELD": "dynamicsOwnerEmail",
             "LEADSYNC_LEAD_OWNER": f"team:{DEMO_TEAM}"}


class Demo:
    def __init__(self, h: Harness, out: Callable[[str], None]) -> None:
        self.h = h
        self.out = out
        self.failed: list[str] = []
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self.out(f"\n{self.step_no}. {title}")

    def say(self, text: str) -> None:
        self.out(f"   {text}")

    def expect(self, what: str, ok: bool, seen: Any = None) -> None:
        mark = "ok  " if ok else "FAIL"
        self.out(f"   [{mark}] {what}" + (f"  (saw {seen!r})" if not ok and seen is not None else ""))
        if not ok:
            self.failed.append(what)

    def sync(self) -> None:
        started = time.monotonic()
        self.h.sync()
        self.say(f"sync cycle: both pollers ran, work applied ({time.monotonic() - started:.1f} s)")


def play(h: Harness, out: Callable[[str], None]) -> list[str]:
    d = Demo(h, out)
    mk, dv = h.marketo, h.dataverse

    d.step("Sales has two leads and a contact in Dynamics; Marketo has one person of its own")
    ada = dv.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com",
                              "companyname": "Analytical Engines", "jobtitle": "Analyst", "subject": "Webinar",
                              "leadsourcecode": 6})
    grace = dv.create("leads", {"firstname": "Grace", "lastname": "Hopper", "emailaddress1": "grace@example.com",
                                "companyname": "Navy", "subject": "Trade show"})
    alan = dv.create("contacts", {"firstname": "Alan", "lastname": "Turing", "emailaddress1": "alan@example.com",
                                  "jobtitle": "Fellow"})
    kat = mk.create_lead(email="katherine@example.com", firstName="Katherine", lastName="Johnson", company="NASA")
    d.say("Dynamics: lead Ada Lovelace, lead Grace Hopper, contact Alan Turing; Marketo: Katherine Johnson")

    d.step("The first sync brings every Dynamics person into Marketo (and nothing the other way)")
    d.sync()
    ada_m = _one(mk.find_leads("ada@example.com"))
    grace_m = _one(mk.find_leads("grace@example.com"))
    alan_m = _one(mk.find_leads("alan@example.com"))
    for name, person in (("Ada", ada_m), ("Grace", grace_m), ("Alan", alan_m)):
        d.expect(f"{name} exists once in Marketo", person is not None)
    if not (ada_m and grace_m and alan_m):
        return d.failed
    d.say(f"Marketo: Ada #{ada_m['id']} {ada_m['company']!r} source {ada_m['leadSource']!r}; "
          f"Grace #{grace_m['id']}; Alan #{alan_m['id']}")
    d.expect("Ada's lead source maps from choice 6 to 'Seminar'", ada_m["leadSource"] == "Seminar",
             ada_m["leadSource"])
    d.expect("Katherine (Marketo only) was not pushed to Dynamics",
             dv.find("leads", emailaddress1="katherine@example.com") == [])

    d.step("A marketer edits Ada in Marketo; sales edits Grace in Dynamics")
    mk.update_lead(int(ada_m["id"]), city="London", phone="+44 20 7946 0000")
    dv.update("leads", grace["leadid"], {"jobtitle": "Rear Admiral"})
    d.sync()
    ada_d = dv.get("leads", ada["leadid"]) or {}
    grace_now = mk.get_lead(int(grace_m["id"])) or {}
    d.say(f"Dynamics Ada: city {ada_d.get('address1_city')!r}, phone {ada_d.get('telephone1')!r}; "
          f"Marketo Grace: title {grace_now.get('title')!r}")
    d.expect("Ada's Marketo edits reached Dynamics",
             (ada_d.get("address1_city"), ada_d.get("telephone1")) == ("London", "+44 20 7946 0000"))
    d.expect("Grace's Dynamics edit reached Marketo", grace_now.get("title") == "Rear Admiral")

    d.step("Collision on a lead: both sides change Ada's title before the next sync (Marketo wins)")
    mk.update_lead(int(ada_m["id"]), title="Head of Marketing Analytics")
    dv.update("leads", ada["leadid"], {"jobtitle": "Sales Analyst"})
    d.sync()
    ada_d = dv.get("leads", ada["leadid"]) or {}
    ada_now = mk.get_lead(int(ada_m["id"])) or {}
    d.say(f"Marketo title {ada_now.get('title')!r}; Dynamics jobtitle {ada_d.get('jobtitle')!r}")
    d.expect("both sides hold Marketo's value", ada_d.get("jobtitle") == ada_now.get("title")
             == "Head of Marketing Analytics")
    _show_collision(d, h, int(ada_m["id"]), "marketo")

    d.step("Collision on a contact: both sides change Alan's title (Dynamics wins)")
    mk.update_lead(int(alan_m["id"]), title="Marketing's guess")
    dv.update("contacts", alan["contactid"], {"jobtitle": "Principal Scientist"})
    d.sync()
    alan_d = dv.get("contacts", alan["contactid"]) or {}
    alan_now = mk.get_lead(int(alan_m["id"])) or {}
    d.say(f"Marketo title {alan_now.get('title')!r}; Dynamics jobtitle {alan_d.get('jobtitle')!r}")
    d.expect("both sides hold Dynamics' value", alan_d.get("jobtitle") == alan_now.get("title")
             == "Principal Scientist")
    _show_collision(d, h, int(alan_m["id"]), "dynamics")

    d.step("A trigger campaign's webhook asks for Katherine in Dynamics (real-time), twice")
    first = h.sync_person(kat)
    second = h.sync_person(kat)
    d.say(f"first call: HTTP {first.status_code} {first.json()}")
    d.say(f"second call: HTTP {second.status_code} {second.json()}")
    d.expect("first call created the lead (201)", first.status_code == 201)
    d.expect("second call did nothing (200 exists)",
             second.status_code == 200 and second.json().get("status") == "exists")
    d.expect("exactly one Dynamics lead for Katherine",
             len(dv.find("leads", emailaddress1="katherine@example.com")) == 1)

    d.step("A person Dynamics would reject: no last name and a 60-character first name")
    bad = mk.create_lead(email="incomplete@example.com", firstName="X" * 60)
    response = h.sync_person(bad)
    d.say(f"HTTP {response.status_code}: " + "; ".join(p["message"] for p in response.json().get("problems", [])))
    d.expect("the webhook got 422 with the reasons", response.status_code == 422)
    ours = [e for e in h.activity(f"m{bad}") if e.kind == activity.VALIDATION_FAILED]
    h.poll(dataverse=False)  # the Marketo timer sends the webhook's Activity Log entries, batched
    theirs = mk.activities(bad)
    d.expect("the failure is in LeadSync's activity log", bool(ours))
    d.expect("and in the person's Marketo Activity Log", bool(theirs))
    d.expect("no lead was created", dv.find("leads", emailaddress1="incomplete@example.com") == [])

    d.step("Sales qualifies Grace's lead: the person now follows the contact")
    contact_id = dv.qualify(grace["leadid"])
    d.sync()
    link = services().links.get(int(grace_m["id"]))
    d.say(f"link of Marketo #{grace_m['id']}: {link.entity if link else None} {link.dynamics_id if link else None}")
    d.expect("the link moved to the new contact", link is not None and link.dynamics_id == contact_id)
    d.expect("Grace is still one person in Marketo", len(mk.find_leads("grace@example.com")) == 1)

    d.step("Sales deletes Ada's lead in Dynamics")
    dv.delete("leads", ada["leadid"])
    d.sync()
    ada_now = mk.get_lead(int(ada_m["id"])) or {}
    d.say(f"Marketo Ada: msftIsDeleted {ada_now.get('msftIsDeleted')!r}")
    d.expect("the Marketo person is kept and flagged 'Microsoft is Deleted'", ada_now.get("msftIsDeleted") is True)
    d.expect("the link ended", services().links.get(int(ada_m["id"])) is None)

    _owners(d, h, kat)
    play_merges(d, h)
    _events(d, h)

    d.step("API cost of the whole demo")
    ms, ds = mk.stats(), dv.stats()
    d.say(f"Marketo: {ms['counted_calls']} REST calls ({ms['responses_by_code']}); "
          f"Dataverse: {ds['total_requests']} requests ({ds['responses_by_status']})")
    return d.failed


def _events(d: Demo, h: Harness) -> None:
    """Change events: with both services calling the app, an edit crosses without any poll."""
    mk, dv = h.marketo, h.dataverse
    d.step("Events: Dynamics' webhook and a Marketo campaign call the app; no poll runs")
    wire(h.stack)
    d.say("leadsync setup dataverse-webhook registered the endpoint and steps; a Marketo campaign calls "
          "/api/events/marketo")
    lead = dv.create("leads", {"firstname": "Hedy", "lastname": "Lamarr", "emailaddress1": "hedy@example.com",
                               "subject": "Events"})
    d.sync()  # the background sync links her (events never create people)
    (hedy,) = mk.find_leads("hedy@example.com")
    started = time.monotonic()
    dv.update("leads", lead["leadid"], {"jobtitle": "Inventor"})
    crossed = _within(lambda: (mk.get_lead(int(hedy["id"])) or {}).get("title") == "Inventor")
    d.say(f"Dynamics -> Marketo: {time.monotonic() - started:.1f} s")
    d.expect("a Dynamics edit reached Marketo by event", crossed)
    started = time.monotonic()
    mk.update_lead(int(hedy["id"]), company="Frequency Hopping Inc")
    crossed = _within(lambda: (dv.get("leads", lead["leadid"]) or {}).get("companyname") == "Frequency Hopping Inc")
    d.say(f"Marketo -> Dynamics: {time.monotonic() - started:.1f} s")
    d.expect("a Marketo edit reached Dynamics by event", crossed)


def _within(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _owners(d: Demo, h: Harness, kat: int) -> None:
    """Owners: the webhook's lead goes to the user in Marketo's owner field (else the team), and
    the owner's email comes back to Marketo when sales reassigns the lead."""
    mk, dv = h.marketo, h.dataverse
    d.step("Owners: a new lead goes to the user named in Marketo; sales reassigns it; Marketo follows")
    team = _one(dv.find("teams", name=DEMO_TEAM)) or {}
    katherine = _one(dv.find("leads", emailaddress1="katherine@example.com")) or {}
    d.expect(f"Katherine's lead (no owner email in Marketo) belongs to the {DEMO_TEAM} team",
             bool(team) and katherine.get("_ownerid_value") == team.get("teamid"), katherine.get("_ownerid_value"))
    mary = dv.create("systemusers", {"fullname": "Mary Jackson", "internalemailaddress": "mary@example.com",
                                     "isdisabled": False})
    dorothy = dv.create("systemusers", {"fullname": "Dorothy Vaughan", "internalemailaddress": "dorothy@example.com",
                                        "isdisabled": False})
    christine = mk.create_lead(email="christine@example.com", firstName="Christine", lastName="Darden",
                               company="NASA", dynamicsOwnerEmail="mary@example.com")
    response = h.sync_person(christine)
    d.say(f"webhook for Christine (owner field mary@example.com): HTTP {response.status_code} {response.json()}")
    lead = dv.get("leads", str(response.json().get("dynamicsId"))) or {}
    d.expect("Christine's new lead is owned by Mary Jackson", lead.get("_ownerid_value") == mary["systemuserid"],
             lead.get("_ownerid_value"))
    nobody = mk.create_lead(email="nobody-owns@example.com", firstName="Ida", lastName="Rhodes",
                            dynamicsOwnerEmail="left-the-company@example.com")
    refused = h.sync_person(nobody)
    d.say(f"webhook for a person whose owner is no Dynamics user: HTTP {refused.status_code} "
          + "; ".join(p["message"] for p in refused.json().get("problems", [])))
    d.expect("an owner that names nobody fails clearly (422), no lead is created", refused.status_code == 422
             and dv.find("leads", emailaddress1="nobody-owns@example.com") == [])
    dv.update("leads", lead["leadid"], {"_ownerid_value": dorothy["systemuserid"]})
    d.say("sales reassigns Christine's lead to Dorothy Vaughan")
    d.sync()
    now = mk.get_lead(christine) or {}
    d.expect("Marketo's dynamicsOwnerEmail follows the new owner", now.get("dynamicsOwnerEmail")
             == "dorothy@example.com", now.get("dynamicsOwnerEmail"))


def _show_collision(d: Demo, h: Harness, marketo_id: int, winner: str) -> None:
    entries = [e for e in h.activity(f"m{marketo_id}") if e.kind == activity.COLLISION]
    if entries:
        d.say(f"activity log: {entries[0].message}")
    d.expect(f"the collision is logged with {winner} as winner",
             bool(entries) and entries[0].details.get("winner") == winner)


def _one(people: list[dict[str, Any]]) -> dict[str, Any] | None:
    return people[0] if len(people) == 1 else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost demo", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="also print the host's invocation log")
    args = parser.parse_args(argv)
    host_lines: list[str] = []
    log = (lambda line: print(f"      | {line}", flush=True)) if args.verbose else host_lines.append
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER,
                                                "MARKETO_DELETES_EVERY_S": "0", **OWNER_ENV})
    print("LeadSync demo: starting Azurite, the Marketo and Dataverse emulators, and the app…", flush=True)
    with running(config, log=log, first_sync=False) as h:
        stack = h.stack
        print(f"   app {stack.app_url}  marketo {stack.marketo.base_url}  dataverse {stack.dataverse.base_url}")
        h.sync(1)
        h.dataverse.create("teams", {"name": DEMO_TEAM})
        failed = play(h, lambda line: print(line, flush=True))
    if failed:
        print(f"\nDEMO FAILED: {len(failed)} expectation(s) did not hold:", *failed, sep="\n  - ")
        return 1
    print("\nEvery expectation held.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
