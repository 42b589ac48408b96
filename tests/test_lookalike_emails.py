"""Look-alike emails: what counts as the same address, and emulators whose lookups find look-alikes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devhost.emulators.collation import fold
from devhost.emulators.dataverse import DataverseAdmin, DataverseEmulator
from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.rules.emails import exact_key, loose_key, same_address
from tests.marketo_fixtures import MarketoEnv

# (one address, its look-alike): different mailboxes a collation may treat as one
LOOK_ALIKES = [("fstrasse@x.com", "fstraße@x.com"), ("kelvin@x.com", "\u212aelvin@x.com"),
               ("file@x.com", "\ufb01le@x.com"), ("rene@x.com", "rené@x.com"), ("ann@x.com", "ａｎｎ@x.com")]


@pytest.mark.parametrize(("a", "b"), LOOK_ALIKES)
def test_a_look_alike_is_not_the_same_address_but_is_found_by_a_loose_lookup(a: str, b: str) -> None:
    assert not same_address(a, b) and not same_address(b, a)
    assert loose_key(a) == loose_key(b)
    assert fold(a) == fold(b)  # the emulators find one for the other


@pytest.mark.parametrize(("a", "b"), [("Ann@X.com", "ann@x.com"), (" ann@x.com", "ANN@X.COM "),
                                      ("fstraße@x.com", "FSTRAßE@X.COM")])
def test_ascii_case_and_surrounding_space_do_not_make_another_address(a: str, b: str) -> None:
    assert same_address(a, b)


def test_only_text_is_an_address() -> None:
    assert not same_address(None, None) and not same_address("a@x.com", None)


@given(st.text())
def test_exact_key_changes_only_ascii_capitals(text: str) -> None:
    key = exact_key(text)
    assert len(key) == len(text)
    assert all(k == t or ("A" <= t <= "Z" and k == t.lower()) for k, t in zip(key, text, strict=True))
    assert loose_key(text) == loose_key(key)  # a loose lookup finds at least every exact match


def test_the_dataverse_emulator_finds_look_alikes_as_a_collation_does(
        dataverse: tuple[DataverseEmulator, DataverseAdmin], dataverse_client: DataverseClient) -> None:
    admin = dataverse[1]
    admin.bulk("leads", [{"lastname": f"L{i}", "emailaddress1": a} for i, (a, _) in enumerate(LOOK_ALIKES)])
    for a, b in LOOK_ALIKES:
        found = dataverse_client.find_by("leads", "emailaddress1", [b], ["emailaddress1"])
        assert [r["emailaddress1"] for r in found] == [a], b


def test_the_marketo_emulator_finds_look_alikes_by_email(marketo: MarketoEnv,
                                                         marketo_client: Callable[..., MarketoClient]) -> None:
    ids = {a: marketo.admin.create_lead(email=a, lastName="L") for a, _ in LOOK_ALIKES}
    client = marketo_client()
    for a, b in LOOK_ALIKES:
        assert [int(p["id"]) for p in client.find_leads("email", [b], ["id", "email"])] == [ids[a]], b
