"""The Dataverse client's records, write operations and results: no I/O.

What `DataverseClient` takes (`WriteOp`) and hands back (`DeltaPage`, `WriteResult`,
column metadata), and how one `$batch` response part becomes a `WriteResult`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from shared.clients import odata

_PRIMARY_KEYS = {"leads": "leadid", "contacts": "contactid", "accounts": "accountid"}
_ENTITY_ID = re.compile(r"\(([0-9a-fA-F-]{36})\)\s*$")


def primary_key(entity_set: str) -> str:
    """The primary key column of an entity set (`leads` -> `leadid`)."""
    return _PRIMARY_KEYS.get(entity_set) or entity_set.rstrip("s") + "id"


def entity_id(odata_entity_id: str) -> str | None:
    """The record id (lower case) at the end of an `OData-EntityId` URL, if there is one."""
    m = _ENTITY_ID.search(odata_entity_id)
    return m.group(1).lower() if m else None


class Record(TypedDict, total=False):
    """A row as the Web API returns it: columns plus `@odata.etag`."""


@dataclass(frozen=True)
class DeltaPage:
    """One page of a change-tracking read. Store `delta_link` (set on the last page only)."""

    records: list[dict[str, Any]]
    deleted_ids: list[str]
    next_link: str | None
    delta_link: str | None


@dataclass(frozen=True)
class WriteOp:
    """One write for `batch_write`. Build with `create`, `update` or `upsert`."""

    kind: Literal["create", "update", "upsert"]
    entity_set: str
    record: Mapping[str, Any]
    key: str | Mapping[str, Any] | None = None
    etag: str | None = None

    @classmethod
    def create(cls, entity_set: str, record: Mapping[str, Any]) -> WriteOp:
        return cls("create", entity_set, record)

    @classmethod
    def update(cls, entity_set: str, record_id: str, changes: Mapping[str, Any], etag: str | None = None) -> WriteOp:
        """Update only (`If-Match: <etag>` or `*`): never creates."""
        return cls("update", entity_set, changes, record_id, etag)

    @classmethod
    def upsert(cls, entity_set: str, key: str | Mapping[str, Any], record: Mapping[str, Any]) -> WriteOp:
        return cls("upsert", entity_set, record, key)


@dataclass(frozen=True)
class WriteResult:
    """Outcome of one `WriteOp`, aligned with the input."""

    ok: bool
    status: int
    id: str | None = None
    etag: str | None = None
    created: bool = False
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class AttributeMetadata:
    logical_name: str
    attribute_type: str
    required_level: str
    max_length: int | None = None
    format: str | None = None
    options: tuple[int, ...] | None = None
    valid_for_create: bool = True
    valid_for_update: bool = True
    precision: int | None = None  # Decimal, Double, Money
    min_value: float | None = None
    max_value: float | None = None
    date_behavior: str | None = None  # DateTime: "UserLocal" | "DateOnly" | "TimeZoneIndependent"
    date_format: str | None = None  # DateTime: "DateOnly" | "DateAndTime"
    targets: tuple[str, ...] = ()  # lookups: the tables they may point at

    @property
    def date_only(self) -> bool:
        return self.date_behavior == "DateOnly" or self.date_format == "DateOnly"


# Typed metadata casts read for their extra facts (spec §9: one cast segment per kind).
TYPED_CASTS: dict[str, str] = {
    "DateTimeAttributeMetadata": "LogicalName,Format,DateTimeBehavior",
    "DecimalAttributeMetadata": "LogicalName,Precision,MinValue,MaxValue",
    "DoubleAttributeMetadata": "LogicalName,Precision,MinValue,MaxValue",
    "MoneyAttributeMetadata": "LogicalName,Precision,MinValue,MaxValue",
    "LookupAttributeMetadata": "LogicalName,Targets",
}


def _managed(value: Any) -> Any:
    """A managed property's value (`{"Value": "DateOnly"}`) or the plain value."""
    return value.get("Value") if isinstance(value, dict) else value


def attribute_type(item: Mapping[str, Any]) -> str:
    """AttributeType, except a multi-select choice (served as `Virtual` with AttributeTypeName
    `MultiSelectPicklistType`) is named `MultiSelectPicklist`."""
    kind = str(item.get("AttributeType"))
    if kind == "Virtual" and _managed(item.get("AttributeTypeName")) == "MultiSelectPicklistType":
        return "MultiSelectPicklist"
    return kind


@dataclass(frozen=True)
class EntityMetadata:
    logical_name: str
    attributes: dict[str, AttributeMetadata] = field(default_factory=dict)


def write_result(op: WriteOp, part: odata.BatchResponse) -> WriteResult:
    """The outcome of one `$batch` part, as the `WriteResult` of its op."""
    if part.status >= 400:
        try:
            err = (part.json() or {}).get("error", {})
        except ValueError:
            err = {"message": part.body.decode("utf-8", "replace")[:500]}
        return WriteResult(False, part.status, error_code=str(err.get("code") or ""),
                           error_message=str(err.get("message") or ""))
    doc = part.json() or {}
    pk = primary_key(op.entity_set)
    record_id = doc.get(pk) or entity_id(part.headers.get("odata-entityid", ""))
    etag = doc.get("@odata.etag") or part.headers.get("etag")
    return WriteResult(True, part.status, id=record_id, etag=etag, created=part.status == 201)


def entity_metadata(logical_name: str, attributes: list[dict[str, Any]], strings: list[dict[str, Any]],
                    option_sets: Mapping[str, tuple[int, ...]],
                    typed: list[dict[str, Any]] | None = None) -> EntityMetadata:
    """Column metadata from the metadata reads: every attribute, the string attributes
    (MaxLength, format), the option values of choice columns and the typed casts' facts."""
    by_name = {a["LogicalName"]: a for a in strings}
    facts: dict[str, dict[str, Any]] = {}
    for t in typed or []:
        facts.setdefault(t["LogicalName"], {}).update(t)
    out = {}
    for a in attributes:
        name = a["LogicalName"]
        s = by_name.get(name, {})
        f = facts.get(name, {})
        fmt = (s.get("FormatName") or {}).get("Value") if isinstance(s.get("FormatName"), dict) else s.get("Format")
        out[name] = AttributeMetadata(
            logical_name=name,
            attribute_type=attribute_type(a),
            required_level=str((a.get("RequiredLevel") or {}).get("Value", "None")),
            max_length=s.get("MaxLength"),
            format=fmt,
            options=option_sets.get(name),
            valid_for_create=bool(a.get("IsValidForCreate", True)),
            valid_for_update=bool(a.get("IsValidForUpdate", True)),
            precision=f.get("Precision"),
            min_value=f.get("MinValue"),
            max_value=f.get("MaxValue"),
            date_behavior=_managed(f.get("DateTimeBehavior")),
            date_format=_managed(f.get("Format")) if "DateTimeBehavior" in f else None,
            targets=tuple(f.get("Targets") or ()),
        )
    return EntityMetadata(logical_name, out)
