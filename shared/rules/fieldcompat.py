"""Whether a mapped pair of fields can carry the map's type: types, lengths, options, ranges
(pure; `fieldmap.check_against` at start-up and `leadsync check` both ask here).

The facts come from Marketo's describe (`dataType`, `length`) and Dataverse's attribute
metadata (AttributeType, MaxLength, Precision, MinValue/MaxValue, DateTimeBehavior/Format,
OptionSet, Targets). A `Mismatch` that is not a warning stops the sync from starting: a
value would be refused or changed on every write. A warning names a risk that validation
catches per record (e.g. a shorter Dynamics column: a longer value fails, never cut).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from shared.rules.fieldtypes import MARKETO_SEPARATOR

# Which service types can carry each field-map type without losing meaning.
MARKETO_TYPES: Mapping[str, frozenset[str]] = {
    "string": frozenset({"string", "text", "email", "phone", "url", "textarea"}),
    "email": frozenset({"email", "string"}),
    "phone": frozenset({"phone", "string"}),
    "choice": frozenset({"string"}),
    "boolean": frozenset({"boolean"}),
    "integer": frozenset({"integer"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"datetime"}),
    "decimal": frozenset({"float"}),
    "money": frozenset({"currency"}),
    "multichoice": frozenset({"string", "text"}),
    "lookup": frozenset({"string", "email", "text"}),
}
DATAVERSE_TYPES: Mapping[str, frozenset[str]] = {
    "string": frozenset({"String", "Memo"}),
    "email": frozenset({"String", "Memo"}),
    "phone": frozenset({"String", "Memo"}),
    "choice": frozenset({"Picklist", "State", "Status"}),
    "boolean": frozenset({"Boolean"}),
    "integer": frozenset({"Integer", "BigInt"}),
    "date": frozenset({"DateTime"}),
    "datetime": frozenset({"DateTime"}),
    "decimal": frozenset({"Decimal", "Double"}),
    "money": frozenset({"Money"}),
    "multichoice": frozenset({"MultiSelectPicklist"}),
    "lookup": frozenset({"Lookup", "Owner", "Customer"}),
}
TEXT_TYPES = frozenset({"string", "email", "phone"})


class MarketoField(Protocol):
    @property
    def data_type(self) -> str: ...
    @property
    def length(self) -> int | None: ...


class Column(Protocol):
    @property
    def attribute_type(self) -> str: ...
    @property
    def max_length(self) -> int | None: ...
    @property
    def options(self) -> tuple[int, ...] | None: ...
    @property
    def date_behavior(self) -> str | None: ...
    @property
    def date_only(self) -> bool: ...
    @property
    def targets(self) -> tuple[str, ...]: ...


class Spec(Protocol):
    @property
    def marketo(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def choices(self) -> Mapping[str, int]: ...


@dataclass(frozen=True)
class Mismatch:
    problem: str
    fix: str
    warning: bool = False


def marketo_mismatch(spec: Spec, info: MarketoField) -> list[Mismatch]:
    if info.data_type in MARKETO_TYPES[spec.type]:
        return []
    return [Mismatch(f"Marketo {spec.marketo} is {info.data_type}, the map says {spec.type}",
                     f"map {spec.marketo!r} with a type for {info.data_type} or map another field")]


def column_mismatch(spec: Spec, info: MarketoField | None, entity: str, column: str, attr: Column,
                    target: str | None = None) -> list[Mismatch]:
    """Problems of one mapped Dataverse column (`target`: a lookup's configured entity set)."""
    where = f"Dataverse {entity}.{column}"
    if attr.attribute_type not in DATAVERSE_TYPES[spec.type]:
        return [Mismatch(f"{where} is {attr.attribute_type}, the map says {spec.type}",
                         f"map {spec.marketo!r} to a column of a matching type")]
    out: list[Mismatch] = []
    if spec.type == "date" and (not attr.date_only or attr.date_behavior == "UserLocal"):
        out.append(Mismatch(f"{where} is a {attr.date_behavior or 'UserLocal'} date and time, the map says date: "
                            "the day would shift with each user's time zone",
                            f"use a Date Only column (behaviour DateOnly) or map {spec.marketo!r} as datetime"))
    if spec.type == "datetime" and attr.date_only:
        out.append(Mismatch(f"{where} holds a date only, the map says datetime: the time would be lost",
                            f"map {spec.marketo!r} as date or to a Date and Time column"))
    if spec.type == "datetime" and attr.date_behavior == "TimeZoneIndependent":
        out.append(Mismatch(f"{where} is Time Zone Independent: Marketo's instants are shown there in UTC",
                            "use behaviour User Local if users should see their own time", warning=True))
    if spec.type in ("choice", "multichoice") and attr.options is not None:
        unknown = sorted(label for label, value in spec.choices.items() if value not in attr.options)
        if unknown:
            out.append(Mismatch(f"{where} has no option for {unknown}",
                                f"add the options to {column} or fix their values in LEADSYNC_FIELD_MAP"))
    if spec.type == "lookup" and target is not None and attr.targets and \
            target.removesuffix("s") not in attr.targets and target.removesuffix("ies") + "y" not in attr.targets:
        out.append(Mismatch(f"{where} points at {list(attr.targets)}, the map looks up {target}",
                            f"set lookup.target of {spec.marketo!r} to one of {list(attr.targets)}"))
    if info is not None:
        out += _length(spec, info, where, attr)
    return out


def _length(spec: Spec, info: MarketoField, where: str, attr: Column) -> list[Mismatch]:
    if spec.type in TEXT_TYPES and info.length is not None and attr.max_length is not None \
            and attr.max_length < info.length:
        return [Mismatch(f"{where} holds {attr.max_length} characters, Marketo {spec.marketo} {info.length}: a longer "
                         "value fails validation and is not written",
                         f"raise {where.removeprefix('Dataverse ')} MaxLength if such values occur", warning=True)]
    if spec.type == "multichoice" and info.length is not None:
        longest = len(MARKETO_SEPARATOR.join(spec.choices))
        if longest > info.length:
            return [Mismatch(f"Marketo {spec.marketo} holds {info.length} characters, all its options take {longest}",
                             f"raise the length of {spec.marketo!r} in Marketo", warning=True)]
    return []
