"""The `Merge` action: `POST /api/data/v9.2/Merge`, as Dataverse runs it for leads and contacts.

Body (Microsoft's "Merge Action" Web API reference and "Merge table rows" how-to):

    {"Target": {"@odata.type": "Microsoft.Dynamics.CRM.lead", "leadid": "<master>"},
     "Subordinate": {"@odata.type": "Microsoft.Dynamics.CRM.lead", "leadid": "<subordinate>"},
     "UpdateContent": {"@odata.type": "Microsoft.Dynamics.CRM.lead", "jobtitle": "…"},
     "PerformParentingChecks": false}

All four parameters are required (UpdateContent may carry no columns). Effects, in one
transaction: the master is updated with UpdateContent; the subordinate gets `masterid` (the
master), `merged` = true and is deactivated: a lead Disqualified / Canceled (statecode 2,
statuscode 7), a contact Inactive (1 / 2). Both rows get a new version, so change tracking
reports both. The answer is 204 No Content.

Error codes and messages for a bad merge are not in Microsoft's reference; the ones here
follow the Web API's general shapes and are marked [unverified].
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .store import ApiError, is_guid, not_found

if TYPE_CHECKING:
    from .webapi import Req, Resp, WebApi

# What deactivating a merged subordinate sets (statecode, statuscode) [from memory].
_DEACTIVATED = {"lead": (2, 7), "contact": (1, 2)}
_PARAMS = ("Target", "Subordinate", "UpdateContent", "PerformParentingChecks")


def _bad(message: str) -> ApiError:
    return ApiError(400, "0x80040203", message)


def _entity_ref(api: WebApi, name: str, value: Any) -> tuple[str, str]:
    """(logical name, id) of an entity reference parameter such as Target."""
    if not isinstance(value, dict):
        raise _bad(f"The parameter '{name}' must be an entity reference object.")
    type_name = str(value.get("@odata.type", "")).lstrip("#").removeprefix("Microsoft.Dynamics.CRM.")
    if type_name not in _DEACTIVATED:
        raise _bad(f"The parameter '{name}' must name its type with '@odata.type' "
                   "(Microsoft.Dynamics.CRM.lead or Microsoft.Dynamics.CRM.contact).")
    key = api.store.entities[type_name].primary_id
    rid = value.get(key)
    if not isinstance(rid, str) or not is_guid(rid):
        raise _bad(f"The parameter '{name}' must carry '{key}' as a GUID.")
    return type_name, rid.lower()


def merge(api: WebApi, req: Req) -> Resp:
    """Run the Merge action (see the module docstring); 204 on success."""
    from .webapi import Resp

    if req.method != "POST":
        raise ApiError(405, "0x80060888", "Merge is an action: use POST.")
    try:
        body = json.loads(req.body or b"null")
    except ValueError as exc:
        raise _bad(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    for name in _PARAMS:
        if body.get(name) is None:
            raise _bad(f"The parameter '{name}' is required and cannot be null.")
    if not isinstance(body["PerformParentingChecks"], bool):
        raise _bad("The parameter 'PerformParentingChecks' must be a boolean.")
    kind, master_id = _entity_ref(api, "Target", body["Target"])
    sub_kind, sub_id = _entity_ref(api, "Subordinate", body["Subordinate"])
    content = body["UpdateContent"]
    if not isinstance(content, dict):
        raise _bad("The parameter 'UpdateContent' must be an entity object.")
    content_type = str(content.get("@odata.type", "")).lstrip("#").removeprefix("Microsoft.Dynamics.CRM.")
    if sub_kind != kind or (content_type and content_type != kind):
        raise _bad("Target, Subordinate and UpdateContent must be of the same table.")  # [unverified]
    if master_id == sub_id:
        raise _bad("The master and the subordinate are the same record.")  # [unverified]
    entity = api.store.entities[kind]
    api._require(f"prvWrite{kind.capitalize()}", kind)
    master = api.store.get(entity.entity_set, master_id)
    sub = api.store.get(entity.entity_set, sub_id)
    if master is None:
        raise not_found(entity, master_id)
    if sub is None:
        raise not_found(entity, sub_id)
    for which, row in (("master", master), ("subordinate", sub)):
        if row.get("statecode") != 0:
            # [unverified] Dataverse refuses to merge an inactive record.
            raise _bad(f"The {which} record {row[entity.primary_id]} is inactive and cannot be merged.")
    if body["PerformParentingChecks"] and kind == "contact":
        parents = {master.get("_parentcustomerid_value"), sub.get("_parentcustomerid_value")} - {None}
        if len(parents) > 1:
            # [unverified] the check compares the two records' parent account.
            raise _bad("The records have different parents: merge cancelled by the parenting check.")
    values = {k: v for k, v in content.items() if k != "@odata.type"}
    state, status = _DEACTIVATED[kind]
    with api.store.transaction():
        if values:
            api.store.update(entity.entity_set, master_id, values)
        api.store.update(entity.entity_set, sub_id, {"_masterid_value": master_id, "merged": True,
                                                    "statecode": state, "statuscode": status}, validate=False)
    return Resp(204, {"OData-Version": "4.0"})
