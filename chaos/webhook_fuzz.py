"""A hypothesis fuzz of `POST /api/sync-person`: hostile bodies, headers and query strings
against a running app, counting answers by status.

What the endpoint promises (docs/security.md): every request is answered with a 4xx and a
JSON reason unless it is exactly `{"leadId": <1..2**31-1>}`, and never with a 5xx. The
strategy aims at what broke that before: Unicode digits that `str.isdigit()` accepts,
nesting deep enough to exhaust a recursive parser, lone UTF-16 surrogates (as raw bytes
and as JSON escapes, in keys, values and between tokens), repeated and extra keys, numbers
of every shape, other encodings, oversized bodies and content types.

`tests/test_webhook_body.py` runs it with a few hundred examples; `python -m chaos` runs a
phase of FUZZ_EXAMPLES (see chaos/README.md).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = 5000
MAX_BODY = 4096
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
# Characters str.isdigit() accepts that are not ASCII digits: superscripts, circled and
# Ethiopic numbers (int() refuses them), Arabic-Indic and fullwidth digits (int() takes them).
UNICODE_DIGITS = st.sampled_from([c for c in map(chr, range(0x80, 0x20000)) if c.isdigit()])
JSON_SPACE = st.text(st.sampled_from(" \t\r\n"), max_size=3)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def surrogate_texts(draw: st.DrawFn) -> str:
    """Text with at least one lone surrogate somewhere in it."""
    text = draw(st.text(max_size=12))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(SURROGATES) + text[at:]


@st.composite
def lead_values(draw: st.DrawFn) -> str:
    """The JSON text of a `leadId` value, valid or not."""
    kind = draw(st.sampled_from(["valid", "int", "unicode", "numeric_string", "float", "literal", "surrogate",
                                 "nested", "any"]))
    if kind == "valid":
        return str(draw(st.integers(1, 2**31 - 1)))
    if kind == "int":
        return str(draw(st.one_of(st.integers(-2**64, 0), st.integers(2**31, 2**64), st.just(-0),
                                  st.integers(10**300, 10**301))))
    if kind == "unicode":
        digits = draw(st.lists(UNICODE_DIGITS | st.sampled_from("0123456789"), min_size=1, max_size=8))
        return _dumps(draw(JSON_SPACE) + "".join(digits) + draw(JSON_SPACE))
    if kind == "numeric_string":
        return _dumps(draw(st.sampled_from(["", " ", "+"])) + str(draw(st.integers(1, 2**31 - 1))) +
                      draw(st.sampled_from(["", " ", "\n", ".0"])))
    if kind == "float":
        return draw(st.sampled_from(["1.0", "1e3", "1E+2", "12.5", "-1.5", "1e400", "NaN", "Infinity",
                                     "-Infinity", "0.1e1"])) if draw(st.booleans()) else _dumps(draw(st.floats()))
    if kind == "literal":
        return draw(st.sampled_from(["true", "false", "null", "01", "0x10", "+1", "1_000", "[]", "{}", '"1"']))
    if kind == "surrogate":
        return _dumps(draw(surrogate_texts()))
    if kind == "nested":
        depth = draw(st.integers(2, 1500) | st.sampled_from([1000, 1500]))
        return "[" * depth + "1" + "]" * depth
    return _dumps(draw(json_values))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A request body: mostly near-misses of `{"leadId": N}`, some valid, some garbage."""
    kind = draw(st.sampled_from(["lead", "lead", "extra", "duplicate", "deep", "deep", "surrogate_bytes",
                                 "surrogate_key", "mutated", "raw", "json", "encoded", "big"]))
    sp = draw(JSON_SPACE)
    if kind == "lead":
        text = f'{sp}{{{sp}"leadId"{sp}:{sp}{draw(lead_values())}{sp}}}{sp}'
    elif kind == "extra":
        extra = draw(st.text(max_size=8) | surrogate_texts())
        text = f'{{"leadId": {draw(lead_values())}, {_dumps(extra)}: {_dumps(draw(json_values))}}}'
    elif kind == "duplicate":
        first, second = draw(lead_values()), draw(lead_values())
        text = f'{{"leadId": {first}, "leadId": {second}}}'
    elif kind == "deep":
        # Hypothesis draws small integers most often: name the depths that broke a recursive parser.
        depth = draw(st.integers(100, 4000) | st.sampled_from([999, 1000, 1001, 1500, 2040, 4000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"leadId":', "}"), ("[{\"a\":", "}]")]))
        closed = draw(st.booleans())  # unclosed: the parser still descends before it finds the end
        reps = min(depth, (MAX_BODY - 2) // (len(opener) + (len(closer) if closed else 0)))
        text = opener * reps + ("1" + closer * reps if closed else "")
    elif kind == "surrogate_bytes":
        valid = f'{{"leadId": {draw(st.integers(1, 2**31 - 1))}}}'
        at = draw(st.integers(0, len(valid)))
        raw = valid.encode()
        return raw[:at] + draw(SURROGATES).encode("utf-8", "surrogatepass") + raw[at:]
    elif kind == "surrogate_key":
        key = draw(st.sampled_from(["leadId", "lead\\ud800Id", "\\udc00leadId", "leadId\\udfff", "\\ud83d"]))
        value = draw(lead_values())
        text = f'{{"{key}": {value}}}'
    elif kind == "mutated":
        valid = f'{{"leadId": {draw(st.integers(1, 2**31 - 1))}}}'
        at = draw(st.integers(0, len(valid)))
        cut = draw(st.integers(0, 2))
        text = valid[:at] + draw(st.text(max_size=3)) + valid[at + cut:]
        return text.encode("utf-8", "surrogatepass")
    elif kind == "raw":
        return draw(st.binary(max_size=600))
    elif kind == "json":
        text = _dumps(draw(json_values))
    elif kind == "encoded":
        text = f'{{"leadId": {draw(st.integers(1, 2**31 - 1))}}}'
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1", "cp1252"]))
        return text.encode(codec)
    else:  # big
        size = draw(st.sampled_from([MAX_BODY - 20, MAX_BODY, MAX_BODY + 1, 65_536]))
        text = '{"leadId": 1' + " " * max(0, size - 13) + "}"
    return text.encode("utf-8", "surrogatepass")


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "application/json; charset=utf-16", "application/xml"]

headers = st.fixed_dictionaries(
    {"content-type": st.sampled_from(CONTENT_TYPES)},
    # Printable ASCII only: the test's client (h11) refuses anything else in a header, and a
    # field value cannot start or end with whitespace (RFC 9110).
    optional={"x-extra": st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=100),
              "content-encoding": st.sampled_from(["gzip", "identity", "br"]),
              "accept": st.sampled_from(["*/*", "text/html", "application/xml"])},
)
# Percent-encoded lone surrogates and junk in the query string (the function key may ride there too).
queries = st.lists(st.sampled_from(["x=%ED%A0%80", "%ED%B0%80=1", "leadId=1", "x=%00", "x=%FF%FE", "a"]),
                   max_size=2)


_VALID = re.compile(rb"[ \t\r\n]*\{[ \t\r\n]*\"leadId\"[ \t\r\n]*:[ \t\r\n]*([1-9][0-9]{0,9})[ \t\r\n]*\}[ \t\r\n]*")


def valid_body(raw: bytes) -> bool:
    """The contract, said independently of the parser: `{"leadId": N}` with JSON whitespace, 1 <= N < 2**31."""
    m = _VALID.fullmatch(raw)
    return m is not None and int(m.group(1)) < 2**31 and len(raw) <= MAX_BODY


@dataclass
class FuzzResult:
    examples: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    accepted: int = 0  # answered as a valid body: 404 here (no such person) or 2xx
    mismatches: int = 0  # accepted though invalid, refused though valid, or a 4xx without a JSON reason
    server_errors: list[str] = field(default_factory=list)  # "status body", the first 20
    wrong: list[str] = field(default_factory=list)  # the first 20 mismatches

    @property
    def server_error_count(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def fuzz_webhook(app_url: str, function_key: str, *, examples: int, seed: int = 0) -> FuzzResult:
    """Send `examples` hypothesis-generated requests to `<app_url>/api/sync-person` and count the answers.

    Expects an app whose Marketo has no people, so a valid body is answered 404. Never
    raises for a bad answer: a 5xx, or an answer that disagrees with `valid_body`, is
    recorded with the body that caused it, so one run counts them all.
    """
    result = FuzzResult()
    client = httpx.Client(timeout=60)

    @hypothesis.seed(seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies(), extra=headers, query=queries, key_in_query=st.booleans())
    def one(body: bytes, extra: dict[str, str], query: list[str], key_in_query: bool) -> None:
        params = [*query, f"code={function_key}"] if key_in_query else query
        url = f"{app_url}/api/sync-person" + ("?" + "&".join(params) if params else "")
        sent = {**extra, **({} if key_in_query else {"x-functions-key": function_key})}
        response = client.post(url, content=body, headers=sent)
        result.examples += 1
        result.statuses[response.status_code] += 1
        seen = f"{response.status_code} {body[:200]!r}"
        if response.status_code >= 500:
            if len(result.server_errors) < 20:
                result.server_errors.append(seen)
            return
        accepted = response.status_code < 400 or response.status_code == 404
        result.accepted += accepted
        try:
            reason = response.json().get("error") if not accepted else "accepted"
        except ValueError:
            reason = None
        if not reason or accepted != valid_body(body):
            result.mismatches += 1
            if len(result.wrong) < 20:
                result.wrong.append(seen + ("" if reason else " (no JSON reason)"))

    try:
        one()
    finally:
        client.close()
    return result


def run_phase(*, examples: int, seed: int, log: Callable[[str], None]) -> tuple[FuzzResult, float, int]:
    """The chaos phase: fuzz a devhost app (Azurite and both emulators, Marketo empty) with
    `examples` requests. Returns the result, its seconds and the Dynamics leads created."""
    from devhost.harness import running
    from devhost.stack import StackConfig

    never = "0 0 0 1 1 *"
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": never, "DATAVERSE_POLL_SCHEDULE": never})
    with running(config, first_sync=False) as h:
        log(f"webhook fuzz: {examples} requests to {h.stack.app_url}/api/sync-person")
        started = time.monotonic()
        result = fuzz_webhook(h.stack.app_url, h.stack.config.function_key, examples=examples, seed=seed)
        seconds = time.monotonic() - started
        leads = len(h.dataverse.find("leads"))
    statuses = dict(sorted(result.statuses.items()))
    log(f"webhook fuzz: {result.examples} requests in {seconds:.0f} s, statuses {statuses}")
    return result, seconds, leads


def figures(result: FuzzResult, seconds: float, leads: int) -> dict[str, int | float]:
    """The phase's numbers as flat dotted keys (chaos/results.json)."""
    out: dict[str, int | float] = {"fuzz.examples": result.examples, "fuzz.server_errors": result.server_error_count,
                                   "fuzz.mismatches": result.mismatches, "fuzz.accepted": result.accepted,
                                   "fuzz.leads_created": leads, "fuzz.seconds": round(seconds, 1)}
    out.update({f"fuzz.status.{status}": n for status, n in sorted(result.statuses.items())})
    return out
