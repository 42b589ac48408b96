"""Confirm a match by email on the address itself, never on what a lookup collation finds.

Marketo and Dataverse find people by email through case-insensitive collations, and a
Dataverse collation is often accent-, width- and compatibility-insensitive as well:
`fstraße@x` finds `fstrasse@x`, the Kelvin sign finds `k`, the ligature `ﬁ` finds `fi`.
Those are different mailboxes, so a hit counts as the same person only when the two
addresses are equal ignoring ASCII case: the one equivalence both services and every mail
system agree on. Any other hit is a near miss, reported and never linked. (Non-ASCII
letters that differ only in case are therefore near misses too: rare, and a person
decides them.) `loose_key` tells which wanted address a near-miss hit was found for; it
is never a reason to link.
"""

from __future__ import annotations

import unicodedata

from shared.errors import ValidationRule

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

NEAR_MISS = ValidationRule.NEAR_MISS  # the Problem rule of a near-miss report


def exact_key(address: str) -> str:
    """The address as both services compare it: ASCII letters lowered, nothing else changed."""
    return address.translate(_ASCII_LOWER)


def same_address(a: object, b: object) -> bool:
    """Both are text and the same address (ASCII case aside)."""
    return isinstance(a, str) and isinstance(b, str) and exact_key(a.strip()) == exact_key(b.strip())


def loose_key(address: str) -> str:
    """The broadest equivalence a lookup collation may apply: case, compatibility forms
    (ligatures, the Kelvin sign, fullwidth), ß/ss and accents all folded away."""
    if address.isascii():
        return address.lower()
    folded = unicodedata.normalize("NFKD", address.casefold())
    return "".join(c for c in folded if not unicodedata.combining(c)).casefold()


def near_miss_message(where: str) -> str:
    """Why a near miss is not linked; names the record, never either address."""
    return (f"{where} has an email the lookup treats as this one, but the addresses differ (not just in "
            "ASCII case: e.g. ß/ss, accents, ligatures, look-alike letters); not linked, nothing overwritten: "
            "correct the address on one side if they are the same person")
