"""What a merge of one person would write, field by field, and why: the resync preview.

Pure: `plan` runs the very `merge` the applier runs and explains each field it would
write, so a preview cannot disagree with the apply about values or winners.

    Why                    when
    changed-in-marketo     only Marketo moved away from the last agreed value: copied to Dynamics
    changed-in-dynamics    only Dynamics did: copied to Marketo
    first-merge-blank      no agreed value yet (a field new to the map, a new link) and one
                           side is blank: a blank never overwrites a value
    field-rule             both sides differ from the agreed value (or there is none): the
                           field's rule in the map decided (marketo-wins, dynamics-wins,
                           prefer-non-blank, or a one-way rule)
    default-rule           as above with the default rule: Marketo wins on leads, Dynamics
                           on contacts
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.rules.fieldmap import FieldSpec, Rule, Value
from shared.rules.merge import Collision, MergeResult, Side, merge


class Why(StrEnum):
    CHANGED_IN_MARKETO = "changed-in-marketo"
    CHANGED_IN_DYNAMICS = "changed-in-dynamics"
    FIRST_MERGE_BLANK = "first-merge-blank"
    FIELD_RULE = "field-rule"
    DEFAULT_RULE = "default-rule"


ONE_WAY = (Rule.MARKETO_TO_DYNAMICS_ONLY, Rule.DYNAMICS_TO_MARKETO_ONLY)


@dataclass(frozen=True)
class FieldChange:
    """One field a merge would write: `value` (the winner's) goes to the side `to`."""

    field: str
    marketo: Value
    dynamics: Value
    base: Value
    agreed_before: bool  # False: the field has no last agreed value (new to the map, or a new link)
    winner: Side
    to: Side
    rule: Rule  # the field's rule in the map
    why: Why

    @property
    def value(self) -> Value:
        return self.marketo if self.winner is Side.MARKETO else self.dynamics

    @property
    def reason(self) -> str:
        """The why in words, as the preview table shows it."""
        side = "Marketo" if self.winner is Side.MARKETO else "Dynamics"
        if self.why is Why.CHANGED_IN_MARKETO:
            return "only Marketo changed since the last agreed value"
        if self.why is Why.CHANGED_IN_DYNAMICS:
            return "only Dynamics changed since the last agreed value"
        if self.why is Why.FIRST_MERGE_BLANK:
            return "first merge of this field: a blank never overwrites a value"
        both = "both changed" if self.agreed_before else "first merge of this field, values differ"
        if self.why is Why.FIELD_RULE:
            return f"{both}: field rule {self.rule.value}, {side} wins"
        return f"{both}: default rule, {side} wins on {'leads' if side == 'Marketo' else 'contacts'}"


@dataclass(frozen=True)
class Plan:
    """The merge of one person and what it would write."""

    result: MergeResult
    changes: tuple[FieldChange, ...]

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def plan(specs: Sequence[FieldSpec], entity: str, base: Mapping[str, Value],
         marketo: Mapping[str, Value], dynamics: Mapping[str, Value]) -> Plan:
    """Merge one person as the applier does and explain each field written, in map order."""
    result = merge(specs, entity, base, marketo, dynamics)
    collisions = {c.field: c for c in result.collisions}
    changes: list[FieldChange] = []
    for spec in specs:
        name = spec.marketo
        if name in result.to_dynamics:
            winner, to = Side.MARKETO, Side.DYNAMICS
        elif name in result.to_marketo:
            winner, to = Side.DYNAMICS, Side.MARKETO
        else:
            continue
        collision = collisions.get(name)
        if collision is None:
            why = Why.CHANGED_IN_MARKETO if winner is Side.MARKETO else Why.CHANGED_IN_DYNAMICS
        else:
            why = _why(collision)
        changes.append(FieldChange(name, marketo.get(name), dynamics.get(name), base.get(name), name in base,
                                   winner, to, spec.rule, why))
    return Plan(result, tuple(changes))


def _blank(value: Value) -> bool:
    return value is None or value == ""


def _why(c: Collision) -> Why:
    """The branch of `merge` that chose this collision's winner."""
    if c.rule in ONE_WAY:
        return Why.FIELD_RULE
    if c.initial and _blank(c.marketo_value) != _blank(c.dynamics_value):
        return Why.FIRST_MERGE_BLANK
    if c.rule in (Rule.MARKETO_WINS, Rule.DYNAMICS_WINS):
        return Why.FIELD_RULE
    if c.rule == Rule.PREFER_NON_BLANK and _blank(c.marketo_value) != _blank(c.dynamics_value):
        return Why.FIELD_RULE
    return Why.DEFAULT_RULE
