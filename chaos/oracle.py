"""The oracle: what every synced field must hold, computed from the edit history alone.

The campaign works in rounds. In a round, people are edited on both sides first; then the
sync runs (with faults) until the round's work has drained, before the next round edits
anything. So within a round the sync sees, per field of a linked person:

    edited on one side only        -> that side's last value, on both sides
    edited on both sides           -> a collision: the winner's last value (Marketo for
                                      leads, Dynamics for contacts), unless both last
                                      values are equal (then no collision)
    not edited                     -> what both sides agreed on after the last round

A person linked by email at the start (a Marketo person existed before its contact) has
no agreed values yet: per field, equal values stay, a blank never overwrites a value, and
otherwise the entity's winner decides (an *initial* collision).

Pure bookkeeping, no I/O: the campaign records edits here and reads expectations back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Synced string fields the campaign edits: Marketo name -> (lead column, contact column).
FIELDS: dict[str, tuple[str | None, str | None]] = {
    "firstName": ("firstname", "firstname"),
    "lastName": ("lastname", "lastname"),
    "company": ("companyname", None),
    "title": ("jobtitle", "jobtitle"),
    "address": ("address1_line1", "address1_line1"),
    "city": ("address1_city", "address1_city"),
    "state": ("address1_stateorprovince", "address1_stateorprovince"),
    "postalCode": ("address1_postalcode", "address1_postalcode"),
    "country": ("address1_country", "address1_country"),
}
MARKETO = "marketo"
DYNAMICS = "dynamics"


def winner(entity: str) -> str:
    """The configured collision winner (the default field map has no per-field rules)."""
    return MARKETO if entity == "lead" else DYNAMICS


def column(entity: str, name: str) -> str | None:
    lead_col, contact_col = FIELDS[name]
    return lead_col if entity == "lead" else contact_col


def fields_for(entity: str) -> list[str]:
    return [name for name in FIELDS if column(entity, name)]


def blank(value: Any) -> bool:
    return value is None or value == ""


def same(a: Any, b: Any) -> bool:
    return (blank(a) and blank(b)) or a == b


@dataclass
class Person:
    key: str  # the campaign's own name for the person (its email's local part)
    email: str
    entity: str  # "lead" | "contact"
    dynamics_id: str
    marketo_id: int | None = None
    agreed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Edit:
    round: int
    side: str
    person: str
    field: str
    value: str


@dataclass(frozen=True)
class ExpectedCollision:
    round: int
    person: str
    field: str
    marketo: Any
    dynamics: Any
    winner: str
    initial: bool = False


@dataclass(frozen=True)
class Mismatch:
    person: str
    side: str
    field: str
    expected: Any
    actual: Any


class Oracle:
    def __init__(self) -> None:
        self.people: dict[str, Person] = {}
        self.retired: dict[str, Person] = {}  # merged away: no longer compared, their past collisions still count
        self.edits: list[Edit] = []
        self.collisions: list[ExpectedCollision] = []
        self._round_edits: dict[tuple[str, str], dict[str, str]] = {}  # (person, field) -> side -> last value
        self.round = 0

    def add(self, person: Person, values: Mapping[str, Any]) -> None:
        """A person created identically on both sides (values keyed by Marketo name)."""
        person.agreed = {name: values.get(name) for name in fields_for(person.entity)}
        self.people[person.key] = person

    def add_linked_by_email(self, person: Person, marketo: Mapping[str, Any], dynamics: Mapping[str, Any]) -> None:
        """A Marketo person and a Dynamics record with one email, linked by the first sync."""
        agreed: dict[str, Any] = {}
        for name in fields_for(person.entity):
            m, d = marketo.get(name), dynamics.get(name)
            if same(m, d):
                agreed[name] = d if blank(m) else m
                continue
            if blank(m) != blank(d):
                agreed[name] = d if blank(m) else m
                side = DYNAMICS if blank(m) else MARKETO
            else:
                side = winner(person.entity)
                agreed[name] = m if side == MARKETO else d
            self.collisions.append(ExpectedCollision(0, person.key, name, m, d, side, initial=True))
        person.agreed = agreed
        self.people[person.key] = person

    def begin_round(self, number: int) -> None:
        self.round = number
        self._round_edits = {}

    def edit(self, side: str, person: str, name: str, value: str) -> None:
        if column(self.people[person].entity, name) is None:
            raise ValueError(f"{name} does not sync for {self.people[person].entity}s")
        self.edits.append(Edit(self.round, side, person, name, value))
        self._round_edits.setdefault((person, name), {})[side] = value

    def edited_this_round(self) -> set[str]:
        """The keys of the people edited (on either side) in the current round."""
        return {key for key, _ in self._round_edits}

    def end_round(self) -> None:
        """Fold the round's edits into the agreed values (what the sync must have made)."""
        for (key, name), by_side in self._round_edits.items():
            person = self.people[key]
            if len(by_side) == 1:
                (value,) = by_side.values()
            elif same(by_side[MARKETO], by_side[DYNAMICS]):
                value = by_side[MARKETO]
            else:
                side = winner(person.entity)
                value = by_side[side]
                self.collisions.append(ExpectedCollision(self.round, key, name, by_side[MARKETO],
                                                         by_side[DYNAMICS], side))
            person.agreed[name] = value
        self._round_edits = {}

    def compare(self, marketo: Mapping[int, Mapping[str, Any]],
                dynamics: Mapping[str, Mapping[str, Any]]) -> list[Mismatch]:
        """Every field of every person on both sides against the agreed values.

        `marketo` maps Marketo id -> person (REST names); `dynamics` maps record id -> record.
        """
        out: list[Mismatch] = []
        for person in self.people.values():
            m = marketo.get(person.marketo_id) if person.marketo_id is not None else None
            d = dynamics.get(person.dynamics_id)
            for name, expected in person.agreed.items():
                col = column(person.entity, name)
                assert col is not None
                m_value = m.get(name) if m is not None else "<missing person>"
                d_value = d.get(col) if d is not None else "<missing record>"
                if not same(m_value, expected):
                    out.append(Mismatch(person.key, MARKETO, name, expected, m_value))
                if not same(d_value, expected):
                    out.append(Mismatch(person.key, DYNAMICS, name, expected, d_value))
        return out
