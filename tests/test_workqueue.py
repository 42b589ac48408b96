"""Work messages: what a queue message must look like, and the reason when it doesn't."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import BadMessage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, MAX_IDS, Work, chunked

GUID = "6f1d2c3b-4a59-4e6f-9a8b-7c6d5e4f3a2b"


def body(**changes: Any) -> str:
    b: dict[str, Any] = {"v": 1, "source": "dynamics", "kind": "changed", "entity": "lead", "ids": [GUID]}
    for k, v in changes.items():
        if v is None:
            b.pop(k, None)
        else:
            b[k] = v
    return json.dumps(b)


# -- round trip ------------------------------------------------------------------------
guid_st = st.uuids().map(str).flatmap(lambda g: st.sampled_from([g, g.upper()]))
op_st = st.text(min_size=1, max_size=20)
reason_st = st.text(max_size=20)
marketo_work = st.builds(Work, source=st.just("marketo"), kind=st.sampled_from(["changed", "deleted"]),
                         ids=st.lists(st.integers(1, 2**53), min_size=1, max_size=MAX_IDS).map(tuple),
                         entity=st.none(), reason=reason_st, operation_id=op_st)
dynamics_work = st.builds(Work, source=st.just("dynamics"), kind=st.sampled_from(["changed", "deleted"]),
                          ids=st.lists(guid_st, min_size=1, max_size=MAX_IDS).map(tuple),
                          entity=st.sampled_from(["lead", "contact"]), reason=reason_st, operation_id=op_st)


@given(work=st.one_of(marketo_work, dynamics_work))
def test_every_valid_message_survives_the_queue(work: Work) -> None:
    assert Work.from_json(work.to_json()) == work
    assert Work.from_json(work.to_json().encode()) == work


def test_wire_format() -> None:
    work = Work("marketo", "deleted", (1042, 7), reason="realtime", operation_id="op1")
    assert json.loads(work.to_json()) == {"v": 1, "source": "marketo", "kind": "deleted", "ids": [1042, 7],
                                          "reason": "realtime", "op": "op1"}
    assert work.queue == FROM_MARKETO
    dyn = Work("dynamics", "changed", (GUID,), "contact")
    assert json.loads(dyn.to_json())["entity"] == "contact" and dyn.queue == FROM_DYNAMICS


def test_reason_and_operation_id_are_optional_on_the_wire() -> None:
    work = Work.from_json(body())
    assert work.reason == "poll" and work.operation_id


def test_new_work_gets_distinct_operation_ids() -> None:
    assert Work("marketo", "changed", (1,)).operation_id != Work("marketo", "changed", (1,)).operation_id


# -- bad messages ----------------------------------------------------------------------
@pytest.mark.parametrize(("text", "reason"), [
    ("", "not JSON"),
    ("{'v': 1}", "not JSON"),
    ("hello", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('"changed"', "not a JSON object"),
    ("null", "not a JSON object"),
    (body(v=None), "schema version None is not 1"),
    (body(v=2), "schema version 2 is not 1"),
    (body(v="1"), "schema version '1' is not 1"),
    (body(source="salesforce"), "source 'salesforce' is not 'marketo' or 'dynamics'"),
    (body(source=None), "source None is not"),
    (body(kind="merged"), "kind 'merged' is not 'changed' or 'deleted'"),
    (body(kind=None), "kind None is not"),
    (body(source="marketo", kind="merged", ids=[1042]), "a merged message names the winner, then at least one loser"),
    (body(ids=[]), "ids must be a list of 1 to 300 record ids"),
    (body(ids=None), "ids must be a list of 1 to 300 record ids"),
    (body(ids=GUID), "ids must be a list of 1 to 300 record ids"),
    (body(ids=[str(uuid.UUID(int=i)) for i in range(MAX_IDS + 1)]), "ids must be a list of 1 to 300 record ids"),
    (body(source="marketo", ids=["1042"]), "Marketo ids must be positive integers"),
    (body(source="marketo", ids=[1042, 1.5]), "Marketo ids must be positive integers"),
    (body(source="marketo", ids=[True]), "Marketo ids must be positive integers"),
    (body(source="marketo", ids=[0]), "Marketo ids must be positive integers"),
    (body(source="marketo", ids=[-7]), "Marketo ids must be positive integers"),
    (body(source="marketo", ids=[None]), "Marketo ids must be positive integers"),
    (body(ids=[GUID, "not-a-guid"]), "Dynamics ids must be GUIDs"),
    (body(ids=[True]), "Dynamics ids must be GUIDs"),
    (body(ids=[1042]), "Dynamics ids must be GUIDs"),
    (body(ids=["{" + GUID + "}"]), "Dynamics ids must be GUIDs"),
    (body(ids=[GUID.replace("-", "")]), "Dynamics ids must be GUIDs"),
    (body(entity=None), "entity None is not 'lead' or 'contact'"),
    (body(entity="account"), "entity 'account' is not 'lead' or 'contact'"),
], ids=lambda v: None if isinstance(v, str | bytes) and len(v) > 60 else repr(v)[:60])
def test_bad_message_says_why(text: str | bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        Work.from_json(text)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason


def test_a_marketo_merge_names_its_winner_first() -> None:
    work = Work.from_json(Work("marketo", "merged", (1042, 7, 9)).to_json())
    assert (work.kind, work.ids) == ("merged", (1042, 7, 9))


def test_exactly_300_ids_is_fine() -> None:
    assert len(Work.from_json(body(source="marketo", ids=list(range(1, MAX_IDS + 1)))).ids) == MAX_IDS


def test_marketo_message_ignores_an_entity() -> None:
    assert Work.from_json(body(source="marketo", ids=[5], entity="lead")).entity is None


def test_a_guid_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(BadMessage, match="Dynamics ids must be GUIDs"):
        Work.from_json(body(ids=[GUID + "\n"]))


@given(st.one_of(st.text(), st.binary()))
def test_any_text_is_work_or_a_bad_message(text: str | bytes) -> None:
    try:
        Work.from_json(text)
    except BadMessage as exc:
        assert exc.reason


json_value = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@given(st.fixed_dictionaries({}, optional={"v": json_value | st.just(1), "source": st.sampled_from(
    ["marketo", "dynamics"]) | json_value, "kind": st.sampled_from(["changed", "deleted"]) | json_value,
    "entity": st.sampled_from(["lead", "contact"]) | json_value, "ids": json_value, "reason": json_value,
    "op": json_value}))
def test_any_json_object_is_work_or_a_bad_message(doc: dict[str, Any]) -> None:
    try:
        work = Work.from_json(json.dumps(doc))
    except BadMessage as exc:
        assert exc.reason
    else:
        assert work.source in ("marketo", "dynamics") and 1 <= len(work.ids) <= MAX_IDS


# -- chunking --------------------------------------------------------------------------
def test_chunked_dedupes_keeping_first_seen_order() -> None:
    (work,) = chunked("marketo", "changed", [5, 3, 5, 1, 3])
    assert work.ids == (5, 3, 1)


def test_chunked_splits_at_the_message_limit() -> None:
    works = chunked("marketo", "changed", list(range(1, 702)) + list(range(1, 100)))
    assert [len(w.ids) for w in works] == [300, 300, 101]
    assert [i for w in works for i in w.ids] == list(range(1, 702))


def test_chunked_honours_a_smaller_size() -> None:
    works = chunked("dynamics", "deleted", [str(uuid.UUID(int=i)) for i in range(10)], entity="contact", size=4,
                    reason="realtime")
    assert [len(w.ids) for w in works] == [4, 4, 2]
    assert all(w.entity == "contact" and w.reason == "realtime" and w.kind == "deleted" for w in works)
    assert len({w.operation_id for w in works}) == 3


def test_chunked_nothing_is_no_messages() -> None:
    assert chunked("marketo", "changed", []) == []


@given(ids=st.lists(st.integers(1, 50), max_size=800), size=st.integers(1, MAX_IDS))
def test_chunks_cover_each_id_once_and_parse_back(ids: list[int], size: int) -> None:
    works = chunked("marketo", "changed", ids, size=size)
    flat = [i for w in works for i in w.ids]
    assert flat == list(dict.fromkeys(ids))
    assert all(1 <= len(w.ids) <= size for w in works)
    assert all(Work.from_json(w.to_json()) == w for w in works)


def test_deeply_nested_json_is_a_bad_message() -> None:
    with pytest.raises(BadMessage, match="not JSON"):
        Work.from_json("[" * 20_000 + "]" * 20_000)


def test_a_boolean_schema_version_is_refused() -> None:
    with pytest.raises(BadMessage, match="schema version"):
        Work.from_json(body(v=True))
