"""The demo's merge steps: a duplicate merged in Dynamics, then one merged in Marketo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.runtime import services
from shared.state import activity

if TYPE_CHECKING:
    from devhost.demo import Demo
    from devhost.harness import Harness


def play_merges(d: Demo, h: Harness) -> None:
    mk, dv = h.marketo, h.dataverse

    d.step("Sales finds Edsger twice in Dynamics and merges the two leads (the Merge action)")
    master = dv.create("leads", {"firstname": "Edsger", "lastname": "Dijkstra", "emailaddress1": "edsger@example.com",
                                 "subject": "Conference"})["leadid"]
    sub = dv.create("leads", {"firstname": "Edsger", "lastname": "Dijkstra", "emailaddress1": "ewd@example.com",
                              "companyname": "Eindhoven University", "jobtitle": "Professor",
                              "subject": "Newsletter"})["leadid"]
    d.sync()
    people = mk.find_leads("edsger@example.com") + mk.find_leads("ewd@example.com")
    d.expect("two Marketo people before the merge", len(people) == 2, len(people))
    dv.merge("lead", master, sub, {"jobtitle": "Professor"})
    d.sync()
    kept = mk.find_leads("edsger@example.com")
    d.say(f"Marketo: {[(p['id'], p['email'], p['company'], p['title']) for p in kept]}; "
          f"ewd@example.com: {len(mk.find_leads('ewd@example.com'))} people")
    d.expect("one Marketo person is left (the subordinate's was merged into it with Marketo's merge API)",
             len(kept) == 1 and mk.find_leads("ewd@example.com") == [])
    master_now = dv.get("leads", master) or {}
    d.expect("no value lost: the master has the title it took and the company only the subordinate had",
             (master_now.get("jobtitle"), master_now.get("companyname")) == ("Professor", "Eindhoven University"),
             (master_now.get("jobtitle"), master_now.get("companyname")))
    if kept:
        entries = [e.message for e in h.activity(f"m{kept[0]['id']}") if e.kind == activity.MERGED]
        d.say(f"activity log: {entries[0] if entries else None}")

    d.step("A marketer merges two Barbaras in Marketo: the loser's Dynamics lead stays, with a suggestion")
    winner_lead = dv.create("leads", {"firstname": "Barbara", "lastname": "Liskov", "subject": "Webinar",
                                      "emailaddress1": "barbara@example.com"})["leadid"]
    loser_lead = dv.create("leads", {"firstname": "Barbara", "lastname": "Liskov", "subject": "Webinar",
                                     "emailaddress1": "liskov@example.com",
                                     "jobtitle": "Institute Professor"})["leadid"]
    d.sync()
    winner = int(mk.find_leads("barbara@example.com")[0]["id"])
    loser = int(mk.find_leads("liskov@example.com")[0]["id"])
    mk.merge_leads(winner, [loser])
    d.sync()
    dv.update("leads", loser_lead, {"companyname": "MIT"})  # sales edits the loser's lead afterwards
    d.sync()
    link = services().links.get(winner)
    d.expect("the winner keeps its link", link is not None and link.dynamics_id == winner_lead)
    d.expect("the loser's lead is still in Dynamics, open", (dv.get("leads", loser_lead) or {}).get("statecode") == 0)
    d.expect("and was not brought back into Marketo", mk.find_leads("liskov@example.com") == [])
    d.expect("the winner took the loser's title, on both sides",
             (dv.get("leads", winner_lead) or {}).get("jobtitle") == "Institute Professor")
    suggestions = [e.message for e in h.activity(f"m{winner}") if e.kind == activity.MERGE_SUGGESTED]
    d.say(f"activity log ({activity.MERGE_SUGGESTED}): {suggestions[0] if suggestions else None}")
    d.expect("a merge_suggested entry asks for the same merge in Dynamics", bool(suggestions))
