"""Filter building (shared.clients.odata) against the emulator's real parser; property-based."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devhost.emulators.dataverse import batch as emulator_batch
from devhost.emulators.dataverse import filter as flt
from devhost.emulators.dataverse.metadata import build_entities
from shared.clients import odata

LEAD = build_entities()["lead"]
COLUMNS = LEAD.readable()
INJECTION = "x' or 1 eq 1 or emailaddress1 eq 'y"


def parse(text: str) -> flt.Node:
    return flt.parse(text, COLUMNS, LEAD.type_name)


def matches(text: str, row: dict[str, object]) -> bool:
    return flt.evaluate(parse(text), row)


@given(st.text())
def test_string_literal_round_trips_as_one_token(value: str) -> None:
    toks = flt.tokenize(odata.literal(value))
    assert [t.kind for t in toks] == ["str", "end"] and toks[0].value == value


@given(st.text())
def test_eq_is_a_single_comparison_whatever_the_value(value: str) -> None:
    tree = parse(odata.eq("emailaddress1", value))
    assert tree == ("cmp", "eq", ("col", "emailaddress1"), ("lit", "str", value))


@given(st.lists(st.text(), min_size=1, max_size=20))
def test_in_keeps_every_value_intact(values: list[str]) -> None:
    tree = parse(odata.in_("emailaddress1", values))
    assert tree[0] == "in" and tree[1] == "emailaddress1" and [lit[2] for lit in tree[2]] == values


@settings(max_examples=300)
@given(st.text(alphabet=st.sampled_from(list("ab ()'\",=[]eqorandnot0123-.:TZ")), max_size=40))
def test_parser_only_raises_filter_error(text: str) -> None:
    try:
        tree = parse(text)
    except flt.FilterError:
        return
    flt.evaluate(tree, {"firstname": "a"})


def test_injection_string_is_just_a_value() -> None:
    text = odata.eq("emailaddress1", INJECTION)
    assert text == "emailaddress1 eq 'x'' or 1 eq 1 or emailaddress1 eq ''y'"
    assert not matches(text, {"emailaddress1": "y"})
    assert not matches(text, {"emailaddress1": "x"})
    assert matches(text, {"emailaddress1": INJECTION.upper()})  # case-insensitive, but only the whole value


def test_literals() -> None:
    gid = uuid.uuid4()
    assert odata.literal(None) == "null"
    assert odata.literal(True) == "true"
    assert odata.literal(7) == "7"
    assert odata.literal(gid) == str(gid)
    assert odata.literal(odata.Guid(str(gid).upper())) == str(gid)
    assert odata.literal(datetime(2024, 5, 1, 10, 22, 33, tzinfo=timezone.utc)) == "2024-05-01T10:22:33Z"
    assert odata.literal("O'Bryan") == "'O''Bryan'"
    with pytest.raises(ValueError):
        odata.Guid("1' or 1 eq 1")
    with pytest.raises(ValueError):
        odata.literal(float("nan"))
    with pytest.raises(TypeError):
        odata.literal(object())


@pytest.mark.parametrize("name", ["a eq 1", "x' or", "1abc", "", "a/b/c", "a;b"])
def test_column_rejects_non_identifiers(name: str) -> None:
    with pytest.raises(ValueError):
        odata.eq(name, "v")


def test_key_segment_quotes_and_encodes() -> None:
    gid = str(uuid.uuid4())
    assert odata.key_segment(gid) == f"({gid})"
    assert odata.key_segment({"emailaddress1": "o'hara/x?y@z.com"}) == "(emailaddress1='o''hara%2Fx%3Fy@z.com')"
    with pytest.raises(ValueError):
        odata.key_segment("not-a-guid")


def test_parser_precedence_and_types() -> None:
    row = {"firstname": "Ann", "lastname": "Lee", "leadsourcecode": 3, "statecode": 0, "emailaddress1": None,
           "modifiedon": "2024-05-01T10:22:33Z", "new_synctomkto": True}
    assert matches("firstname eq 'x' or firstname eq 'ann' and lastname eq 'lee'", row)
    assert not matches("(firstname eq 'x' or firstname eq 'ann') and lastname eq 'zed'", row)
    assert matches("not firstname eq 'bob'", row)
    assert matches("leadsourcecode gt 2 and leadsourcecode le 3", row)
    assert matches("emailaddress1 eq null and emailaddress1 ne 'a'", row)
    assert not matches("emailaddress1 gt 'a'", row)
    assert matches("modifiedon ge 2024-05-01T10:22:33Z and modifiedon lt 2024-05-02", row)
    assert matches("new_synctomkto eq true", row)
    assert matches("contains(firstname,'n_')", row) and not matches("contains(firstname,'x%')", row)
    assert matches("firstname in ('bob','ANN')", row)
    assert matches("Microsoft.Dynamics.CRM.NotIn(PropertyName='firstname',PropertyValues=[\"bob\"])", row)
    for bad in ("leadsourcecode eq 'x'", "firstname eq 1", "leadid eq 'abc'", "firstname eq", "eq 1",
                "firstname eq 'a' and", "((firstname eq 'a')", "firstname eq 'a')", "unknown eq 1", "f(x)",
                "firstname eq 'a' firstname", "firstname ~ 'a'"):
        with pytest.raises(flt.FilterError):
            parse(bad)


@given(st.lists(st.tuples(st.sampled_from(["POST", "PATCH", "GET"]),
                          st.dictionaries(st.sampled_from(["firstname", "lastname"]), st.text(max_size=20))),
                max_size=10))
def test_batch_encoding_is_read_back_by_the_emulator(ops: list[tuple[str, dict[str, str]]]) -> None:
    parts = [odata.BatchPart(m, f"https://h/api/data/v9.2/leads?$select=leadid&n={i}", None if m == "GET" else body,
                             {"If-Match": "*"}) for i, (m, body) in enumerate(ops)]
    ctype, body = odata.encode_batch(parts)
    parsed = emulator_batch.parse(body, ctype)
    assert len(parsed) == len(ops)
    for (method, record), req in zip(ops, parsed, strict=True):
        assert isinstance(req, emulator_batch.InnerRequest)
        assert req.method == method and req.headers["if-match"] == "*"
        if method != "GET":
            import json

            assert json.loads(req.body) == record
    responses = [emulator_batch.InnerResponse(204, {"OData-Version": "4.0"}, b""),
                 [emulator_batch.InnerResponse(200, {"Content-Type": "application/json"}, b'{"a": 1}', "1")]]
    ctype, rendered = emulator_batch.render(responses)  # type: ignore[arg-type]
    decoded = odata.decode_batch(ctype, rendered)
    assert [(r.status, r.json()) for r in decoded] == [(204, None), (200, {"a": 1})]
