"""The per-field three-way merge: what each side receives, what becomes the base, who wins.

The table below is the contract, one row per situation a field can be in and one column
per merge rule. Hypothesis then checks the properties the sync relies on when queue
messages are duplicated, skipped or reordered: merging again changes nothing, both sides
converge, collisions go to the configured winner, and our own echo costs no write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.rules.fieldmap import RULES, FieldSpec, Value, load
from shared.rules.merge import Collision, MergeResult, Side, default_winner, merge

BOTH = {"lead": "jobtitle", "contact": "jobtitle"}
MISSING = object()  # a field with no base: the person was linked just now

A, B, C = "Engineer", "Manager", "Director"  # base, Marketo's new value, Dynamics' new value

# situation: (base, marketo, dynamics)
CASES: dict[str, tuple[object, Value, Value]] = {
    "unchanged": (A, A, A),
    "marketo changed": (A, B, A),
    "dynamics changed": (A, A, C),
    "marketo cleared": (A, None, A),
    "dynamics cleared": (A, A, None),
    "both changed to the same": (A, B, B),
    "both changed differently": (A, B, C),
    "both changed, marketo cleared": (A, None, C),
    "both changed, dynamics cleared": (A, B, None),
    "initial, equal": (MISSING, B, B),
    "initial, different": (MISSING, B, C),
    "initial, marketo blank": (MISSING, None, C),
    "initial, dynamics blank": (MISSING, B, None),
    "initial, both blank": (MISSING, None, None),
}

# (rule, entity) per column. marketo-wins is tried on a contact and dynamics-wins on a
# lead, so the rule visibly overrides the entity's default winner.
COLUMNS = [
    ("default", "lead"),
    ("default", "contact"),
    ("marketo-wins", "contact"),
    ("dynamics-wins", "lead"),
    ("prefer-non-blank", "lead"),
    ("prefer-non-blank", "contact"),
    ("marketo-to-dynamics-only", "lead"),
    ("dynamics-to-marketo-only", "contact"),
]

# What happens: "."  nothing is written
#               "M"  Marketo's value is written to Dynamics      "M!" ... and it is a collision
#               "D"  Dynamics' value is written to Marketo       "D!" ... and it is a collision
EXPECTED = {  # dflt@L dflt@C mw@C  dw@L  pnb@L pnb@C m2d   d2m
    "unchanged":                      ".    .    .    .    .    .    .    .",
    "marketo changed":                "M    M    M    M    M    M    M    .",
    "dynamics changed":               "D    D    D    D    D    D    .    D",
    "marketo cleared":                "M    M    M    M    M    M    M    .",
    "dynamics cleared":               "D    D    D    D    D    D    .    D",
    "both changed to the same":       ".    .    .    .    .    .    .    .",
    "both changed differently":       "M!   D!   M!   D!   M!   D!   M!   D!",
    "both changed, marketo cleared":  "M!   D!   M!   D!   D!   D!   M!   D!",
    "both changed, dynamics cleared": "M!   D!   M!   D!   M!   M!   M!   D!",
    "initial, equal":                 ".    .    .    .    .    .    .    .",
    "initial, different":             "M!   D!   M!   D!   M!   D!   M!   D!",
    "initial, marketo blank":         "D!   D!   D!   D!   D!   D!   .    D!",
    "initial, dynamics blank":        "M!   M!   M!   M!   M!   M!   M!   .",
    "initial, both blank":            ".    .    .    .    .    .    .    .",
}



def _table() -> list[object]:
    params = []
    for case, row in EXPECTED.items():
        for (rule, entity), cell in zip(COLUMNS, row.split(), strict=True):
            params.append(pytest.param(case, rule, entity, cell,
                                       id=f"{rule}@{entity}: {case}"))
    return params


def title(rule: str = "default") -> FieldSpec:
    return FieldSpec("title", BOTH, rule=rule)


def run(spec: FieldSpec, entity: str, base: object, m: Value, d: Value) -> MergeResult:
    return merge([spec], entity, {} if base is MISSING else {spec.marketo: base}, {spec.marketo: m},
                 {spec.marketo: d})


@pytest.mark.parametrize(("case", "rule", "entity", "outcome"), _table())
def test_merge_rule_table(case: str, rule: str, entity: str, outcome: str) -> None:
    base, m, d = CASES[case]
    result = run(title(rule), entity, base, m, d)

    writes_dynamics = outcome.startswith("M")
    writes_marketo = outcome.startswith("D")
    assert result.to_dynamics == ({"title": m} if writes_dynamics else {})
    assert result.to_marketo == ({"title": d} if writes_marketo else {})
    assert result.changed == (writes_dynamics or writes_marketo)

    if writes_dynamics:
        expected_base = m
    elif writes_marketo:
        expected_base = d
    elif rule == "dynamics-to-marketo-only":
        expected_base = d  # a Marketo-side change stays where it is; the base follows the source
    else:
        expected_base = m  # equal sides, or Marketo is the source of a one-way field
    assert result.base == {"title": expected_base}

    if outcome.endswith("!"):
        (collision,) = result.collisions
        winner = Side.MARKETO if writes_dynamics else Side.DYNAMICS
        assert collision.field == "title"
        assert (collision.marketo_value, collision.dynamics_value) == (m, d)
        assert collision.base_value == (None if base is MISSING else base)
        assert collision.winner is winner
        assert collision.winning_value == (m if winner is Side.MARKETO else d)
        assert collision.initial == (base is MISSING)
    else:
        assert result.collisions == ()


def test_default_rule_names_who_wins_on_which_entity() -> None:
    (on_lead,) = run(title(), "lead", A, B, C).collisions
    (on_contact,) = run(title(), "contact", A, B, C).collisions
    assert (on_lead.rule, on_lead.winner) == ("default", Side.MARKETO)
    assert (on_contact.rule, on_contact.winner) == ("default", Side.DYNAMICS)
    (explicit,) = run(title("dynamics-wins"), "lead", A, B, C).collisions
    assert explicit.rule == "dynamics-wins"


def test_default_winner_is_marketo_for_leads_and_dynamics_for_contacts() -> None:
    assert default_winner("lead") is Side.MARKETO
    assert default_winner("contact") is Side.DYNAMICS


def test_email_differing_only_in_case_is_not_a_change() -> None:
    email = FieldSpec("email", {"lead": "emailaddress1"}, type="email")
    result = merge([email], "lead", {"email": "ann@example.com"}, {"email": "Ann@Example.com"},
                   {"email": "ANN@EXAMPLE.COM"})
    assert not result.changed and result.collisions == ()


def test_email_case_change_on_one_side_against_the_base_is_not_copied() -> None:
    email = FieldSpec("email", {"lead": "emailaddress1"}, type="email")
    result = merge([email], "lead", {"email": "ann@example.com"}, {"email": "ANN@example.com"},
                   {"email": "ann@example.com"})
    assert not result.changed


def test_names_are_case_sensitive() -> None:
    result = merge([FieldSpec("lastName", BOTH)], "lead", {"lastName": "mcdonald"}, {"lastName": "McDonald"},
                   {"lastName": "mcdonald"})
    assert result.to_dynamics == {"lastName": "McDonald"}


def test_fields_not_mapped_on_the_entity_are_left_out() -> None:
    fmap = load(None)
    result = merge(fmap.fields, "contact", {}, {"company": "Acme", "leadSource": "Web"}, {})
    assert "company" not in result.to_dynamics and "company" not in result.base
    assert "leadSource" not in result.base


def test_each_field_merges_on_its_own() -> None:
    specs = [FieldSpec("firstName", BOTH), FieldSpec("lastName", BOTH), FieldSpec("title", BOTH)]
    base = {"firstName": "Ann", "lastName": "Lee", "title": "Engineer"}
    result = merge(specs, "lead", base,
                   {"firstName": "Anne", "lastName": "Lee", "title": "Manager"},
                   {"firstName": "Ann", "lastName": "Li", "title": "Director"})
    assert result.to_dynamics == {"firstName": "Anne", "title": "Manager"}
    assert result.to_marketo == {"lastName": "Li"}
    assert result.base == {"firstName": "Anne", "lastName": "Li", "title": "Manager"}
    assert [c.field for c in result.collisions] == ["title"]


# -- properties --------------------------------------------------------------------------
FIELD_NAMES = ("email", "firstName", "title", "leadSource")
EMAILS = ("ann@example.com", "ANN@example.com", "bob@example.com", None)
TEXTS = ("Ann", "ann", "Bob", "Director", None)
LABELS = ("Web", "web", "Partner", "#99", None)


def _spec(name: str, rule: str) -> FieldSpec:
    if name == "email":
        return FieldSpec(name, BOTH, type="email", rule=rule)
    if name == "leadSource":
        return FieldSpec(name, BOTH, type="choice", rule=rule, choices={"Web": 8, "Partner": 4})
    return FieldSpec(name, BOTH, rule=rule)


def _values(name: str) -> st.SearchStrategy[Value]:
    return st.sampled_from(EMAILS if name == "email" else LABELS if name == "leadSource" else TEXTS)


specs_st = st.lists(st.sampled_from(RULES), min_size=len(FIELD_NAMES), max_size=len(FIELD_NAMES)).map(
    lambda rules: [_spec(n, r) for n, r in zip(FIELD_NAMES, rules, strict=True)])
entity_st = st.sampled_from(("lead", "contact"))
person_st = st.fixed_dictionaries({n: _values(n) for n in FIELD_NAMES})
# a base may lack fields (linked just now) or have all of them (agreed before)
base_st = st.dictionaries(st.sampled_from(FIELD_NAMES), st.sampled_from(TEXTS + EMAILS + LABELS))
full_base_st = st.fixed_dictionaries({n: _values(n) for n in FIELD_NAMES})

@dataclass
class Person:
    """One linked person as the two services and the link table hold it."""

    marketo: dict[str, Value]
    dynamics: dict[str, Value]
    base: dict[str, Value]

    def sync(self, specs: list[FieldSpec], entity: str) -> MergeResult:
        """One applier round: read both sides fresh, merge, write both sides, store the base."""
        result = merge(specs, entity, self.base, self.marketo, self.dynamics)
        self.marketo.update(result.to_marketo)
        self.dynamics.update(result.to_dynamics)
        self.base = dict(result.base)
        return result


def same(spec: FieldSpec, a: Value, b: Value) -> bool:
    return spec.comparable(a) == spec.comparable(b)


@settings(max_examples=300)
@given(specs=specs_st, entity=entity_st, base=base_st, m=person_st, d=person_st)
def test_merging_a_merge_result_again_writes_nothing(
    specs: list[FieldSpec], entity: str, base: dict[str, Value], m: dict[str, Value], d: dict[str, Value]
) -> None:
    person = Person(dict(m), dict(d), dict(base))
    first = person.sync(specs, entity)
    again = person.sync(specs, entity)
    assert again.to_marketo == {} and again.to_dynamics == {}
    assert again.collisions == ()
    assert all(same(s, again.base[s.marketo], first.base[s.marketo]) for s in specs)


edit_st = st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(("marketo", "dynamics")), st.sampled_from(FIELD_NAMES),
              st.integers(0, 4)),
    st.tuples(st.just("sync")),
    st.tuples(st.just("sync twice")),  # a duplicated or re-delivered message
)


@settings(max_examples=300)
@given(specs=specs_st, entity=entity_st, m=person_st, d=person_st, steps=st.lists(edit_st, max_size=25))
def test_both_sides_converge_whatever_the_interleaving(
    specs: list[FieldSpec], entity: str, m: dict[str, Value], d: dict[str, Value], steps: list[tuple]
) -> None:
    person = Person(dict(m), dict(d), {})
    pools = {n: (EMAILS if n == "email" else LABELS if n == "leadSource" else TEXTS) for n in FIELD_NAMES}
    for step in steps:
        if step[0] == "edit":
            _, side, name, pick = step
            getattr(person, side)[name] = pools[name][pick % len(pools[name])]
        else:
            for _ in range(2 if step[0] == "sync twice" else 1):
                person.sync(specs, entity)
    person.sync(specs, entity)  # the final round after the last edit

    for spec in specs:
        name = spec.marketo
        if spec.rule == "marketo-to-dynamics-only":
            assert same(spec, person.marketo[name], person.base[name])
        elif spec.rule == "dynamics-to-marketo-only":
            assert same(spec, person.dynamics[name], person.base[name])
        else:
            assert same(spec, person.marketo[name], person.dynamics[name])
            assert same(spec, person.marketo[name], person.base[name])
    settled = person.sync(specs, entity)
    assert not settled.changed and settled.collisions == ()


def _configured_winner(spec: FieldSpec, entity: str, c: Collision) -> Side:
    blank_m, blank_d = c.marketo_value is None, c.dynamics_value is None
    if spec.rule in ("marketo-wins", "marketo-to-dynamics-only"):
        return Side.MARKETO
    if spec.rule in ("dynamics-wins", "dynamics-to-marketo-only"):
        return Side.DYNAMICS
    if spec.rule == "prefer-non-blank" and blank_m != blank_d:
        return Side.DYNAMICS if blank_m else Side.MARKETO
    return default_winner(entity)


@settings(max_examples=300)
@given(specs=specs_st, entity=entity_st, base=full_base_st, m=person_st, d=person_st)
def test_every_collision_goes_to_the_configured_winner(
    specs: list[FieldSpec], entity: str, base: dict[str, Value], m: dict[str, Value], d: dict[str, Value]
) -> None:
    person = Person(dict(m), dict(d), dict(base))
    result = person.sync(specs, entity)
    by_name = {s.marketo: s for s in specs}
    for c in result.collisions:
        spec = by_name[c.field]
        assert c.winner is _configured_winner(spec, entity, c)
        assert same(spec, person.marketo[c.field], c.winning_value)
        assert same(spec, person.dynamics[c.field], c.winning_value)
        assert same(spec, person.base[c.field], c.winning_value)
    collided = {c.field for c in result.collisions}
    for spec in specs:  # and a field changed on both sides is never silently resolved
        name = spec.marketo
        changed_m = not same(spec, m[name], base[name])
        changed_d = not same(spec, d[name], base[name])
        if changed_m and changed_d and not same(spec, m[name], d[name]):
            assert name in collided


@settings(max_examples=300)
@given(specs=specs_st, entity=entity_st, m=person_st, d=person_st)
def test_initial_link_never_blanks_a_filled_value(
    specs: list[FieldSpec], entity: str, m: dict[str, Value], d: dict[str, Value]
) -> None:
    result = merge(specs, entity, {}, m, d)
    for name, value in result.to_dynamics.items():
        assert value is not None or d[name] is None
    for name, value in result.to_marketo.items():
        assert value is not None or m[name] is None


@settings(max_examples=300)
@given(specs=specs_st, entity=entity_st, base=base_st, m=person_st, d=person_st)
def test_a_side_still_at_the_base_never_overwrites_the_other(
    specs: list[FieldSpec], entity: str, base: dict[str, Value], m: dict[str, Value], d: dict[str, Value]
) -> None:
    result = merge(specs, entity, base, m, d)
    for spec in specs:
        name = spec.marketo
        if name in base and same(spec, m[name], base[name]):
            assert name not in result.to_dynamics  # Marketo only echoes what we agreed
        if name in base and same(spec, d[name], base[name]):
            assert name not in result.to_marketo
    _no_pointless_writes(specs, result, m, d)


def _no_pointless_writes(specs: list[FieldSpec], result: MergeResult, m: Mapping[str, Value],
                         d: Mapping[str, Value]) -> None:
    by_name = {s.marketo: s for s in specs}
    for name, value in result.to_dynamics.items():
        assert not same(by_name[name], value, d[name])
    for name, value in result.to_marketo.items():
        assert not same(by_name[name], value, m[name])


@settings(max_examples=200)
@given(specs=specs_st, entity=entity_st, base=full_base_st, m=person_st, d=person_st)
def test_a_change_on_one_side_only_reaches_the_other(
    specs: list[FieldSpec], entity: str, base: dict[str, Value], m: dict[str, Value], d: dict[str, Value]
) -> None:
    person = Person(dict(m), dict(d), dict(base))
    person.sync(specs, entity)
    for spec in specs:
        name = spec.marketo
        changed_m = not same(spec, m[name], base[name])
        changed_d = not same(spec, d[name], base[name])
        if changed_m and not changed_d and spec.rule != "dynamics-to-marketo-only":
            assert person.dynamics[name] == m[name]
        if changed_d and not changed_m and spec.rule != "marketo-to-dynamics-only":
            assert person.marketo[name] == d[name]
        # the other side's own change on a one-way field is neither copied nor reverted
        if spec.rule == "marketo-to-dynamics-only" and changed_d and not changed_m:
            assert (person.marketo[name], person.dynamics[name]) == (m[name], d[name])
        if spec.rule == "dynamics-to-marketo-only" and changed_m and not changed_d:
            assert (person.marketo[name], person.dynamics[name]) == (m[name], d[name])


# -- which rule decided (a collision entry names it) ------------------------------------------
# (case, rule, entity) -> the words of the rule that picked the winner
DECIDED = {
    ("initial, marketo blank", "default", "lead"): "initial-link rule: a blank never wins",
    ("initial, dynamics blank", "marketo-wins", "contact"): "initial-link rule: a blank never wins",
    ("initial, marketo blank", "prefer-non-blank", "lead"): "initial-link rule: a blank never wins",
    ("initial, different", "default", "lead"): "default rule for leads",
    ("initial, different", "default", "contact"): "default rule for contacts",
    ("both changed differently", "marketo-wins", "contact"): "marketo-wins rule",
    ("both changed differently", "dynamics-wins", "lead"): "dynamics-wins rule",
    ("both changed, marketo cleared", "prefer-non-blank", "lead"): "prefer-non-blank rule",
    ("both changed differently", "prefer-non-blank", "contact"):
        "prefer-non-blank rule, then default rule for contacts",
    ("initial, marketo blank", "dynamics-to-marketo-only", "contact"): "dynamics-to-marketo-only rule",
    ("both changed differently", "marketo-to-dynamics-only", "lead"): "marketo-to-dynamics-only rule",
}


@pytest.mark.parametrize(("case", "rule", "entity"), list(DECIDED))
def test_a_collision_names_the_rule_that_decided(case: str, rule: str, entity: str) -> None:
    base, m, d = CASES[case]
    (collision,) = run(title(rule), entity, base, m, d).collisions
    assert collision.decided_by == DECIDED[(case, rule, entity)]
    assert collision.rule == rule  # the field's configured rule is still recorded beside it
