"""EntityDefinitions as a queryable collection, by LogicalName or MetadataId, and RetrieveMetadataChanges.

Sources (learn.microsoft.com, Dataverse Web API): "Query table definitions using the Web API"
(`EntityDefinitions?$select=…&$filter=LogicalName eq 'lead'`, `EntityDefinitions(<MetadataId>)`,
`/Attributes?$filter=…`, unknown property → 400 "Could not find a property named …"),
"Retrieve and detect changes to table definitions" (RetrieveMetadataChanges: an
EntityQueryExpression with Criteria / Properties / AttributeQuery, a ServerVersionStamp to send
back as ClientVersionStamp; an expired stamp fails with ExpiredVersionStamp 0x80044352).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import filter as odata_filter
from .metadata import Attr, EntityDef, attribute_json, cast_name, select_keys
from .store import ApiError

if TYPE_CHECKING:
    from .webapi import Req, Resp, WebApi

_KEY = r"(?:LogicalName='(\w+)'|\{?([0-9a-fA-F-]{36})\}?)"
_PATH = re.compile(
    rf"^EntityDefinitions(?:\({_KEY}\)(?:/Attributes(?:\({_KEY}\))?(?:/Microsoft\.Dynamics\.CRM\.(\w+))?)?)?$"
)
_OBJECT_TYPE_CODES = {"lead": 4, "contact": 2, "systemuser": 8, "team": 9}
EXPIRED_CODE = "0x80044352"


def _label(text: str) -> dict[str, Any]:
    loc = {"Label": text, "LanguageCode": 1033}
    return {"LocalizedLabels": [loc], "UserLocalizedLabel": loc}


def entity_metadata_id(entity: EntityDef) -> str:
    """Stable across resets, like a real table's MetadataId."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, entity.logical_name))


def entity_json(entity: EntityDef) -> dict[str, Any]:
    """The EntityMetadata properties the emulator knows (a subset of the real ~100)."""
    return {
        "MetadataId": entity_metadata_id(entity),
        "LogicalName": entity.logical_name,
        "SchemaName": entity.logical_name.capitalize(),
        "EntitySetName": entity.entity_set,
        "LogicalCollectionName": entity.entity_set,
        "PrimaryIdAttribute": entity.primary_id,
        "PrimaryNameAttribute": "fullname",
        "ObjectTypeCode": _OBJECT_TYPE_CODES.get(entity.logical_name),
        "OwnershipType": "UserOwned",
        "IsCustomEntity": False,
        "IsActivity": False,
        "ChangeTrackingEnabled": entity.change_tracking,
        "IsOptimisticConcurrencyEnabled": True,
        "DisplayName": _label(entity.logical_name.capitalize()),
        "DisplayCollectionName": _label(entity.entity_set.capitalize()),
    }


_ENTITY_PROPS = list(entity_json(EntityDef("x", "xs", "xid", {})))
_FILTERABLE = {
    "LogicalName": "String", "SchemaName": "String", "EntitySetName": "String", "LogicalCollectionName": "String",
    "PrimaryIdAttribute": "String", "PrimaryNameAttribute": "String", "OwnershipType": "String",
    "MetadataId": "Uniqueidentifier", "ObjectTypeCode": "Integer", "IsCustomEntity": "Boolean",
    "IsActivity": "Boolean", "ChangeTrackingEnabled": "Boolean", "IsOptimisticConcurrencyEnabled": "Boolean",
}
_ATTR_FILTERABLE = {
    "LogicalName": "String", "SchemaName": "String", "EntityLogicalName": "String", "AttributeType": "String",
    "MetadataId": "Uniqueidentifier", "IsValidForCreate": "Boolean", "IsValidForUpdate": "Boolean",
    "IsValidForRead": "Boolean", "IsPrimaryId": "Boolean", "MaxLength": "Integer",
}


def _columns(kinds: dict[str, str]) -> dict[str, Attr]:
    return {name: Attr(name, kind) for name, kind in kinds.items()}


def _matching(
    items: list[dict[str, Any]], raw: str | None, kinds: dict[str, str], type_name: str
) -> list[dict[str, Any]]:
    if not raw:
        return items
    keep = odata_filter.compile_filter(odata_filter.parse(raw, _columns(kinds), type_name))
    return [i for i in items if keep(i)]


def _select(raw: str | None, known: list[str] | None, type_name: str) -> list[str] | None:
    names = [s.strip() for s in (raw or "").split(",") if s.strip()]
    for name in names:
        if known is not None and name not in known:
            raise ApiError(400, "0x80060888", f"Could not find a property named '{name}' on type '{type_name}'.")
    return names or None


def _find_entity(api: WebApi, logical: str | None, mid: str | None) -> EntityDef:
    for entity in api.store.entities.values():
        if entity.logical_name == logical or (mid and entity_metadata_id(entity) == mid.lower()):
            return entity
    name = logical or mid
    raise ApiError(404, "0x80040217", f"Could not find an entity with {'name' if logical else 'MetadataId'} {name}.")


def metadata(api: WebApi, req: Req, path: str) -> Resp:
    """GET EntityDefinitions[(key)[/Attributes[(key)][/<cast>]]] with $select and $filter."""
    from .webapi import json_resp

    m = _PATH.match(path)
    if not m or req.method != "GET":
        raise ApiError(404, "0x8004f510", f"Resource not found for the segment '{path}'.")
    logical, mid, attr_logical, attr_mid, cast = m.groups()
    opts = dict(req.query)
    entity_type = "Microsoft.Dynamics.CRM.EntityMetadata"
    if logical is None and mid is None:
        select = _select(opts.get("$select"), _ENTITY_PROPS, entity_type)
        items = _matching([entity_json(e) for e in api.store.entities.values()], opts.get("$filter"),
                          _FILTERABLE, entity_type)
        return json_resp(200, {"@odata.context": f"{api.root}$metadata#EntityDefinitions",
                               "value": [select_keys(i, select) for i in items]})
    entity = _find_entity(api, logical, mid)
    if "/Attributes" not in path:
        select = _select(opts.get("$select"), _ENTITY_PROPS, entity_type)
        return json_resp(200, {"@odata.context": f"{api.root}$metadata#EntityDefinitions/$entity",
                               **select_keys(entity_json(entity), select)})
    select = _select(opts.get("$select"), None, "Microsoft.Dynamics.CRM.AttributeMetadata")
    expand = "OptionSet" in opts.get("$expand", "")
    attrs = [a for a in entity.attrs.values() if not cast or cast_name(a) == cast]
    context = f"{api.root}$metadata#EntityDefinitions({entity_metadata_id(entity)})/Attributes"
    if attr_logical or attr_mid:
        match = [a for a in attrs if a.logical_name == attr_logical or (attr_mid and a.metadata_id == attr_mid.lower())]
        if not match:
            raise ApiError(404, "0x80040217", f"Could not find attribute {attr_logical or attr_mid} of "
                           f"{entity.logical_name}" + (f" as {cast}" if cast else "") + ".")
        item = select_keys(attribute_json(entity, match[0], expand), select)
        return json_resp(200, {"@odata.context": f"{context}/$entity", **item})
    items = _matching([attribute_json(entity, a, expand) for a in attrs], opts.get("$filter"), _ATTR_FILTERABLE,
                      "Microsoft.Dynamics.CRM.AttributeMetadata")
    return json_resp(200, {"@odata.context": context, "value": [select_keys(i, select) for i in items]})


# -- RetrieveMetadataChanges -------------------------------------------------------------------
def _params(api: WebApi, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
    """`RetrieveMetadataChanges(Query=@p1,ClientVersionStamp=@p2)` with aliases in the query string."""
    m = re.fullmatch(r"RetrieveMetadataChanges\((.*)\)", path, re.DOTALL)
    if not m:
        raise ApiError(404, "0x8004f510", f"Resource not found for the segment '{path}'.")
    aliases = dict(query)
    out: dict[str, Any] = {}
    for piece in filter(None, (p.strip() for p in m.group(1).split(","))):
        name, _, ref = piece.partition("=")
        raw = aliases.get(ref.strip(), ref.strip()) if ref.strip().startswith("@") else ref.strip()
        try:
            out[name.strip()] = json.loads(unquote(raw))
        except ValueError:
            out[name.strip()] = unquote(raw).strip("'")
    if not isinstance(out.get("Query"), dict):
        raise ApiError(400, "0x80040203", "The parameter 'Query' is required and must be an EntityQueryExpression.")
    return out


def _fold(value: Any) -> Any:
    """Metadata names compare case-insensitively."""
    return value.casefold() if isinstance(value, str) else value


def _condition_ok(item: dict[str, Any], cond: dict[str, Any]) -> bool:
    op = cond.get("ConditionOperator")
    value = (cond.get("Value") or {}).get("Value") if isinstance(cond.get("Value"), dict) else cond.get("Value")
    have = item.get(cond.get("PropertyName", ""))
    if op == "Equals":
        return bool(_fold(have) == _fold(value))
    if op == "NotEquals":
        return bool(_fold(have) != _fold(value))
    if op in ("In", "NotIn"):
        values = [_fold(v) for v in (value if isinstance(value, list) else [value])]
        return bool((_fold(have) in values) == (op == "In"))
    raise ApiError(400, "0x80040203", f"ConditionOperator '{op}' is not supported for metadata queries.")


def _criteria_ok(item: dict[str, Any], criteria: dict[str, Any] | None) -> bool:
    conds = (criteria or {}).get("Conditions") or []
    results = [_condition_ok(item, c) for c in conds]
    if (criteria or {}).get("FilterOperator", "And") == "Or":
        return any(results) if results else True
    return all(results)


def _project(item: dict[str, Any], properties: dict[str, Any] | None) -> dict[str, Any]:
    if not properties or properties.get("AllProperties"):
        return item
    keep = set(properties.get("PropertyNames") or []) | {"MetadataId", "@odata.type"}
    return {k: v for k, v in item.items() if k in keep}


def _stamp(entities: dict[str, str]) -> str:
    digest = hashlib.sha1(json.dumps(entities, sort_keys=True).encode()).hexdigest()[:16]
    return f"{digest}!{datetime.now(timezone.utc).strftime('%m/%d/%Y %H:%M:%S')}"


def retrieve_metadata_changes(api: WebApi, req: Req, path: str, stamps: dict[str, dict[str, str]]) -> Resp:
    """Entities (and their attributes) matching the query; with a ClientVersionStamp only those changed
    since it. `stamps` remembers what each issued stamp stood for (stamp → entity → digest)."""
    from .webapi import json_resp

    if req.method != "GET":
        raise ApiError(405, "0x80060888", "RetrieveMetadataChanges is a function: use GET.")
    params = _params(api, path, req.query)
    query: dict[str, Any] = params["Query"]
    full = {e.logical_name: e for e in api.store.entities.values()}
    digests = {name: hashlib.sha1(json.dumps([entity_json(e)] + [attribute_json(e, a, True) for a in e.attrs.values()],
                                             sort_keys=True).encode()).hexdigest() for name, e in full.items()}
    client = params.get("ClientVersionStamp")
    changed = set(full)
    if client:
        if client not in stamps:
            raise ApiError(400, EXPIRED_CODE, "Version stamp associated with the client has expired. "
                           "Please perform a full sync.")
        changed = {n for n, d in digests.items() if stamps[client].get(n) != d}
    attr_query = query.get("AttributeQuery") or {}
    out = []
    for name in sorted(changed):
        entity = full[name]
        item = entity_json(entity)
        if not _criteria_ok(item, query.get("Criteria")):
            continue
        attrs = [attribute_json(entity, a, True) for a in entity.attrs.values()]
        item["Attributes"] = [_project(a, attr_query.get("Properties")) for a in attrs
                              if _criteria_ok(a, attr_query.get("Criteria"))]
        out.append(_project(item, query.get("Properties")))
    stamp = _stamp(digests)
    stamps[stamp] = digests
    return json_resp(200, {
        "@odata.context": f"{api.root}$metadata#Microsoft.Dynamics.CRM.RetrieveMetadataChangesResponse",
        "EntityMetadata": out,
        "ServerVersionStamp": stamp,
        "DeletedMetadata": {"Keys": [], "Values": []},
    })


__all__ = ["entity_metadata_id", "metadata", "retrieve_metadata_changes"]
