"""The resync preview's reading of a merge: each field written, its winner, and the rule that chose it.

Examples pin the words an operator sees for each branch of the merge; hypothesis checks
that the preview lists exactly what the merge writes, with the winner's value, and that
each reason is true of the inputs.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.rules.fieldmap import RULES, FieldSpec, Rule, Value
from shared.rules.merge import Side, default_winner, merge
from shared.rules.preview import Why, plan

BOTH = {"lead": "jobtitle", "contact": "jobtitle"}


def spec(rule: Rule = Rule.DEFAULT, name: str = "title") -> FieldSpec:
    return FieldSpec(name, BOTH if name == "title" else {"lead": "address1_city", "contact": "address1_city"},
                     rule=rule)


@pytest.mark.parametrize(("base", "m", "d", "entity", "rule", "expected"), [
    ({"title": "A"}, "B", "A", "lead", Rule.DEFAULT,
     ("B", Side.MARKETO, Side.DYNAMICS, Why.CHANGED_IN_MARKETO, "only Marketo changed since the last agreed value")),
    ({"title": "A"}, "A", "C", "lead", Rule.DEFAULT,
     ("C", Side.DYNAMICS, Side.MARKETO, Why.CHANGED_IN_DYNAMICS, "only Dynamics changed since the last agreed value")),
    ({}, "B", None, "contact", Rule.DEFAULT,  # a field new to the map: Dynamics is blank
     ("B", Side.MARKETO, Side.DYNAMICS, Why.FIRST_MERGE_BLANK,
      "first merge of this field: a blank never overwrites a value")),
    ({}, "B", "C", "lead", Rule.DEFAULT,
     ("B", Side.MARKETO, Side.DYNAMICS, Why.DEFAULT_RULE,
      "first merge of this field, values differ: default rule, Marketo wins on leads")),
    ({"title": "A"}, "B", "C", "contact", Rule.DEFAULT,
     ("C", Side.DYNAMICS, Side.MARKETO, Why.DEFAULT_RULE, "both changed: default rule, Dynamics wins on contacts")),
    ({"title": "A"}, "B", "C", "lead", Rule.DYNAMICS_WINS,
     ("C", Side.DYNAMICS, Side.MARKETO, Why.FIELD_RULE, "both changed: field rule dynamics-wins, Dynamics wins")),
    ({"title": "A"}, None, "C", "lead", Rule.PREFER_NON_BLANK,
     ("C", Side.DYNAMICS, Side.MARKETO, Why.FIELD_RULE, "both changed: field rule prefer-non-blank, Dynamics wins")),
    ({}, "B", "C", "contact", Rule.MARKETO_TO_DYNAMICS_ONLY,
     ("B", Side.MARKETO, Side.DYNAMICS, Why.FIELD_RULE,
      "first merge of this field, values differ: field rule marketo-to-dynamics-only, Marketo wins")),
])
def test_each_branch_of_the_merge_is_named(base: dict[str, Value], m: Value, d: Value, entity: str, rule: Rule,
                                           expected: tuple[Value, Side, Side, Why, str]) -> None:
    (change,) = plan([spec(rule)], entity, base, {"title": m}, {"title": d}).changes
    assert (change.value, change.winner, change.to, change.why, change.reason) == expected
    assert change.agreed_before is ("title" in base) and change.rule is rule


def test_fields_with_nothing_to_write_are_not_listed_and_the_rest_keep_map_order() -> None:
    specs = [spec(name="title"), spec(name="city")]
    p = plan(specs, "lead", {"title": "A"}, {"title": "A", "city": "Paris"}, {"title": "A", "city": "Lyon"})
    assert [c.field for c in p.changes] == ["city"] and p.changed
    same = plan(specs, "lead", {}, {"title": "A", "city": None}, {"title": "A", "city": None})
    assert same.changes == () and not same.changed and same.result.base == {"title": "A", "city": None}


NAMES = ("title", "city")
TEXTS = [None, "", "A", "B", "C"]
specs_st = st.lists(st.sampled_from(RULES), min_size=2, max_size=2).map(
    lambda rules: [spec(Rule(r), n) for r, n in zip(rules, NAMES, strict=True)])
person_st = st.fixed_dictionaries({n: st.sampled_from(TEXTS) for n in NAMES})
base_st = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(TEXTS))


@given(specs=specs_st, entity=st.sampled_from(("lead", "contact")), base=base_st, m=person_st, d=person_st)
def test_the_preview_lists_exactly_what_the_merge_writes_and_each_reason_holds(
        specs: list[FieldSpec], entity: str, base: dict[str, Value], m: dict[str, Value], d: dict[str, Value]) -> None:
    result = merge(specs, entity, base, m, d)
    p = plan(specs, entity, base, m, d)
    assert p.result == result
    assert {c.field: c.value for c in p.changes if c.to is Side.DYNAMICS} == result.to_dynamics
    assert {c.field: c.value for c in p.changes if c.to is Side.MARKETO} == result.to_marketo
    for c in p.changes:
        assert c.winner is not c.to and (c.marketo, c.dynamics) == (m[c.field], d[c.field])
        if c.why is Why.CHANGED_IN_MARKETO:
            assert c.agreed_before and d[c.field] == base[c.field] != m[c.field]
        elif c.why is Why.CHANGED_IN_DYNAMICS:
            assert c.agreed_before and m[c.field] == base[c.field] != d[c.field]
        elif c.why is Why.FIRST_MERGE_BLANK:
            assert not c.agreed_before and c.value not in (None, "")
        elif c.why is Why.DEFAULT_RULE:
            assert c.rule in (Rule.DEFAULT, Rule.PREFER_NON_BLANK) and c.winner is default_winner(entity)
        else:
            assert c.rule is not Rule.DEFAULT
