"""How `leadsync resync` reads the people an operator names, on the command line or in a file."""

from __future__ import annotations

import re

import pytest

from shared.ops.resync import Target, parse_lines, parse_target

GUID = "1A2DC5BA-3F53-44ED-B0CD-DDAC8AB29DEF"


@pytest.mark.parametrize(("text", "expected"), [
    ("1042", Target("1042", marketo_id=1042)),
    ("m1042", Target("m1042", marketo_id=1042)),
    (f" lead:{GUID} ", Target(f"lead:{GUID}", record=("lead", GUID.lower()))),
    (f"contact:{GUID.lower()}", Target(f"contact:{GUID.lower()}", record=("contact", GUID.lower()))),
    (" Ada@Example.com ", Target("Ada@Example.com", email="Ada@Example.com")),
])
def test_ids_records_and_emails_are_told_apart(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("banana", "'banana' is not a Marketo lead id, lead:<guid>, contact:<guid> or an email"),
    ("m0", "'m0' is not a Marketo lead id (ids start at 1)"),
    ("-5", "'-5' is not a Marketo lead id"),
    ("lead:not-a-guid", "'lead:not-a-guid' is not a Marketo lead id"),
    ("account:" + GUID, "is not a Marketo lead id"),
    ("ada@example", "'ada@example' is not an email address"),
    ("@example.com", "'@example.com' is not an email address"),
    ("ada lovelace@example.com", "is not an email address"),
    ("ada@example.com,bob@example.com", "is not an email address"),  # one a line, never a list in one
])
def test_anything_else_is_refused_naming_the_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_target(text)


def test_a_file_skips_blank_lines_and_comments_and_names_the_bad_line() -> None:
    lines = ["# people to resync", "", "m1042", f"lead:{GUID}   # the one from the ticket", "  ada@example.com"]
    assert [t.text for t in parse_lines(lines)] == ["m1042", f"lead:{GUID}", "ada@example.com"]
    assert parse_lines(["# nobody", "   "]) == []
    with pytest.raises(ValueError, match="^line 3: 'banana' is not"):
        parse_lines(["m1", "", "banana"])
