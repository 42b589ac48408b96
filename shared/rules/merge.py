"""Per-field three-way merge of a linked person: Marketo vs Dynamics vs the last agreed base.

For each mapped field (values in canonical form, see `fieldmap`):

    both sides equal                 -> nothing to write; base := that value
    only one side differs from base  -> copy it to the other side
    both differ from base (and each other) -> collision, resolved by the field's rule:
        default          Marketo wins on leads, Dynamics wins on contacts (the seed's rules)
        marketo-wins / dynamics-wins
        prefer-non-blank the non-blank value; if both are non-blank, the default winner
    one-way rules        marketo-to-dynamics-only / dynamics-to-marketo-only: only the
                         source side's changes travel; a change on the other side stays
                         where it is and is neither copied nor reverted.

A field with no base (a person linked just now) is an *initial* merge: a blank value
never overwrites a non-blank one, then the rule decides; differences are reported as
collisions marked `initial`, so nothing is overwritten silently.

Pure: no I/O. Merging the result of a merge again yields no writes (idempotent), which is
what makes duplicated or reordered queue messages harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from shared.rules.fieldmap import FieldSpec, Rule, Value


class Side(str, Enum):
    MARKETO = "marketo"
    DYNAMICS = "dynamics"


def default_winner(entity: str) -> Side:
    """Marketing owns leads, sales owns contacts."""
    return Side.MARKETO if entity == "lead" else Side.DYNAMICS


@dataclass(frozen=True)
class Collision:
    field: str
    marketo_value: Value
    dynamics_value: Value
    base_value: Value
    winner: Side
    rule: Rule
    initial: bool = False
    decided_by: str = ""  # the rule that actually picked the winner, in words (see `_resolve`)

    @property
    def winning_value(self) -> Value:
        return self.marketo_value if self.winner is Side.MARKETO else self.dynamics_value


@dataclass(frozen=True)
class MergeResult:
    to_marketo: dict[str, Value] = field(default_factory=dict)
    to_dynamics: dict[str, Value] = field(default_factory=dict)
    base: dict[str, Value] = field(default_factory=dict)
    collisions: tuple[Collision, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.to_marketo or self.to_dynamics)


def _blank(value: Value) -> bool:
    return value is None or value == ""


def merge(
    specs: Sequence[FieldSpec],
    entity: str,
    base: Mapping[str, Value],
    marketo: Mapping[str, Value],
    dynamics: Mapping[str, Value],
) -> MergeResult:
    """Merge one person. `base` lacks a key for fields never agreed on (initial link)."""
    to_marketo: dict[str, Value] = {}
    to_dynamics: dict[str, Value] = {}
    new_base: dict[str, Value] = {}
    collisions: list[Collision] = []
    for spec in specs:
        if not spec.column(entity):
            continue
        name = spec.marketo
        m, d = marketo.get(name), dynamics.get(name)
        cm, cd = spec.comparable(m), spec.comparable(d)
        if cm == cd:
            new_base[name] = m
            continue
        initial = name not in base
        b = base.get(name)
        m_changed = initial or cm != spec.comparable(b)
        d_changed = initial or cd != spec.comparable(b)
        rule = spec.rule
        if rule == Rule.MARKETO_TO_DYNAMICS_ONLY:
            if m_changed and not (initial and _blank(m)):
                to_dynamics[name] = m
                if d_changed:
                    collisions.append(Collision(name, m, d, b, Side.MARKETO, rule, initial, f"{rule} rule"))
            new_base[name] = m
            continue
        if rule == Rule.DYNAMICS_TO_MARKETO_ONLY:
            if d_changed and not (initial and _blank(d)):
                to_marketo[name] = d
                if m_changed:
                    collisions.append(Collision(name, m, d, b, Side.DYNAMICS, rule, initial, f"{rule} rule"))
            new_base[name] = d
            continue
        if m_changed and not d_changed:
            winner = Side.MARKETO
        elif d_changed and not m_changed:
            winner = Side.DYNAMICS
        else:
            winner, decided_by = _resolve(rule, entity, m, d, initial)
            collisions.append(Collision(name, m, d, b, winner, rule, initial, decided_by))
        if winner is Side.MARKETO:
            to_dynamics[name] = m
            new_base[name] = m
        else:
            to_marketo[name] = d
            new_base[name] = d
    return MergeResult(to_marketo, to_dynamics, new_base, tuple(collisions))


BLANK_NEVER_WINS = "initial-link rule: a blank never wins"


def _resolve(rule: Rule, entity: str, m: Value, d: Value, initial: bool) -> tuple[Side, str]:
    """The winner and, in words, the rule that picked it (a collision entry names that one)."""
    if initial and _blank(m) != _blank(d):
        return (Side.DYNAMICS if _blank(m) else Side.MARKETO), BLANK_NEVER_WINS
    if rule == Rule.MARKETO_WINS:
        return Side.MARKETO, f"{rule} rule"
    if rule == Rule.DYNAMICS_WINS:
        return Side.DYNAMICS, f"{rule} rule"
    if rule == Rule.PREFER_NON_BLANK and _blank(m) != _blank(d):
        return (Side.DYNAMICS if _blank(m) else Side.MARKETO), f"{rule} rule"
    # prefer-non-blank with two values falls back to the default winner, and says so
    fallback = f"{rule} rule, then " if rule != Rule.DEFAULT else ""
    return default_winner(entity), f"{fallback}default rule for {entity}s"
