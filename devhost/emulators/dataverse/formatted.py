"""`Prefer: odata.include-annotations` on records: formatted values and lookup annotations.

Sources (learn.microsoft.com, Dataverse Web API "Query data: formatted values" and "Lookup
properties"): the preference takes `"*"` or a comma list of terms, wildcards allowed
(`OData.Community.Display.V1.FormattedValue`, `Microsoft.Dynamics.CRM.*`); each annotation is a
sibling key `<column>@<term>`. Formatted values exist for choices and Yes/No (the option label),
lookups (the primary name of the related row), money (currency symbol, thousands separators, the
column's precision) and dates (the user's locale, en-US here, and time zone, UTC here); lookups also
get `…lookuplogicalname` and `…associatednavigationproperty`. Numbers and strings get none here
(the emulator leaves whole-number formatting out; no LeadSync column needs it).
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from . import typed
from .metadata import OPTION_TYPES, EntityDef
from .principals import OWNER_SETS
from .store import SYSTEM_USER, Store

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_TABLE = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"
SYSTEM_USER_NAME = "LeadSync Emulator"  # the emulator's only user (an emulator choice)
LOOKUP_TYPES = {"Lookup", "Owner", "Customer"}
TYPED_FORMATS = {"Money", "Decimal", "Double", "MultiSelectPicklist"}


def requested(prefer: dict[str, str]) -> list[str]:
    """The annotation terms asked for in a parsed Prefer header ([] when none)."""
    raw = prefer.get("odata.include-annotations", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def wants(patterns: list[str], term: str) -> bool:
    """A term is included if some pattern matches it and no `-pattern` excludes it."""
    include = any(fnmatchcase(term, p) for p in patterns if not p.startswith("-"))
    return include and not any(fnmatchcase(term, p[1:]) for p in patterns if p.startswith("-"))


def _date(value: str) -> str:
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    hour = when.hour % 12 or 12
    return f"{when.month}/{when.day}/{when.year} {hour}:{when.minute:02d} {'AM' if when.hour < 12 else 'PM'}"


def _lookup(store: Store, entity: EntityDef, attr_binds: dict[str, str], value: str) -> tuple[str, str, str | None]:
    """(table logical name, navigation property, primary name or None) of the row a lookup points at."""
    # The owner lookup's one navigation property points at a user or a team.
    pairs = [("ownerid", s) for s in OWNER_SETS] if "ownerid" in attr_binds else list(attr_binds.items())
    for nav, set_name in pairs:
        row = store.rows.get(set_name, {}).get(value)
        if row is not None:
            return store.by_set[set_name].logical_name, nav, row.get("fullname") or row.get("name")
    nav, set_name = next(iter(attr_binds.items()))
    name = SYSTEM_USER_NAME if value == SYSTEM_USER else None
    return set_name.removesuffix("s"), nav, name


def annotate(store: Store, entity: EntityDef, out: dict[str, Any], patterns: list[str]) -> None:
    """Add the requested annotations next to each rendered column of `out` (in place)."""
    readable = entity.readable()
    formatted = wants(patterns, FORMATTED)
    # The whole row, for what a value is formatted with but may not be selected (money's currency).
    stored = store.rows.get(entity.entity_set, {}).get(str(out.get(entity.primary_id, "")).lower()) or out
    for column in [k for k in out if not k.startswith("@")]:
        attr = readable.get(column)
        value = out[column]
        if attr is None or value is None:
            continue
        t = attr.attribute_type
        label: str | None = None
        if t in OPTION_TYPES or t == "Boolean":
            label = (attr.options or {}).get(int(value))
        elif t in TYPED_FORMATS:
            label = typed.formatted(store, attr, value, stored)
        elif t == "DateTime":
            label = typed.formatted(store, attr, value, stored) or _date(str(value))
        elif t in LOOKUP_TYPES:
            table, nav, label = _lookup(store, entity, attr.binds, str(value))
            if wants(patterns, LOOKUP_TABLE):
                out[f"{column}@{LOOKUP_TABLE}"] = table
            if wants(patterns, NAVIGATION):
                out[f"{column}@{NAVIGATION}"] = nav
        if formatted and label is not None:
            out[f"{column}@{FORMATTED}"] = label
