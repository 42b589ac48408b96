"""The webhook's body contract (docs/security.md), through the real app in devhost.

Exactly `{"leadId": <JSON integer 1..2**31-1>}`, JSON whitespace allowed, anything else a
400 with a JSON reason before any call to Marketo, and never a 5xx. The hypothesis fuzz
(chaos/webhook_fuzz.py) runs here with FUZZ_TEST_EXAMPLES requests; `make chaos` runs
5,000.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from chaos.webhook_fuzz import bodies, fuzz_webhook, valid_body
from devhost.harness import Harness, running
from devhost.stack import StackConfig
from shared.errors import BadMessage
from shared.sync.realtime import parse_body

NEVER = "0 0 0 1 1 *"
CONFIG = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER})
FUZZ_TEST_EXAMPLES = int(os.environ.get("FUZZ_TEST_EXAMPLES", "300"))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies())
def test_parse_body_accepts_exactly_the_contract(body: bytes) -> None:
    try:
        lead_id = parse_body(body)
    except BadMessage as exc:
        assert exc.reason and not valid_body(body)
        return
    assert valid_body(body) and 0 < lead_id < 2**31 and str(lead_id).encode() in body


@pytest.fixture(scope="module")
def empty() -> Iterator[Harness]:
    """No Marketo people: a valid body is a 404, never a lead."""
    with running(CONFIG, first_sync=False) as harness:
        yield harness


def marketo_reads(h: Harness) -> int:
    return sum(n for call, n in h.marketo.stats()["calls_by_endpoint"].items() if call.endswith("/v1/leads.json"))


REFUSED = {
    # Unicode digits: str.isdigit() accepts these; int() refuses the first three (a 500 before).
    "superscript": '{"leadId": "\u00b2"}',
    "circled": '{"leadId": "\u2460"}',
    "ethiopic": '{"leadId": "\u1369"}',
    # ... and turns these into an id (a lead was created before).
    "arabic-indic": '{"leadId": "\u0664\u0662"}',
    "fullwidth": '{"leadId": "\uff14\uff12"}',
    "numeric string": '{"leadId": "42"}',
    "padded string": '{"leadId": " 42 "}',
    "extra key": '{"leadId": 42, "email": "x@example.com"}',
    "duplicate key": '{"leadId": 42, "leadId": 43}',
    "duplicate key, same value": '{"leadId": 42, "leadId": 42}',
    "nested 1000 deep": "[" * 1000 + "]" * 1000,
    "nested under leadId": '{"leadId": ' + "[" * 1500 + "1" + "]" * 1500 + "}",
    "objects nested": '{"a":' * 400 + "1" + "}" * 400,
    "lone surrogate in value": '{"leadId": "\\ud800"}',
    "lone surrogate in key": '{"lead\\udc00Id": 42}',
    "float": '{"leadId": 42.0}',
    "exponent": '{"leadId": 4e1}',
    "bool": '{"leadId": true}',
    "zero": '{"leadId": 0}',
    "2**31": '{"leadId": 2147483648}',
    "NaN": '{"leadId": NaN}',
    "other case": '{"leadid": 42}',
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_body_outside_the_contract_is_a_400_with_a_reason_before_any_marketo_call(empty: Harness,
                                                                                    name: str) -> None:
    reads = marketo_reads(empty)
    response = empty.sync_person(None, raw=REFUSED[name].encode())
    assert response.status_code == 400, response.text[:300]
    assert response.json()["status"] == "bad_request" and response.json()["error"]
    assert marketo_reads(empty) == reads
    assert not valid_body(REFUSED[name].encode())  # the fuzz's oracle agrees


@pytest.mark.e2e
@pytest.mark.parametrize("raw", [
    b"\xef\xbb\xbf" + b'{"leadId": 42}',  # a UTF-8 byte-order mark
    b'{"leadId": 42}'.replace(b"42", b"\xed\xa0\x80"),  # a lone surrogate as raw UTF-8 bytes
    b'{"leadId": 42' + b"\xed\xb0\x80" + b"}",
    '{"leadId": 42}'.encode("utf-16"),
])
def test_a_body_that_is_not_plain_utf8_is_a_400(empty: Harness, raw: bytes) -> None:
    response = empty.sync_person(None, raw=raw)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]


@pytest.mark.e2e
@pytest.mark.parametrize("raw", [b'{"leadId": 7}', b'{"leadId":7}', b' \r\n\t{ "leadId" :\n7 }\n',
                                 b'{"leadId": 2147483647}'])
def test_the_webhook_template_with_any_json_whitespace_is_accepted(empty: Harness, raw: bytes) -> None:
    response = empty.sync_person(None, raw=raw)
    assert response.status_code == 404, response.text  # parsed, then looked up: Marketo has no such person
    assert valid_body(raw)


@pytest.mark.e2e
def test_the_fuzz_gets_no_5xx_and_no_wrong_answer(empty: Harness) -> None:
    result = fuzz_webhook(empty.stack.app_url, empty.stack.config.function_key, examples=FUZZ_TEST_EXAMPLES)
    assert result.examples == FUZZ_TEST_EXAMPLES
    assert result.server_error_count == 0, result.server_errors
    assert result.mismatches == 0, result.wrong
    assert result.accepted > 0 and result.statuses[400] > FUZZ_TEST_EXAMPLES // 2  # it reached both sides
    assert empty.dataverse.find("leads") == []
