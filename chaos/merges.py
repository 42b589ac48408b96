"""Merges during the rounds, on both sides, and what each must leave behind.

Each round, after the edits and before the sync, a few pairs of linked people of one
entity that the round did not edit are merged:

- in Dynamics (the Merge action): the master takes the subordinate's title through
  UpdateContent, and the subordinate's Marketo person gets one more edit just before (a
  Marketo value not synced yet). Expected: the subordinate's Marketo person is merged
  away; the master holds, on both sides, that title, the carried Marketo edit, and for
  every field it had blank, the subordinate's value (Marketo's merge fills the winner's
  blanks, the sync copies them to Dynamics).
- in Marketo (as a marketer does in the UI): the winner keeps its values and takes the
  loser's where it had none, on both sides. The loser's Dynamics record stays, active,
  with its values, and is edited in each later round: it must never come back to Marketo.

Losers leave the oracle (they are no longer people of their own); `MergeLog` keeps them
for the checks: 0 duplicates (no loser's person or email back in Marketo) and 0 lost
values (winners against the oracle, Marketo losers' records against their own values).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.oracle import DYNAMICS, MARKETO, Oracle, Person, blank, column, fields_for
from devhost.emulators.dataverse import DataverseAdmin
from devhost.emulators.marketo import MarketoAdmin


@dataclass
class MergedAway:
    """A merge's loser: gone from Marketo; its Dynamics record stays (merged there, or not)."""

    key: str
    email: str
    entity: str
    dynamics_id: str
    marketo_id: int
    side: str  # where the merge was made
    winner: str  # the winner's key
    winner_dynamics_id: str
    expected: dict[str, Any] = field(default_factory=dict)  # Marketo merges: the record's values


@dataclass
class MergeLog:
    made: dict[str, int] = field(default_factory=lambda: {DYNAMICS: 0, MARKETO: 0})
    losers: list[MergedAway] = field(default_factory=list)
    winners: set[str] = field(default_factory=set)


class Merger:
    def __init__(self, rng: random.Random, oracle: Oracle, marketo: MarketoAdmin, dataverse: DataverseAdmin,
                 value: Callable[[str, int], str]) -> None:
        self.rng, self.oracle, self.marketo, self.dataverse, self.value = rng, oracle, marketo, dataverse, value
        self.log = MergeLog()

    def round(self, number: int, per_side: int) -> None:
        """Edit the Marketo losers' records left in Dynamics, then make this round's merges."""
        for lost in self.log.losers:
            if lost.side == MARKETO:
                name = self.rng.choice(fields_for(lost.entity))
                lost.expected[name] = self.value(name, number)
                self.dataverse.update(_set(lost.entity), lost.dynamics_id,
                                      {str(column(lost.entity, name)): lost.expected[name]})
        busy = self.oracle.edited_this_round()
        free = sorted((p for p in self.oracle.people.values()
                       if p.marketo_id is not None and p.key not in busy and p.key not in self.log.winners),
                      key=lambda p: p.key)
        self.rng.shuffle(free)
        for side in (DYNAMICS, MARKETO):
            for _ in range(per_side):
                pair = _pair(free)
                if pair is None:
                    return
                (self._in_dynamics if side == DYNAMICS else self._in_marketo)(number, *pair)

    def _in_dynamics(self, number: int, master: Person, sub: Person) -> None:
        entity = master.entity
        carried = self.rng.choice([n for n in fields_for(entity) if n != "title"])
        carried_value = self.value(carried, number)
        self.marketo.update_lead(int(sub.marketo_id or 0), **{carried: carried_value})
        content = {"jobtitle": sub.agreed["title"]} if not blank(sub.agreed.get("title")) else {}
        self.dataverse.merge(entity, master.dynamics_id, sub.dynamics_id, content)
        loser_values = {**sub.agreed, carried: carried_value}
        for name, value in master.agreed.items():
            if name == carried:
                master.agreed[name] = carried_value
            elif name == "title" and content:
                master.agreed[name] = sub.agreed["title"]
            elif blank(value):
                master.agreed[name] = loser_values.get(name)
        self._gone(master, sub, DYNAMICS, {})

    def _in_marketo(self, number: int, winner: Person, loser: Person) -> None:
        self.marketo.merge_leads(int(winner.marketo_id or 0), [int(loser.marketo_id or 0)])
        for name, value in winner.agreed.items():
            if blank(value):
                winner.agreed[name] = loser.agreed.get(name)
        self._gone(winner, loser, MARKETO, dict(loser.agreed))

    def _gone(self, winner: Person, loser: Person, side: str, expected: dict[str, Any]) -> None:
        self.oracle.retired[loser.key] = self.oracle.people.pop(loser.key)
        self.log.made[side] += 1
        self.log.winners.add(winner.key)
        self.log.losers.append(MergedAway(loser.key, loser.email, loser.entity, loser.dynamics_id,
                                          int(loser.marketo_id or 0), side, winner.key, winner.dynamics_id, expected))


def _pair(free: list[Person]) -> tuple[Person, Person] | None:
    """Two people of one entity out of `free` (removed from it)."""
    for i, first in enumerate(free):
        for j in range(i + 1, len(free)):
            if free[j].entity == first.entity:
                second = free.pop(j)
                free.pop(i)
                return first, second
    return None


def _set(entity: str) -> str:
    return "leads" if entity == "lead" else "contacts"


def check(log: MergeLog, oracle: Oracle, marketo: dict[int, dict[str, Any]],
          dynamics: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(duplicates, lost values) left by the merges, each as a line naming person and field."""
    emails = {str(p.get("email") or "").lower() for p in marketo.values()}
    duplicates: list[str] = []
    lost: list[str] = []
    for gone in log.losers:
        if gone.marketo_id in marketo:
            duplicates.append(f"{gone.key}: Marketo person {gone.marketo_id} was not merged away")
        elif gone.email.lower() in emails:
            duplicates.append(f"{gone.key}: {gone.email} is back in Marketo ({gone.side} merge)")
        record = dynamics.get(gone.dynamics_id)
        if gone.side == DYNAMICS:
            if record is None or record.get("_masterid_value") != gone.winner_dynamics_id:
                lost.append(f"{gone.key}: Dynamics record {gone.dynamics_id} is no longer merged into its master")
            continue
        if record is None or record.get("statecode") != 0:
            lost.append(f"{gone.key}: Dynamics record {gone.dynamics_id} was deleted or closed")
            continue
        for name, expected in gone.expected.items():
            actual = record.get(str(column(gone.entity, name)))
            if not (blank(actual) and blank(expected)) and actual != expected:
                lost.append(f"{gone.key} dynamics.{name}: expected {expected!r}, found {actual!r}")
    lost += [f"{m.person} {m.side}.{m.field}: expected {m.expected!r}, found {m.actual!r}"
             for m in oracle.compare(marketo, dynamics) if m.person in log.winners]
    return duplicates, lost
