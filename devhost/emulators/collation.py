"""How the emulated services compare text in lookups: as a case- and accent-insensitive collation.

Dataverse's default SQL collation ignores case and, in many organisations, accents, width
and compatibility forms; Marketo's lead lookups ignore case. Folding case (`casefold`, so
ß ~ ss), compatibility forms (NFKD: the Kelvin sign ~ k, ﬁ ~ fi) and combining marks makes
a lookup here at least as forgiving as the services, so code that trusts a lookup's hit to
be the same text fails in tests as it would live.
"""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """The key two strings are compared on: equal keys are "the same" to the service."""
    if text.isascii():
        return text.lower()  # the common case, and casefold would give the same
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
