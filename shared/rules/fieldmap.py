"""Which fields sync and how their values convert: the field map.

The map is configuration (LEADSYNC_FIELD_MAP: a path to a JSON file, or the JSON itself;
default `fieldmap_default.json`). Each entry names a Marketo REST field and the Dataverse
column it maps to on `lead` and/or `contact`. The sync compares and stores values in a
*canonical* form keyed by the Marketo name, so merge rules never see wire formats:

    string / phone   the text exactly as written (surrounding spaces kept); "" and None
                     are both None (blank)
    email            stripped text (compared case-insensitively via `comparable`)
    choice           the Marketo label; Dataverse holds the option value (int)
    boolean          True / False / None
    integer          int / None
    date, datetime, decimal, money, multichoice, lookup: see `shared.rules.fieldtypes`

A field may carry a per-field merge `rule` (a `Rule`; `merge` applies it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.errors import ConfigError
from shared.rules import fieldcompat
from shared.rules import fieldtypes as ft
from shared.rules.fieldcompat import Column, MarketoField, Mismatch
from shared.rules.fieldtypes import CurrencyMismatch, Lookup

ENTITIES = ("lead", "contact")
TYPES = ("string", "email", "phone", "choice", "boolean", "integer",
         "date", "datetime", "decimal", "money", "multichoice", "lookup")
RICH_TYPES = frozenset({"date", "datetime", "decimal", "money", "multichoice", "lookup"})
CURRENCY_COLUMN = "transactioncurrencyid"  # the record's currency; read as `_transactioncurrencyid_value`


class Rule(StrEnum):
    """A field's merge rule, spelled in the field map as its value."""

    DEFAULT = "default"
    MARKETO_WINS = "marketo-wins"
    DYNAMICS_WINS = "dynamics-wins"
    PREFER_NON_BLANK = "prefer-non-blank"
    MARKETO_TO_DYNAMICS_ONLY = "marketo-to-dynamics-only"
    DYNAMICS_TO_MARKETO_ONLY = "dynamics-to-marketo-only"


RULES = tuple(Rule)
DEFAULT_PATH = Path(__file__).with_name("fieldmap_default.json")

Value = str | int | float | bool | None


@dataclass(frozen=True)
class FieldSpec:
    marketo: str
    columns: Mapping[str, str]  # entity -> Dataverse logical name
    type: str = "string"
    rule: Rule = Rule.DEFAULT
    choices: Mapping[str, int] = field(default_factory=dict)
    currency: str | None = None  # money: the ISO code Marketo's amounts are in
    lookup: Lookup | None = None

    def column(self, entity: str) -> str | None:
        return self.columns.get(entity)

    def read_column(self, entity: str) -> str | None:
        """The name a query selects: a lookup is read as `_<column>_value`."""
        column = self.columns.get(entity)
        return f"_{column}_value" if column and self.type == "lookup" else column

    # -- conversions -------------------------------------------------------------------
    def canonical(self, raw: Any) -> Value:
        """A value from either side (after `from_dynamics` for choices) in canonical form."""
        if raw is None:
            return None
        if isinstance(raw, CurrencyMismatch):
            return raw  # type: ignore[return-value]  # reported (unsendable_to_marketo), never written
        if self.type in RICH_TYPES:
            return self._rich(raw)
        if self.type == "boolean":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            return None if text == "" else raw  # an odd value survives so validation can name it
        if self.type == "integer":
            if isinstance(raw, bool):
                return int(raw)
            if isinstance(raw, int):
                return raw
            text = str(raw).strip()
            if text == "":
                return None
            try:
                return int(text)
            except ValueError:
                return text
        # Only an address is trimmed (it is matched on); other text travels exactly as written,
        # so a create and an update of the same value write the same thing.
        text = str(raw).strip() if self.type == "email" else str(raw)
        return text or None

    def _rich(self, raw: Any) -> Value:
        value: Any
        if self.type == "date":
            value = ft.to_date(raw)
        elif self.type == "datetime":
            value = ft.to_datetime(raw)
        elif self.type in ("decimal", "money"):
            value = ft.to_number(raw)
        elif self.type == "multichoice":
            value = ft.multichoice_canonical(raw, self.choices)
        else:  # a lookup key is matched (case-insensitively, as Dataverse compares text), so trimmed
            value = str(raw).strip() or None
        return value  # type: ignore[no-any-return]

    def from_dynamics(self, raw: Any) -> Value:
        if self.type == "choice" and raw is not None:
            for label, number in self.choices.items():
                if number == raw:
                    return label
            return f"#{raw}"  # an option the map doesn't know: kept visible, never silently blank
        if self.type == "multichoice" and raw is not None:
            return ft.multichoice_from_dynamics(raw, self.choices)  # type: ignore[no-any-return]
        return self.canonical(raw)

    def to_dynamics(self, value: Value) -> Any:
        if self.type == "choice" and value is not None:
            if isinstance(value, str) and re.fullmatch(r"#-?\d+", value):
                return int(value[1:])
            lowered = {k.lower(): v for k, v in self.choices.items()}
            return lowered.get(str(value).lower(), value)  # unknown label: validation reports it
        if self.type == "multichoice" and value is not None:
            return ft.multichoice_to_dynamics(value, self.choices)
        return value

    def comparable(self, value: Value) -> Value:
        """The form two values are compared in: emails, choices and lookup keys ignore case."""
        if isinstance(value, str) and self.type in ("email", "choice", "multichoice", "lookup"):
            return value.lower()
        return value


@dataclass(frozen=True)
class FieldMap:
    fields: tuple[FieldSpec, ...]
    create_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_entity(self, entity: str) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.column(entity))

    def marketo_fields(self) -> list[str]:
        return [f.marketo for f in self.fields]

    def columns(self, entity: str) -> list[str]:
        """The columns a query selects for `entity` (lookups as `_x_value`, plus the record's
        currency when an amount is mapped)."""
        cols = [c for f in self.fields if (c := f.read_column(entity))]
        if any(f.type == "money" for f in self.for_entity(entity)):
            cols.append(f"_{CURRENCY_COLUMN}_value")
        return cols

    def spec(self, marketo_name: str) -> FieldSpec:
        for f in self.fields:
            if f.marketo == marketo_name:
                return f
        raise KeyError(marketo_name)

    @property
    def email(self) -> FieldSpec:
        for f in self.fields:
            if f.type == "email":
                return f
        raise ConfigError("LEADSYNC_FIELD_MAP", "no field of type 'email' (people are matched on email)")

    # -- whole-record conversions ------------------------------------------------------
    def from_marketo(self, record: Mapping[str, Any]) -> dict[str, Value]:
        return {f.marketo: f.canonical(record.get(f.marketo)) for f in self.fields}

    def from_dynamics(self, entity: str, record: Mapping[str, Any]) -> dict[str, Value]:
        """Canonical values of a Dataverse row. Lookups and the currency are read from the
        logical-name keys `shared.sync.lookups.dereferenced` fills with the related rows' keys."""
        out = {f.marketo: f.from_dynamics(record.get(c)) for f in self.fields if (c := f.column(entity))}
        currency = record.get(CURRENCY_COLUMN)
        for f in self.for_entity(entity):
            amount = out.get(f.marketo)
            if f.type == "money" and isinstance(amount, float) and currency and \
                    str(currency).upper() != str(f.currency).upper():
                out[f.marketo] = CurrencyMismatch(amount, str(currency))  # type: ignore[assignment]
        return out

    def to_marketo(self, values: Mapping[str, Value]) -> dict[str, Any]:
        return {name: value for name, value in values.items()}

    def to_dynamics(self, entity: str, values: Mapping[str, Value]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            spec = self.spec(name)
            column = spec.column(entity)
            if column:
                out[column] = spec.to_dynamics(value)
        return out


def parse(document: Mapping[str, Any], *, source: str = "LEADSYNC_FIELD_MAP") -> FieldMap:
    """Check a field-map document and build the map; every problem names the entry."""

    def bad(problem: str) -> ConfigError:
        return ConfigError(source, problem)

    if document.get("version") != 1:
        raise bad("'version' must be 1")
    unknown_top = set(document) - {"version", "fields", "create_defaults", "$comment"}
    if unknown_top:
        raise bad(f"unknown keys {sorted(unknown_top)}")
    entries = document.get("fields")
    if not isinstance(entries, list) or not entries:
        raise bad("'fields' must be a non-empty list")
    specs: list[FieldSpec] = []
    seen_marketo: set[str] = set()
    seen_columns: set[tuple[str, str]] = set()
    for i, entry in enumerate(entries):
        where = f"fields[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"{where} must be an object")
        unknown = set(entry) - {"marketo", "lead", "contact", "type", "rule", "choices", "currency", "lookup"}
        if unknown:
            raise bad(f"{where} has unknown keys {sorted(unknown)}")
        name = entry.get("marketo")
        if not isinstance(name, str) or not name:
            raise bad(f"{where}.marketo must be a Marketo REST field name")
        if name in seen_marketo:
            raise bad(f"{where}: Marketo field {name!r} is mapped twice")
        seen_marketo.add(name)
        columns = {e: entry[e] for e in ENTITIES if entry.get(e)}
        if not columns:
            raise bad(f"{where} ({name}) maps to neither 'lead' nor 'contact'")
        for entity, column in columns.items():
            if not isinstance(column, str):
                raise bad(f"{where}.{entity} must be a column name")
            if (entity, column) in seen_columns:
                raise bad(f"{where}: {entity} column {column!r} is mapped twice")
            seen_columns.add((entity, column))
        kind = entry.get("type", "string")
        if kind not in TYPES:
            raise bad(f"{where}.type {kind!r} is not one of {list(TYPES)}")
        rule = entry.get("rule", "default")
        if rule not in RULES:
            raise bad(f"{where}.rule {rule!r} is not one of {list(RULES)}")
        choices = entry.get("choices", {})
        if kind in ("choice", "multichoice") and (not isinstance(choices, dict) or not choices or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in choices.values())):
            raise bad(f"{where}.choices must map labels to option values (integers)")
        if kind == "multichoice" and any(ft.MARKETO_SEPARATOR in label for label in choices):
            raise bad(f"{where}.choices: a label cannot contain {ft.MARKETO_SEPARATOR!r} (it separates values)")
        currency = entry.get("currency")
        if (kind == "money") != (currency is not None) or (
                currency is not None and not (isinstance(currency, str) and re.fullmatch(r"[A-Za-z]{3}", currency))):
            raise bad(f"{where}.currency: a money field names the ISO currency code of Marketo's amounts "
                      "(e.g. \"USD\"); other types take none")
        specs.append(FieldSpec(marketo=name, columns=columns, type=kind, rule=Rule(rule), choices=dict(choices),
                               currency=currency.upper() if currency else None,
                               lookup=_lookup(entry.get("lookup"), kind, columns, bad, where)))
    defaults = document.get("create_defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - set(ENTITIES):
        raise bad("'create_defaults' must map 'lead'/'contact' to column values")
    fmap = FieldMap(fields=tuple(specs), create_defaults=defaults)
    fmap.email  # noqa: B018 - raises when the map has no email field
    return fmap


def _lookup(raw: Any, kind: str, columns: Mapping[str, str], bad: Any, where: str) -> Lookup | None:
    if kind != "lookup":
        if raw is not None:
            raise bad(f"{where}.lookup is only for type 'lookup'")
        return None
    if not isinstance(raw, dict) or set(raw) - {"target", "key", "navigation"} or not all(
            isinstance(raw.get(k), str) and raw.get(k) for k in ("target", "key")):
        raise bad(f"{where}.lookup must be {{\"target\": <entity set>, \"key\": <column>}} "
                  "(optional \"navigation\")")
    if len(set(columns.values())) > 1 and "navigation" in raw:
        raise bad(f"{where}.lookup.navigation needs one column name for lead and contact")
    return Lookup(target=raw["target"], key=raw["key"], navigation=raw.get("navigation"),
                  id_column=ft.id_column(raw["target"]))


def load(setting: str | None) -> FieldMap:
    """The field map from a setting value: None (default), a JSON text, or a file path."""
    if setting is None:
        text, source = DEFAULT_PATH.read_text(), str(DEFAULT_PATH)
    elif setting.lstrip().startswith("{"):
        text, source = setting, "LEADSYNC_FIELD_MAP"
    else:
        path = Path(setting)
        if not path.is_file():
            raise ConfigError("LEADSYNC_FIELD_MAP", f"file {setting!r} does not exist")
        text, source = path.read_text(), f"LEADSYNC_FIELD_MAP ({setting})"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, f"is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(source, "must be a JSON object")
    return parse(document, source=source)


def check_against(fmap: FieldMap, marketo_fields: Mapping[str, MarketoField] | set[str],
                  dynamics_columns: Mapping[str, Mapping[str, Column] | set[str]]) -> None:
    """Reject a map naming fields the services don't have (run at start-up, once), or, given
    their descriptions (name -> facts), pairing types that cannot carry the map's values."""
    mismatches: list[Mismatch] = []
    for spec in fmap.fields:
        if spec.marketo not in marketo_fields:
            raise ConfigError("LEADSYNC_FIELD_MAP", f"Marketo has no field {spec.marketo!r}")
        info = marketo_fields.get(spec.marketo) if isinstance(marketo_fields, Mapping) else None
        if info is not None:
            mismatches += fieldcompat.marketo_mismatch(spec, info)
        for entity, column in spec.columns.items():
            columns = dynamics_columns.get(entity, set())
            if column not in columns:
                raise ConfigError("LEADSYNC_FIELD_MAP", f"Dataverse {entity} has no column {column!r}")
            if isinstance(columns, Mapping):
                target = spec.lookup.target if spec.lookup else None
                mismatches += fieldcompat.column_mismatch(spec, info, entity, column, columns[column], target)
    problems = [m for m in mismatches if not m.warning]
    if problems:
        raise ConfigError("LEADSYNC_FIELD_MAP", "; ".join(f"{m.problem} ({m.fix})" for m in problems))
