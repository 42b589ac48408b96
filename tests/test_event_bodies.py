"""What a change event's body may be (pure: `shared.sync.events`), with property-based fuzzing:
any bytes are either one record's event or a BadMessage with a reason, never another error."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import BadMessage
from shared.sync.events import MESSAGES, Event, parse_dataverse, parse_marketo

GUID = "6d81597f-0f9f-e711-8122-000d3aa2331c"
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=20)


def body(**fields: Any) -> bytes:
    return json.dumps({"MessageName": "Update", "PrimaryEntityName": "lead", "PrimaryEntityId": GUID,
                       "Depth": 1, **fields}).encode()


def parsed_or_refused(raw: bytes) -> Event | None:
    try:
        return parse_dataverse(raw)
    except BadMessage as exc:
        assert exc.reason
        return None


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_any_bytes_are_an_event_or_a_reason(raw: bytes) -> None:
    parsed_or_refused(raw)


@settings(max_examples=300)
@given(JSON, st.booleans())
def test_any_json_is_an_event_or_a_reason(value: Any, double: bool) -> None:
    text = json.dumps(value)
    parsed_or_refused(json.dumps(text).encode() if double else text.encode())


@settings(max_examples=300)
@given(st.one_of(st.sampled_from([*MESSAGES, "Assign", "update", ""]), JSON),
       st.one_of(st.sampled_from(["lead", "contact", "account", "Lead"]), JSON),
       st.one_of(st.just(GUID), st.just(GUID.upper()), st.uuids().map(str), JSON))
def test_an_event_is_accepted_exactly_when_its_three_fields_are(message: Any, entity: Any, record_id: Any) -> None:
    event = parsed_or_refused(body(MessageName=message, PrimaryEntityName=entity, PrimaryEntityId=record_id))
    valid = (message in list(MESSAGES) and entity in ("lead", "contact") and isinstance(record_id, str)
             and _is_guid(record_id))
    assert (event is not None) == valid
    if event is not None:
        assert (event.kind, event.entity, event.record_id) == (MESSAGES[message], entity, record_id.lower())


def _is_guid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def test_a_byte_order_mark_is_allowed() -> None:
    assert parse_dataverse(b"\xef\xbb\xbf" + body()) == Event("dynamics", "changed", GUID, "lead")


@pytest.mark.parametrize("raw", [b'{"leadId": 7}', b' { "leadId" : 7 } '])
def test_a_marketo_event_names_its_person(raw: bytes) -> None:
    assert parse_marketo(raw) == Event("marketo", "changed", 7)
