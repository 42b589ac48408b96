"""The field map: which fields sync, how values convert, and how a wrong map is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.rules.fieldmap import DEFAULT_PATH, FieldMap, FieldSpec, Value, check_against, load, parse

MINIMAL: dict[str, Any] = {
    "version": 1,
    "fields": [
        {"marketo": "email", "lead": "emailaddress1", "contact": "emailaddress1", "type": "email"},
        {"marketo": "firstName", "lead": "firstname", "contact": "firstname"},
        {"marketo": "leadSource", "lead": "leadsourcecode", "type": "choice", "choices": {"Web": 8, "Partner": 4}},
    ],
}


def doc(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(MINIMAL)
    d.update(changes)
    return d


def with_field(i: int, **entry: Any) -> dict[str, Any]:
    d = copy.deepcopy(MINIMAL)
    d["fields"][i] = entry
    return d


# -- the default map -------------------------------------------------------------------
def test_default_map_loads_with_email_as_the_matching_field() -> None:
    fmap = load(None)
    assert fmap.email.marketo == "email"
    assert fmap.email.column("lead") == fmap.email.column("contact") == "emailaddress1"
    assert fmap.create_defaults["lead"] == {"subject": "Marketo person"}


def test_default_map_keeps_lead_only_fields_off_contacts() -> None:
    fmap = load(None)
    contact = {f.marketo for f in fmap.for_entity("contact")}
    lead = {f.marketo for f in fmap.for_entity("lead")}
    assert {"company", "leadSource"} <= lead - contact
    assert "companyname" not in fmap.columns("contact")
    assert fmap.to_dynamics("contact", {"company": "Acme", "firstName": "Ann"}) == {"firstname": "Ann"}


def test_default_map_file_is_the_same_as_loading_its_path() -> None:
    assert load(str(DEFAULT_PATH)) == load(None)


# -- conversions -----------------------------------------------------------------------
LEAD_SOURCE = load(None).spec("leadSource")


def test_choice_label_becomes_the_option_value_and_back() -> None:
    assert LEAD_SOURCE.to_dynamics("Web") == 8
    assert LEAD_SOURCE.from_dynamics(8) == "Web"


def test_choice_label_matching_ignores_case() -> None:
    assert LEAD_SOURCE.to_dynamics("trade show") == 7
    assert LEAD_SOURCE.comparable("WEB") == LEAD_SOURCE.comparable("Web")


def test_unknown_option_survives_as_its_number() -> None:
    assert LEAD_SOURCE.from_dynamics(100000001) == "#100000001"
    assert LEAD_SOURCE.to_dynamics("#100000001") == 100000001


def test_unknown_label_is_passed_on_for_validation_to_name() -> None:
    assert LEAD_SOURCE.to_dynamics("Carrier Pigeon") == "Carrier Pigeon"


def test_blank_choice_is_none_both_ways() -> None:
    assert LEAD_SOURCE.from_dynamics(None) is None
    assert LEAD_SOURCE.to_dynamics(None) is None


@pytest.mark.parametrize(("raw", "expected"), [
    (True, True), (False, False), ("true", True), ("TRUE", True), ("1", True), ("yes", True), (" Yes ", True),
    ("false", False), ("0", False), ("no", False), ("", None), ("  ", None), (None, None),
])
def test_boolean_values(raw: Any, expected: Value) -> None:
    assert FieldSpec("unsubscribed", {"lead": "donotemail"}, type="boolean").canonical(raw) is expected


def test_odd_boolean_survives_so_validation_can_name_it() -> None:
    assert FieldSpec("unsubscribed", {"lead": "donotemail"}, type="boolean").canonical("maybe") == "maybe"


@pytest.mark.parametrize(("raw", "expected"), [(42, 42), ("42", 42), (" 7 ", 7), ("", None), (None, None),
                                               ("lots", "lots")])
def test_integer_values(raw: Any, expected: Value) -> None:
    assert FieldSpec("employees", {"lead": "numberofemployees"}, type="integer").canonical(raw) == expected


@pytest.mark.parametrize("kind", ["string", "email", "phone"])
@pytest.mark.parametrize("raw", ["", None])
def test_blank_text_is_none(kind: str, raw: Any) -> None:
    assert FieldSpec("x", {"lead": "x"}, type=kind).canonical(raw) is None


@pytest.mark.parametrize("kind", ["string", "phone"])
@pytest.mark.parametrize("raw", ["  Ann ", "   ", "\tAnn\n", " +44 20 "])
def test_text_is_kept_exactly_as_written(kind: str, raw: str) -> None:
    assert FieldSpec("firstName", {"lead": "firstname"}, type=kind).canonical(raw) == raw


@pytest.mark.parametrize("raw", ["   ", "\t\n"])
def test_a_blank_email_is_none(raw: str) -> None:
    assert FieldSpec("email", {"lead": "emailaddress1"}, type="email").canonical(raw) is None


def test_an_email_is_stripped_since_people_are_matched_on_it() -> None:
    email = FieldSpec("email", {"lead": "emailaddress1"}, type="email")
    assert email.canonical(" ann@example.com ") == "ann@example.com"


def test_email_compares_case_insensitively_names_do_not() -> None:
    email = load(None).email
    assert email.comparable("Ann@Example.COM") == email.comparable("ann@example.com")
    first = load(None).spec("firstName")
    assert first.comparable("Ann") != first.comparable("ann")


def test_whole_records_convert_by_marketo_name() -> None:
    fmap = load(None)
    m = fmap.from_marketo({"email": " ann@example.com ", "firstName": "Ann", "leadSource": "Web", "id": 5})
    assert m["email"] == "ann@example.com" and m["leadSource"] == "Web" and "id" not in m
    assert m["company"] is None  # absent on the wire = blank
    d = fmap.from_dynamics("lead", {"emailaddress1": "ann@example.com", "leadsourcecode": 8, "companyname": ""})
    assert d["leadSource"] == "Web" and d["company"] is None
    assert set(fmap.from_dynamics("contact", {})) == {f.marketo for f in fmap.for_entity("contact")}
    assert fmap.to_dynamics("lead", {"leadSource": "Web", "email": "a@b.co"}) == {
        "leadsourcecode": 8, "emailaddress1": "a@b.co"}


# -- round trip ------------------------------------------------------------------------
text_st = st.text(min_size=1, max_size=40)
email_st = text_st.map(str.strip).filter(bool)


def canonical_values(spec: FieldSpec) -> st.SearchStrategy[Value]:
    if spec.type == "choice":
        unknown = st.integers(0, 2**31 - 1).filter(lambda n: n not in spec.choices.values()).map(lambda n: f"#{n}")
        return st.one_of(st.none(), st.sampled_from(sorted(spec.choices)), unknown)
    if spec.type == "boolean":
        return st.sampled_from([True, False, None])
    if spec.type == "integer":
        return st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))
    return st.one_of(st.none(), email_st if spec.type == "email" else text_st)


WIDE = parse({"version": 1, "fields": [
    {"marketo": "email", "lead": "emailaddress1", "contact": "emailaddress1", "type": "email"},
    {"marketo": "unsubscribed", "lead": "donotemail", "contact": "donotemail", "type": "boolean"},
    {"marketo": "numberOfEmployees", "lead": "numberofemployees", "type": "integer"},
    {"marketo": "industry", "lead": "industrycode", "type": "choice", "choices": {"Accounting": 1, "Retail": 2}},
]})
SPECS = [(spec, entity) for fmap in (load(None), WIDE) for spec in fmap.fields for entity in spec.columns]


@pytest.mark.parametrize(("spec", "entity"), SPECS, ids=[f"{s.marketo}@{e}" for s, e in SPECS])
@given(data=st.data())
def test_every_canonical_value_survives_a_trip_through_dynamics(spec: FieldSpec, entity: str, data: Any) -> None:
    value = data.draw(canonical_values(spec))
    assert spec.canonical(value) == value  # the strategy only makes canonical values
    assert spec.from_dynamics(spec.to_dynamics(value)) == value


@given(data=st.data())
def test_whole_record_round_trip(data: Any) -> None:
    fmap = load(None)
    for entity in ("lead", "contact"):
        values = {s.marketo: data.draw(canonical_values(s)) for s in fmap.for_entity(entity)}
        assert fmap.from_dynamics(entity, fmap.to_dynamics(entity, values)) == values


# -- refusing a wrong map --------------------------------------------------------------
@pytest.mark.parametrize(("document", "says"), [
    (doc(version=2), "'version' must be 1"),
    ({k: v for k, v in MINIMAL.items() if k != "version"}, "'version' must be 1"),
    (doc(fields=[]), "'fields' must be a non-empty list"),
    (doc(fields="email"), "'fields' must be a non-empty list"),
    (doc(fields=["email"]), "fields[0] must be an object"),
    (with_field(1, marketo="firstName", lead="firstname", colour="red"), "fields[1] has unknown keys ['colour']"),
    (with_field(1, lead="firstname"), "fields[1].marketo must be"),
    (with_field(1, marketo="email", lead="firstname"), "fields[1]: Marketo field 'email' is mapped twice"),
    (with_field(1, marketo="firstName", contact="emailaddress1"),
     "fields[1]: contact column 'emailaddress1' is mapped twice"),
    (with_field(1, marketo="firstName"), "fields[1] (firstName) maps to neither 'lead' nor 'contact'"),
    (with_field(1, marketo="firstName", lead=7), "fields[1].lead must be a column name"),
    (with_field(1, marketo="firstName", lead="firstname", type="time"), "fields[1].type 'time' is not one of"),
    (with_field(1, marketo="firstName", lead="firstname", rule="newest-wins"),
     "fields[1].rule 'newest-wins' is not one of"),
    (with_field(2, marketo="leadSource", lead="leadsourcecode", type="choice"), "fields[2].choices must map"),
    (with_field(2, marketo="leadSource", lead="leadsourcecode", type="choice", choices={"Web": "8"}),
     "fields[2].choices must map"),
    (with_field(0, marketo="email", lead="emailaddress1"), "no field of type 'email'"),
    (doc(create_defaults={"account": {}}), "'create_defaults' must map 'lead'/'contact'"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_parse_names_the_problem(document: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(document)
    assert says in str(caught.value)
    assert caught.value.setting == "LEADSYNC_FIELD_MAP"


def test_minimal_map_parses() -> None:
    fmap = parse(MINIMAL)
    assert fmap.marketo_fields() == ["email", "firstName", "leadSource"]
    assert fmap.spec("leadSource").choices == {"Web": 8, "Partner": 4}
    assert fmap.spec("firstName").rule == "default" and fmap.spec("firstName").type == "string"


def test_load_accepts_json_text() -> None:
    assert load(json.dumps(MINIMAL)) == parse(MINIMAL)


def test_load_accepts_a_file(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(MINIMAL))
    assert load(str(path)) == parse(MINIMAL)


def test_load_rejects_bad_json_text() -> None:
    with pytest.raises(ConfigError, match="LEADSYNC_FIELD_MAP: is not valid JSON"):
        load('{"version": 1, "fields": [')


def test_load_rejects_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load(str(missing))
    assert str(missing) in str(caught.value)


def test_load_names_the_file_with_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(path) in str(caught.value) and "not valid JSON" in str(caught.value)


def test_load_rejects_a_file_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load(str(path))


def test_problems_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps(doc(version=3)))
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(path) in str(caught.value)


# -- checking the map against the services ---------------------------------------------
COLUMNS = {"lead": {"emailaddress1", "firstname", "leadsourcecode"}, "contact": {"emailaddress1", "firstname"}}


def test_check_against_accepts_a_map_the_services_have() -> None:
    check_against(parse(MINIMAL), {"email", "firstName", "leadSource", "lastName"}, COLUMNS)


def test_check_against_rejects_an_unknown_marketo_field() -> None:
    with pytest.raises(ConfigError, match="Marketo has no field 'leadSource'"):
        check_against(parse(MINIMAL), {"email", "firstName"}, COLUMNS)


@pytest.mark.parametrize(("entity", "column"), [("lead", "leadsourcecode"), ("contact", "firstname")])
def test_check_against_rejects_an_unknown_column(entity: str, column: str) -> None:
    columns = {e: set(c) for e, c in COLUMNS.items()}
    columns[entity].discard(column)
    with pytest.raises(ConfigError, match=f"Dataverse {entity} has no column '{column}'"):
        check_against(parse(MINIMAL), {"email", "firstName", "leadSource"}, columns)


def test_maps_are_values() -> None:
    assert isinstance(load(None), FieldMap)
    assert parse(MINIMAL) == parse(copy.deepcopy(MINIMAL))
