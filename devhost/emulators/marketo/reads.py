"""Read endpoints beside the sync core: one lead by id, describe2, activity types, Get Lead
Activities and the 7-day usage report.

Sources: Adobe lead-database docs (leads.md: Get Lead by Id, default fields, describe2;
activities.md: Get Activity Types, Get Lead Activities with `activityTypeIds` <= 10 and
`leadIds` <= 30, date-based paging tokens; usage: stats/usage/last7days.json).
Shapes the docs do not show are marked (unverified).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta
from typing import Any

from devhost.emulators.marketo.app import (
    ApiError,
    Call,
    Emulator,
    Handler,
    _activity_page,
    _field_names,
    _lead_ids,
    _split,
)
from devhost.emulators.marketo.store import (
    CHANGE_DATA_VALUE,
    DEFAULT_READ_FIELDS,
    DELETE_LEAD,
    MERGE_LEADS,
    NEW_LEAD,
    Activity,
)

MAX_ACTIVITY_TYPES = 10  # Adobe activities.md: up to 10 activityTypeIds per call


def _attr(name: str, data_type: str) -> dict[str, str]:
    return {"name": name, "dataType": data_type}


# The standard types the emulator logs, with the attributes it writes (Adobe activities.md shape).
STANDARD_TYPES: tuple[dict[str, Any], ...] = (
    {"id": NEW_LEAD, "name": "New Lead", "description": "New person",
     "primaryAttribute": _attr("Lead ID", "integer"),
     "attributes": [_attr("Source Type", "string")]},
    {"id": CHANGE_DATA_VALUE, "name": "Change Data Value", "description": "Changed attribute value for a person",
     "primaryAttribute": _attr("Attribute Name", "integer"),
     "attributes": [_attr("New Value", "text"), _attr("Old Value", "text"), _attr("Reason", "text"),
                    _attr("Source", "string")]},
    {"id": DELETE_LEAD, "name": "Delete Lead", "description": "Delete a person",
     "primaryAttribute": _attr("Lead ID", "integer"),
     "attributes": [_attr("Source", "string")]},
    {"id": MERGE_LEADS, "name": "Merge Leads", "description": "Merge people",
     "primaryAttribute": _attr("Lead ID", "integer"),
     "attributes": [_attr("Merge Ids", "text"), _attr("Merged in Sales", "boolean"),
                    _attr("Merge Source", "string"), _attr("Master Updated", "boolean")]},
)


def lead_by_id(emu: Emulator, call: Call) -> dict[str, Any]:
    """`GET /rest/v1/lead/{id}.json`: `[lead]`, or `[]` (success) when no person has that id."""
    raw = call.groups["id"]
    if not re.fullmatch(r"\d+", raw):
        raise ApiError("1003", f"Invalid lead id '{raw}'")
    names = _field_names(emu, call.param("fields"), DEFAULT_READ_FIELDS)
    lead = emu.store.leads.get(int(raw))
    if lead is None:
        return emu.envelope([])
    item: dict[str, Any] = {"id": lead["id"]}
    item.update({n: lead[n] for n in names if lead.get(n) is not None})
    return emu.envelope([item])


def describe2(emu: Emulator, call: Call) -> dict[str, Any]:
    """`GET /rest/v1/leads/describe2.json`: one "API Lead" object with searchable keys and fields."""
    fields = emu.store.fields.values()
    out = []
    for f in fields:
        item: dict[str, Any] = {"name": f.name, "displayName": f.display, "dataType": f.data_type}
        if f.length is not None:
            item["length"] = f.length
        item.update(updateable=not f.read_only, crmManaged=False)
        out.append(item)
    return emu.envelope([{
        "name": "API Lead",
        "searchableFields": [[f.name] for f in fields if f.searchable],
        "fields": out,
    }])


def activity_types(emu: Emulator, call: Call) -> dict[str, Any]:
    """Standard types plus every approved custom type (a draft is not usable, so not listed)."""
    custom = [
        {"id": t.id, "name": t.name, "description": t.description,
         "primaryAttribute": _attr(str(t.primary_attribute.get("name", "")),
                                   str(t.primary_attribute.get("dataType", "string"))),
         "attributes": [_attr(a["name"], a.get("dataType", "string")) for a in t.attributes]}
        for t in emu.store.types.values() if t.status == "approved"
    ]
    return emu.envelope([dict(t) for t in STANDARD_TYPES] + custom)


def _activity_item(activity: Activity) -> dict[str, Any]:
    """Get Lead Activities items carry no `fields`: a Change Data Value's values are attributes."""
    item = activity.item()
    changed = item.pop("fields", None)
    if activity.type_id == CHANGE_DATA_VALUE and changed:
        item["attributes"] = [{"name": "New Value", "value": changed[0]["newValue"]},
                              {"name": "Old Value", "value": changed[0]["oldValue"]}] + item["attributes"]
    return item


def lead_activities(emu: Emulator, call: Call) -> dict[str, Any]:
    """`GET /rest/v1/activities.json`: the lead-change feed for any set of (at most 10) types."""
    try:
        type_ids = {int(v) for v in _split(call.required("activityTypeIds"))}
    except ValueError:
        raise ApiError("1003", "Invalid activityTypeIds") from None
    if len(type_ids) > MAX_ACTIVITY_TYPES:
        raise ApiError("1003", f"activityTypeIds may hold at most {MAX_ACTIVITY_TYPES} ids")
    known = {t["id"] for t in STANDARD_TYPES} | {t.id for t in emu.store.types.values()}
    unknown = sorted(type_ids - known)
    if unknown:
        raise ApiError("1003", f"Invalid activityTypeIds: {unknown}")  # code unverified
    if call.param("listId") or call.param("assetIds"):
        # The emulator has no static lists or assets, so no id can name one.
        raise ApiError("1013", "Object not found")
    ids = _lead_ids(call)

    def wanted(a: Activity) -> bool:
        return a.type_id in type_ids and (ids is None or a.lead_id in ids)

    return _activity_page(emu, call, emu.limits.retention_changes_s, wanted, _activity_item)


def usage_last7days(emu: Emulator, call: Call) -> dict[str, Any]:
    """One entry per day, today and the 6 before it (US Central days), oldest first (order unverified)."""
    today = date.fromisoformat(emu.day())
    out = []
    for back in range(6, -1, -1):
        day = (today - timedelta(days=back)).isoformat()
        users = emu.daily.get(day, Counter())
        out.append({"date": day, "total": sum(users.values()),
                    "users": [{"userId": u, "count": n} for u, n in sorted(users.items())]})
    return emu.envelope(out)


def read_routes() -> list[tuple[str, re.Pattern[str], Handler]]:
    return [
        (m, re.compile(p + r"$"), h)
        for m, p, h in [
            ("GET", r"/rest/v1/lead/(?P<id>[^/]+)\.json", lead_by_id),
            ("GET", r"/rest/v1/leads/describe2\.json", describe2),
            ("GET", r"/rest/v1/activities/types\.json", activity_types),
            ("GET", r"/rest/v1/activities\.json", lead_activities),
            ("GET", r"/rest/v1/stats/usage/last7days\.json", usage_last7days),
        ]
    ]

