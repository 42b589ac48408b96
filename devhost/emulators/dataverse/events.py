"""The RemoteExecutionContext a webhook step POSTs, in DataContract JSON.

Source: Microsoft's "Use webhooks" and the context examples there: collections are
`[{"key":..,"value":..}]`, typed values carry `"__type":"<Type>:http://schemas.microsoft.com/xrm/2011/Contracts"`,
DateTime is `"/Date(<utc ms>)/"`. Target holds the columns the request set plus the system-set ones
(primary id, modifiedon, modifiedby, modifiedonbehalfby); Create adds OutputParameters `id`; Delete's
Target is an EntityReference and its data come only through a pre-image. ParentContext is the trimmed
shape of the documented example. Payloads over 256 KB drop ParentContext, InputParameters and the images.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .metadata import OPTION_TYPES, Attr, EntityDef
from .store import Change, Store

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
MAX_BODY = 256 * 1024
LOOKUPS = {"Lookup", "Owner", "Customer"}
SYSTEM_COLUMNS = frozenset({"versionnumber"})  # never part of Target or an image


def typed(name: str) -> str:
    return f"{name}:{CONTRACTS}"


def kv(items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": v} for k, v in items.items()]


def date(text: str) -> str:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return f"/Date({int(moment.timestamp() * 1000)})/"


def reference(logical_name: str, rid: str) -> dict[str, Any]:
    return {"__type": typed("EntityReference"), "Id": rid, "KeyAttributes": [], "LogicalName": logical_name,
            "Name": None, "RowVersion": None}


@dataclass(frozen=True)
class Origin:
    """Where: the org and the business unit (who made a change is the change's own `user_id`)."""

    organization: str  # e.g. contoso.crm.dynamics.com
    org_name: str
    org_id: str
    bu_id: str


class Encoder:
    def __init__(self, store: Store) -> None:
        self.store = store

    def value(self, attr: Attr, value: Any) -> Any:
        if value is None:
            return None
        t = attr.attribute_type
        if t in OPTION_TYPES:
            return {"__type": typed("OptionSetValue"), "Value": value}
        if t == "Money":
            return {"__type": typed("Money"), "Value": float(value)}
        if t in LOOKUPS:
            return reference(self._target(attr, str(value)), str(value))
        if t == "DateTime":
            return date(str(value))
        return value

    def _target(self, attr: Attr, rid: str) -> str:
        sets = list(attr.binds.values())
        for set_name in sets:
            if rid in self.store.rows.get(set_name, {}):
                return self.store.by_set[set_name].logical_name
        return sets[0].removesuffix("s") if sets else "systemuser"

    def attributes(self, entity: EntityDef, row: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
        readable = entity.readable()
        return kv({readable[n].logical_name: self.value(readable[n], row.get(n)) for n in names if n in readable})

    def formatted(self, entity: EntityDef, row: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
        readable = entity.readable()
        out = {}
        for n in names:
            attr = readable.get(n)
            if attr is not None and attr.attribute_type in OPTION_TYPES and row.get(n) is not None:
                out[attr.logical_name] = (attr.options or {}).get(row[n], str(row[n]))
        return kv(out)

    def entity(self, entity: EntityDef, rid: str, attributes: list[dict[str, Any]],
               formatted: list[dict[str, Any]], with_type: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"__type": typed("Entity")} if with_type else {}
        out.update({"Attributes": attributes, "EntityState": None, "FormattedValues": formatted, "Id": rid,
                    "KeyAttributes": [], "LogicalName": entity.logical_name, "RelatedEntities": [],
                    "RowVersion": None})
        return out

    def image(self, entity: EntityDef, row: dict[str, Any], columns: str | None) -> dict[str, Any]:
        """An entity image: the listed columns (all when none are listed) that hold a value, plus the id."""
        readable = entity.readable()
        wanted = {c.strip() for c in (columns or "").split(",") if c.strip()}
        names = [n for n, a in readable.items() if n not in SYSTEM_COLUMNS and row.get(n) is not None
                 and (not wanted or a.logical_name in wanted or n == entity.primary_id)]
        return self.entity(entity, row[entity.primary_id], self.attributes(entity, row, names),
                           self.formatted(entity, row, names), with_type=False)

    def target(self, change: Change, entity: EntityDef) -> dict[str, Any]:
        if change.message == "Delete":
            return {"__type": typed("EntityReference"), "Id": change.id, "KeyAttributes": [],
                    "LogicalName": entity.logical_name, "Name": None, "RowVersion": None}
        row = change.post or {}
        if change.message == "Create":
            names = [n for n in entity.readable() if n not in SYSTEM_COLUMNS and row.get(n) is not None]
        else:
            names = [n for n in change.submitted if n != entity.primary_id] + [entity.primary_id, "modifiedon"]
        attrs = self.attributes(entity, row, names)
        attrs += kv({"modifiedby": reference("systemuser", change.user_id), "modifiedonbehalfby": None})
        if change.message == "Create":
            attrs += kv({"createdby": reference("systemuser", change.user_id), "createdonbehalfby": None})
        return self.entity(entity, change.id, attrs, [], with_type=True)


@dataclass(frozen=True)
class StepInfo:
    id: str
    name: str
    stage: int
    mode: int
    images: list[dict[str, Any]]  # sdkmessageprocessingstepimage rows


def context(encoder: Encoder, change: Change, step: StepInfo, origin: Origin, correlation_id: str,
            request_id: str) -> tuple[bytes, bool]:
    """The JSON body for one step and one change, and whether it was trimmed for size."""
    entity = encoder.store.by_set[change.set_name]
    pre: dict[str, Any] = {}
    post: dict[str, Any] = {}
    for image in step.images:
        if image["imagetype"] in {0, 2} and change.pre is not None:
            pre[image["entityalias"]] = encoder.image(entity, change.pre, image["attributes"])
        if image["imagetype"] in {1, 2} and change.post is not None:
            post[image["entityalias"]] = encoder.image(entity, change.post, image["attributes"])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    operation_id = str(uuid.uuid4())
    doc: dict[str, Any] = {
        "BusinessUnitId": origin.bu_id, "CorrelationId": correlation_id, "Depth": 1,
        "InitiatingUserAgent": "", "InitiatingUserAzureActiveDirectoryObjectId": change.user_id,
        "InitiatingUserId": change.user_id,
        "InputParameters": kv({"Target": encoder.target(change, entity)}),
        "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False, "IsolationMode": 1,
        "MessageName": change.message, "Mode": step.mode, "OperationCreatedOn": date(now),
        "OperationId": operation_id, "OrganizationId": origin.org_id, "OrganizationName": origin.org_name,
        "OutputParameters": kv({"id": change.id}) if change.message == "Create" else [],
        "OwningExtension": {"Id": step.id, "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep",
                            "Name": step.name, "RowVersion": None},
        "ParentContext": {"CorrelationId": correlation_id, "Depth": 1,
                          "InputParameters": kv({"SuppressDuplicateDetection": False}),
                          "MessageName": change.message, "Mode": step.mode, "ParentContext": None,
                          "PrimaryEntityName": entity.logical_name, "Stage": 30},
        "PostEntityImages": kv(post), "PreEntityImages": kv(pre), "PrimaryEntityId": change.id,
        "PrimaryEntityName": entity.logical_name, "RequestId": request_id, "SecondaryEntityName": "none",
        "SharedVariables": [], "Stage": step.stage,
        "UserAzureActiveDirectoryObjectId": change.user_id, "UserId": change.user_id,
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    if len(body) <= MAX_BODY:
        return body, False
    doc["ParentContext"] = None
    doc["InputParameters"] = doc["PreEntityImages"] = doc["PostEntityImages"] = []
    return json.dumps(doc, separators=(",", ":")).encode(), True
