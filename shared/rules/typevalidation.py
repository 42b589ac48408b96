"""Dynamics' rules for dates, numbers, money, multi-select choices and lookups (pure).

`validation.validate` hands each value of these column types here. What Dataverse refuses
(the service's metadata: DateTimeAttributeMetadata, Decimal/Double/MoneyAttributeMetadata
`Precision`/`MinValue`/`MaxValue`, MultiSelectPicklistAttributeMetadata options, lookup
`Targets`) fails with the field and the rule. One rule is ours: a number with more decimal
places than the column keeps would be rounded by Dynamics, and the rounded value would then
flow back over the marketer's value, so it fails instead of being silently changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from shared.errors import Problem, ValidationRule
from shared.rules import fieldtypes as ft

DATE_TYPES = frozenset({"DateTime"})
NUMBER_TYPES = frozenset({"Decimal", "Double", "Money"})
MULTI_TYPES = frozenset({"MultiSelectPicklist"})
LOOKUP_TYPES = frozenset({"Lookup", "Owner", "Customer"})
TYPED = DATE_TYPES | NUMBER_TYPES | MULTI_TYPES
MIN_DATE = date(1753, 1, 1)  # the earliest date Dataverse stores (SQL Server `datetime`)
_BIND = re.compile(r"^/?(\w+)\(([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\)$")


class TypeRule(StrEnum):
    """Problem rules of the typed columns (values of `Problem.rule`, next to `ValidationRule`)."""

    RANGE = "range"
    PRECISION = "precision"
    LOOKUP = "lookup"  # a Marketo value that names no related Dynamics record
    CURRENCY = "currency"  # an amount in a currency other than the map's


@dataclass(frozen=True)
class Limits:
    """What the metadata says about a typed column (None: not known, not checked)."""

    precision: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    date_only: bool = False  # DateTimeBehavior DateOnly or Format DateOnly
    targets: tuple[str, ...] = ()  # lookups: the tables it may point at


def check(name: str, column: str, kind: str, limits: Limits, options: frozenset[int] | None,
          value: Any) -> list[Problem]:
    """Problems of one non-blank `value` for a column of type `kind` (named `name` in messages)."""
    if kind in DATE_TYPES:
        return _date(name, column, limits, value)
    if kind in NUMBER_TYPES:
        return _number(name, column, limits, value)
    if kind in MULTI_TYPES:
        return _multi(name, column, options, value)
    return []


def _date(name: str, column: str, limits: Limits, value: Any) -> list[Problem]:
    text = str(value) if isinstance(value, str) else ""
    if limits.date_only:
        try:  # to_date keeps an impossible day (2024-02-30) as it came, so it is checked here
            when = date.fromisoformat(text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else None
        except ValueError:
            when = None
        if when is None:
            return [Problem(column, ValidationRule.FORMAT, f"{name} must be a date (YYYY-MM-DD), got {_short(value)}")]
    else:
        parsed = ft.parse_datetime(text) if text else None
        if parsed is None:
            return [Problem(column, ValidationRule.FORMAT,
                            f"{name} must be a date and time (ISO 8601), got {_short(value)}")]
        when = parsed.date()
    if when < MIN_DATE:
        return [Problem(column, TypeRule.RANGE, f"{name} is {when.isoformat()}: Dynamics stores dates from "
                                                 f"{MIN_DATE.isoformat()} on")]
    return []


def _number(name: str, column: str, limits: Limits, value: Any) -> list[Problem]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [Problem(column, ValidationRule.TYPE, f"{name} must be a number, got {_short(value)}")]
    number = float(value)
    if (limits.min_value is not None and number < limits.min_value) or (
            limits.max_value is not None and number > limits.max_value):
        return [Problem(column, TypeRule.RANGE, f"{name} is {value}: Dynamics allows {limits.min_value:g} to "
                                                 f"{limits.max_value:g}")]
    places = ft.decimals(number)
    if limits.precision is not None and places > limits.precision:
        return [Problem(column, TypeRule.PRECISION, f"{name} has {places} decimal places, Dynamics keeps "
                                                     f"{limits.precision}: it would be rounded, so it is not sent")]
    return []


def _multi(name: str, column: str, options: frozenset[int] | None, value: Any) -> list[Problem]:
    if not isinstance(value, str):
        return [Problem(column, ValidationRule.TYPE, f"{name} must be option values separated by commas")]
    bad = [p for p in value.split(ft.DATAVERSE_SEPARATOR)
           if not re.fullmatch(r"-?\d+", p.strip()) or (options is not None and int(p) not in options)]
    if bad:
        allowed = sorted(options) if options is not None else "option values"
        return [Problem(column, ValidationRule.OPTION, f"{name} has no option {_short(', '.join(bad))} "
                                                        f"(allowed: {allowed})")]
    return []


def check_bind(name: str, column: str, targets: tuple[str, ...], value: Any) -> list[Problem]:
    """A `<navigation>@odata.bind` value: `/<set>(<id>)` of a table the lookup may point at."""
    if value is None:
        return []
    m = _BIND.match(str(value))
    target_sets = {ft.id_column(f"{t}s").removesuffix("id") for t in targets}
    if not m or (targets and ft.id_column(m.group(1)).removesuffix("id") not in target_sets):
        return [Problem(column, TypeRule.LOOKUP, f"{name} must point at a record of {list(targets) or 'a table'}, "
                                                  f"got {_short(value)}")]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
