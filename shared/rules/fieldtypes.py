"""Conversions of the richer field types: dates, datetimes, numbers, money, multi-select
choices and lookups (pure; `fieldmap.FieldSpec` delegates to these).

Canonical forms (what merge compares and links store, JSON-safe):

    date         "YYYY-MM-DD". Marketo date fields and Dataverse DateOnly columns both hold a
                 calendar day with no time zone; a TimeZoneIndependent value's time part
                 ("…T00:00:00Z") is dropped.
    datetime     "YYYY-MM-DDTHH:MM:SSZ", the instant in UTC to the second. Marketo accepts and
                 may send any ISO-8601 offset; Dataverse (UserLocal) stores UTC and answers `Z`.
                 A value without an offset is read as UTC.
    decimal      float (Marketo float fields are doubles; Dataverse Decimal/Double columns)
    money        float, an amount in the map's `currency` (Marketo currency fields carry no
                 currency of their own); a Dynamics record in another currency keeps its amount
                 out of the sync (`CurrencyMismatch`), never converted at an exchange rate.
    multichoice  the labels joined by ";" in the map's option order (Marketo's convention for
                 multi-select values); Dataverse holds the option values as "1,3" (text).
    lookup       the related record's key text (an account's name, a user's email); Dataverse
                 holds the row id, written as `<navigation>@odata.bind: "/<set>(<id>)"`.

An odd value (text that is not a number, an unreadable date) survives unchanged so
validation can name it; nothing is silently blanked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:T00:00:00(?:\.0+)?(?:Z|[+-]00:?00)?)?$")
UNKNOWN_OPTION = re.compile(r"^#(-?\d+)$")
MARKETO_SEPARATOR = ";"
DATAVERSE_SEPARATOR = ","


@dataclass(frozen=True)
class Lookup:
    """Where a lookup column points and which column of that table Marketo's value names."""

    target: str  # entity set, e.g. "accounts"
    key: str  # the column matched against the Marketo value, e.g. "name"
    navigation: str | None  # the navigation property bound on write; None: the column's own name
    id_column: str  # the target's primary key, e.g. "accountid"


def id_column(entity_set: str) -> str:
    """The primary key of an entity set: accounts -> accountid, transactioncurrencies -> transactioncurrencyid."""
    singular = entity_set[:-3] + "y" if entity_set.endswith("ies") else entity_set.removesuffix("s")
    return f"{singular}id"


@dataclass(frozen=True)
class CurrencyMismatch:
    """A Dynamics amount in a currency other than the map's: it is reported, never written."""

    amount: float
    currency: str

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


# -- dates -------------------------------------------------------------------------------
def to_date(raw: Any) -> Any:
    text = str(raw).strip()
    if text == "":
        return None
    m = _DATE.match(text)
    if not m:
        return raw
    try:
        return date.fromisoformat(m.group(1)).isoformat()
    except ValueError:
        return raw


def parse_datetime(text: str) -> datetime | None:
    """An ISO-8601 instant (offset or `Z`; none means UTC), or None when unreadable."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def to_datetime(raw: Any) -> Any:
    if isinstance(raw, datetime):
        when: datetime | None = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    else:
        text = str(raw).strip()
        if text == "":
            return None
        when = parse_datetime(text)
    if when is None:
        return raw
    try:
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        return raw


# -- numbers -----------------------------------------------------------------------------
def to_number(raw: Any) -> Any:
    """A finite float, or the raw value for validation to name."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        number = float(raw)
    else:
        text = str(raw).strip()
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return raw
    if not math.isfinite(number):
        return raw
    return number + 0.0  # -0.0 and 0.0 are one value


def decimals(value: float) -> int:
    """How many decimal places the shortest exact text of `value` has (12.5 -> 1, 1e-7 -> 7)."""
    try:
        exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    except InvalidOperation:
        return 0
    return max(0, -exponent) if isinstance(exponent, int) else 0


# -- multi-select choices ----------------------------------------------------------------
def labels_of(text: str) -> list[str]:
    return [part.strip() for part in text.split(MARKETO_SEPARATOR) if part.strip()]


def multichoice_canonical(raw: Any, choices: Mapping[str, int]) -> Any:
    """Labels in the map's option order, duplicates dropped, case as the map spells them."""
    text = str(raw)
    parts = labels_of(text)
    if not parts:
        return None
    by_lower = {label.lower(): label for label in choices}
    order = {label: i for i, label in enumerate(choices)}
    known: list[str] = []
    unknown: list[str] = []
    for part in parts:
        label = by_lower.get(part.lower())
        if label is not None:
            if label not in known:
                known.append(label)
        elif UNKNOWN_OPTION.match(part) and (number := int(part[1:])) in choices.values():
            label = next(k for k, v in choices.items() if v == number)
            if label not in known:
                known.append(label)
        elif part not in unknown:
            unknown.append(part)
    known.sort(key=order.__getitem__)
    return MARKETO_SEPARATOR.join(known + sorted(unknown))


def multichoice_from_dynamics(raw: Any, choices: Mapping[str, int]) -> Any:
    """"1,3" (Dataverse) -> "Web;Seminar"; an option the map doesn't know stays visible as "#7"."""
    if isinstance(raw, list):
        raw = DATAVERSE_SEPARATOR.join(str(v) for v in raw)
    text = str(raw).strip()
    if text == "":
        return None
    names = {number: label for label, number in choices.items()}
    labels = []
    for part in text.split(DATAVERSE_SEPARATOR):
        part = part.strip()
        try:
            number = int(part)
        except ValueError:
            labels.append(part)
            continue
        labels.append(names.get(number, f"#{number}"))
    return multichoice_canonical(MARKETO_SEPARATOR.join(labels), choices)


def multichoice_to_dynamics(value: Any, choices: Mapping[str, int]) -> str:
    """Labels -> "1,3" in option order; an unknown label is passed on as text for validation to name."""
    lowered = {k.lower(): v for k, v in choices.items()}
    out: list[str] = []
    for part in labels_of(str(value)):
        m = UNKNOWN_OPTION.match(part)
        number = int(m.group(1)) if m else lowered.get(part.lower())
        out.append(str(number) if number is not None else part)
    return DATAVERSE_SEPARATOR.join(out)


# -- lookups -----------------------------------------------------------------------------
def bind_value(lookup: Lookup, record_id: str) -> str:
    return f"/{lookup.target}({record_id})"


def bind_key(lookup: Lookup, column: str, *, customer: bool = False) -> str:
    """`parentaccountid@odata.bind`; a Customer column (account or contact) binds through the
    navigation property named after its target: `parentcustomerid_account`."""
    if lookup.navigation:
        return f"{lookup.navigation}@odata.bind"
    return f"{column}_{id_column(lookup.target).removesuffix('id')}@odata.bind" if customer else f"{column}@odata.bind"
