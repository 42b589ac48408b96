"""Lookup and currency columns against Dataverse: the batched reads around `rules.fieldtypes`.

Dynamics -> Marketo: `dereferenced` reads the related rows of a batch's records, one query
per related table, and puts each row's key (an account's name, a user's email) under the
lookup's logical name, and the record's currency ISO code under `transactioncurrencyid`, where
`FieldMap.from_dynamics` reads them. Marketo -> Dynamics: `Binder` resolves the keys a batch
may write, one query per related table, and turns `{"parentaccountid": "Acme"}` into
`{"parentaccountid@odata.bind": "/accounts(<id>)"}`; a key that names no row, or several,
fails that record's field with the reason (never a silent blank).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.errors import Problem
from shared.rules import fieldtypes as ft
from shared.rules.fieldmap import CURRENCY_COLUMN, FieldSpec, Value
from shared.rules.fieldtypes import CurrencyMismatch, Lookup
from shared.rules.typevalidation import TypeRule
from shared.rules.validation import unencodable
from shared.runtime import Services

CURRENCIES = Lookup(target="transactioncurrencies", key="isocurrencycode", navigation=CURRENCY_COLUMN,
                    id_column="transactioncurrencyid")


def _lookups(svc: Services, entity: str) -> list[tuple[FieldSpec, str, Lookup]]:
    out = [(s, c, s.lookup) for s in svc.fields.for_entity(entity)
           if s.lookup is not None and (c := s.column(entity)) is not None]
    if any(s.type == "money" for s in svc.fields.for_entity(entity)):
        out.append((FieldSpec("", {entity: CURRENCY_COLUMN}, type="lookup", lookup=CURRENCIES),
                    CURRENCY_COLUMN, CURRENCIES))
    return out


def dereferenced(svc: Services, entity: str, records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `records` with each lookup's key (None: no related row or no key) under its column."""
    lookups = _lookups(svc, entity)
    if not lookups:  # most maps: nothing to read, no copies
        return [r if isinstance(r, dict) else dict(r) for r in records]
    rows = [dict(r) for r in records]
    wanted: dict[tuple[str, str, str], set[str]] = {}  # (table, key column, id column) -> ids: one read each
    for _, column, lookup in lookups:
        read = f"_{column}_value"
        wanted.setdefault((lookup.target, lookup.key, lookup.id_column), set()).update(
            str(r[read]).lower() for r in rows if r.get(read))
    keys: dict[tuple[str, str], Any] = {}  # (table, id) -> key
    for (target, key, id_col), ids in wanted.items():
        if ids:
            for related in svc.dataverse.get_by_ids(target, sorted(ids), [key], key_column=id_col):
                keys[(target, str(related[id_col]).lower())] = related.get(key)
    for _, column, lookup in lookups:
        read = f"_{column}_value"
        for r in rows:
            r[column] = keys.get((lookup.target, str(r[read]).lower())) if r.get(read) else None
    return rows


class Binder:
    """Resolves, once per batch, the lookup keys (and the map's currencies) that may be written."""

    def __init__(self, svc: Services, entity: str, values: Iterable[Mapping[str, Value]]) -> None:
        self.entity = entity
        self.lookups = _lookups(svc, entity)
        columns = svc.rules(entity).columns if self.lookups else {}
        self.customer = {c for _, c, _ in self.lookups if c in columns and columns[c].attribute_type == "Customer"}
        self.currencies = {s.marketo: str(s.currency) for s in svc.fields.for_entity(entity) if s.type == "money"}
        self.money = [(s, c) for s in svc.fields.for_entity(entity) if s.type == "money" and (c := s.column(entity))]
        self.ids: dict[tuple[str, str], dict[str, list[str]]] = {}
        rows = list(values) if self.lookups else []
        wanted: dict[tuple[str, str], tuple[Lookup, list[str]]] = {}  # one read per table and key column
        for spec, _, lookup in self.lookups:
            keys = wanted.setdefault((lookup.target, lookup.key), (lookup, []))[1]
            keys += list(self.currencies.values()) if lookup is CURRENCIES else \
                [str(v) for r in rows if isinstance(v := r.get(spec.marketo), str)]
        for where, (lookup, keys) in wanted.items():
            self.ids[where] = _resolve(svc, lookup, keys)

    def bind(self, body: Mapping[str, Any], existing: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[Problem]]:
        """`body` with lookups written as `@odata.bind`, and the problems of those that cannot be.

        `existing`: the record being updated (dereferenced), None on create.
        """
        out = dict(body)
        problems: list[Problem] = []
        for spec, column, lookup in self.lookups:
            if lookup is CURRENCIES or column not in out:
                continue
            value = out.pop(column)
            if value is None:
                out[ft.bind_key(lookup, column, customer=column in self.customer)] = None
                continue
            problem = self._set(out, spec.marketo, column, lookup, str(value))
            problems += [problem] if problem else []
        problems += self._currency(out, body, existing)
        return out, problems

    def _set(self, out: dict[str, Any], name: str, column: str, lookup: Lookup, key: str) -> Problem | None:
        found = self.ids.get((lookup.target, lookup.key), {}).get(key.lower(), [])
        where = f"{name} ({self.entity}.{column})" if name else f"{self.entity}.{column}"
        if len(found) == 1:
            out[ft.bind_key(lookup, column, customer=column in self.customer)] = ft.bind_value(lookup, found[0])
            return None
        if not found:
            return Problem(column, TypeRule.LOOKUP, f"{where}: no {lookup.target} has {lookup.key} {key!r}")
        return Problem(column, TypeRule.LOOKUP, f"{where}: {len(found)} {lookup.target} have {lookup.key} {key!r}; "
                                                f"cannot tell which is meant")

    def _currency(self, out: dict[str, Any], body: Mapping[str, Any],
                  existing: Mapping[str, Any] | None) -> list[Problem]:
        """An amount is written only into a record in the map's currency; a new record gets it."""
        money = [(spec, column) for spec, column in self.money if body.get(column) is not None]
        if not money:
            return []
        current = (existing or {}).get(CURRENCY_COLUMN)
        problems = []
        for spec, column in money:
            want = self.currencies[spec.marketo]
            if current and str(current).upper() != want:
                out.pop(column, None)
                problems.append(Problem(column, TypeRule.CURRENCY,
                                        f"{spec.marketo} ({self.entity}.{column}): the record's currency is {current}, "
                                        f"Marketo's amounts are {want}; not converted"))
            elif not current and CURRENCY_COLUMN + "@odata.bind" not in out:
                problem = self._set(out, "", CURRENCY_COLUMN, CURRENCIES, want)
                problems += [problem] if problem else []
        return problems


def _resolve(svc: Services, lookup: Lookup, keys: Sequence[str]) -> dict[str, list[str]]:
    """key (lower case) -> ids of the rows whose key column has that value (Dataverse ignores case)."""
    unique = list(dict.fromkeys(k for k in keys if k.strip()))
    found: dict[str, list[str]] = {}
    if not unique:
        return found
    for row in svc.dataverse.find_by(lookup.target, lookup.key, unique, [lookup.id_column, lookup.key]):
        found.setdefault(str(row.get(lookup.key) or "").lower(), []).append(str(row[lookup.id_column]).lower())
    return found


def unsendable_to_marketo(values: Mapping[str, Any]) -> list[Problem]:
    """Values that cannot go to Marketo: unencodable text, or an amount in another currency."""
    problems = unencodable(values)
    for name, value in values.items():
        if isinstance(value, CurrencyMismatch):
            problems.append(Problem(name, TypeRule.CURRENCY, f"{name}: the Dynamics record's amount is in "
                                    f"{value.currency}, not the map's currency; not converted"))
    return problems
