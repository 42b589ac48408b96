"""The emulator's admin API under /_admin/: no auth, never counted, never faulted.

It stands in for people working in the Marketo UI (create / edit / delete a person, which
log the same activities the real UI does) and for the test harness (faults, clock, stats,
limits, reset). Errors are HTTP 4xx with `{"error": "..."}`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devhost.emulators.jsonresp import JSONResponse
from devhost.emulators.marketo.store import SOURCE_UI, RecordSkip, fmt_date
from devhost.emulators.marketo.triggers import CampaignError
from devhost.emulators.outbound import EventFault

if TYPE_CHECKING:
    from devhost.emulators.marketo.app import Emulator

FAULT_KINDS = {"http500", "http502", "http503", "http504", "606", "607", "615", "602", "604", "608", "611", "713",
               "slow", "drop"}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def admin_routes(emu: Emulator) -> list[Route]:
    # emu.store is replaced on reset: always read it through `emu`, never keep a reference.

    def _skip(exc: RecordSkip) -> JSONResponse:
        return JSONResponse({"error": exc.message, "code": exc.code}, status_code=400)

    def _create(fields: dict[str, Any]) -> int:
        values = emu.store.validate({k: v for k, v in fields.items() if k != "id"})
        return emu.store.create(values, SOURCE_UI)

    def _update(lead_id: int, fields: dict[str, Any]) -> list[str]:
        if lead_id not in emu.store.leads:
            raise KeyError(lead_id)
        values = emu.store.validate({k: v for k, v in fields.items() if k != "id"})
        return emu.store.update(lead_id, values, SOURCE_UI)

    async def leads(request: Request) -> Response:
        if request.method == "GET":
            email = request.query_params.get("email")
            ids = emu.store.find("email", email) if email is not None else sorted(emu.store.leads)
            return JSONResponse({"leads": [emu.store.leads[i] for i in ids]})
        try:
            return JSONResponse({"id": _create(await _body(request))}, status_code=201)
        except RecordSkip as exc:
            return _skip(exc)

    async def bulk(request: Request) -> Response:
        """{"leads": [...]}: items without "id" are created, items with one are updated. All or nothing."""
        items = (await _body(request)).get("leads") or []
        with emu.store.lock:
            try:
                checked = [emu.store.validate({k: v for k, v in item.items() if k != "id"}) for item in items]
            except RecordSkip as exc:
                return _skip(exc)
            missing = [item["id"] for item in items if "id" in item and item["id"] not in emu.store.leads]
            if missing:
                return _error(404, f"no such leads: {missing[:10]}")
            ids = []
            for item, values in zip(items, checked, strict=True):
                if "id" in item:
                    emu.store.update(int(item["id"]), values, SOURCE_UI)
                    ids.append(int(item["id"]))
                else:
                    ids.append(emu.store.create(values, SOURCE_UI))
        return JSONResponse({"ids": ids})

    async def lead(request: Request) -> Response:
        lead_id = int(request.path_params["lead_id"])
        if lead_id not in emu.store.leads:
            return _error(404, f"no lead {lead_id}")
        if request.method == "GET":
            return JSONResponse(emu.store.leads[lead_id])
        if request.method == "DELETE":
            emu.store.delete(lead_id)
            return Response(status_code=204)
        try:
            changed = _update(lead_id, await _body(request))
        except RecordSkip as exc:
            return _skip(exc)
        return JSONResponse({"id": lead_id, "changed": changed})

    async def partitions(request: Request) -> Response:
        """{"name","description"?} adds a lead partition (as an admin does in Admin > Workspaces & Partitions)."""
        doc = await _body(request)
        name = str(doc.get("name") or "").strip()
        if not name or any(p["name"] == name for p in emu.store.partitions):
            return _error(400, "name must be new and not blank")
        partition = {"id": max(p["id"] for p in emu.store.partitions) + 1, "name": name,
                     "description": str(doc.get("description") or "")}
        emu.store.partitions.append(partition)
        return JSONResponse(partition, status_code=201)

    async def merge(request: Request) -> Response:
        from devhost.emulators.marketo.app import ApiError
        from devhost.emulators.marketo.merges import merge_leads

        body = await _body(request)
        losers = body.get("losers")
        if not isinstance(losers, list) or not all(isinstance(i, int) for i in losers) or not losers:
            return _error(400, "losers must be a non-empty list of lead ids")
        with emu.store.lock:
            try:
                merge_leads(emu.store, int(request.path_params["lead_id"]), losers, source=SOURCE_UI)
            except ApiError as exc:
                return _error(404, exc.message)
        return Response(status_code=204)

    async def activities(request: Request) -> Response:
        lead_id = int(request.path_params["lead_id"])
        all_types = request.query_params.get("all", "").lower() in {"1", "true", "yes"}
        return JSONResponse({"activities": emu.store.custom_entries(lead_id, all_types=all_types)})

    async def faults(request: Request) -> Response:
        from devhost.emulators.marketo.app import Fault

        if request.method == "DELETE":
            emu.faults.clear()
            return Response(status_code=204)
        if request.method == "GET":
            return JSONResponse({"faults": [asdict(f) for f in emu.faults]})
        body = await _body(request)
        kind = str(body.get("kind", ""))
        if kind not in FAULT_KINDS:
            return _error(400, f"kind must be one of {sorted(FAULT_KINDS)}")
        count = body.get("count")
        rate = body.get("rate")
        fault = Fault(
            kind=kind,
            count=int(count) if count is not None else (None if rate is not None else 1),
            rate=float(rate) if rate is not None else None,
            delay_s=float(body.get("delay_s", 0.0)),
            path_prefix=str(body.get("path_prefix") or "/rest"),
        )
        emu.faults.append(fault)
        return JSONResponse(asdict(fault), status_code=201)

    async def stats(request: Request) -> Response:
        s = emu.stats
        return JSONResponse({
            "calls_by_endpoint": dict(s.calls_by_endpoint),
            "responses_by_code": dict(s.responses_by_code),
            "faults_injected": dict(s.faults_injected),
            "total_calls": s.total_calls,
            "counted_calls": s.counted_calls,
            "identity_calls": s.identity_calls,
            "in_flight": emu.in_flight,
            "webhooks": emu.triggers.outbound.stats(),
        })

    async def campaigns(request: Request) -> Response:
        """Trigger campaigns with a Call Webhook step (triggers.py): GET lists, POST adds, DELETE removes all."""
        if request.method == "GET":
            return JSONResponse({"campaigns": emu.triggers.listing()})
        if request.method == "DELETE":
            for item in emu.triggers.listing():
                emu.triggers.remove(int(item["id"]))
            return Response(status_code=204)
        try:
            campaign = emu.triggers.add(await _body(request))
        except (ValueError, CampaignError) as exc:
            return _error(400, str(exc))
        return JSONResponse({"id": campaign.id}, status_code=201)

    async def campaign(request: Request) -> Response:
        if not emu.triggers.remove(int(request.path_params["campaign_id"])):
            return _error(404, "no such campaign")
        return Response(status_code=204)

    async def webhook_faults(request: Request) -> Response:
        """POST {"kind": "drop"|"delay", "count"|"rate", "delay_s"} applies to webhook calls; DELETE clears."""
        if request.method == "DELETE":
            emu.triggers.outbound.clear_faults()
            return Response(status_code=204)
        try:
            doc = await _body(request)
            fault = EventFault(kind=str(doc.get("kind", "")),
                               count=int(doc["count"]) if doc.get("count") is not None else None,
                               rate=float(doc["rate"]) if doc.get("rate") is not None else None,
                               delay_s=float(doc.get("delay_s") or 0.0))
            emu.triggers.outbound.add_fault(fault)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return JSONResponse(asdict(fault), status_code=201)

    async def reset(request: Request) -> Response:
        emu.reset()
        return Response(status_code=204)

    async def clock(request: Request) -> Response:
        if request.method == "POST":
            advance = float((await _body(request)).get("advance_s", 0))
            if advance < 0:
                return _error(400, "the clock only moves forward")
            emu.clock.offset_s += advance
        return JSONResponse({"now": fmt_date(emu.clock.now()), "offset_s": emu.clock.offset_s})

    async def spend(request: Request) -> Response:
        """Count `calls` against today's quota for `user`: another integration of the same instance."""
        doc = await _body(request)
        calls, user = doc.get("calls"), doc.get("user", "other-integration")
        if type(calls) is not int or calls < 0 or not isinstance(user, str) or not user:
            return _error(400, "calls must be a non-negative integer and user a non-empty string")
        emu.daily.setdefault(emu.day(), Counter())[user] += calls  # one event loop: no lock needed, as in count()
        today = sum(emu.daily[emu.day()].values())
        return JSONResponse({"day": emu.day(), "today": today})

    async def limits(request: Request) -> Response:
        if request.method == "PATCH":
            try:
                emu.limits = emu.limits.update(await _body(request))
            except (TypeError, ValueError) as exc:
                return _error(400, str(exc))
        return JSONResponse(asdict(emu.limits))

    async def permissions(request: Request) -> Response:
        """{"deny": ["/rest/v1/leads/describe.json", ...]}: the API user's role lacks these endpoints (603)."""
        if request.method == "DELETE":
            emu.denied.clear()
        else:
            emu.denied.update(str(p) for p in (await _body(request)).get("deny") or [])
        return JSONResponse({"denied": sorted(emu.denied)})

    async def drop_field(request: Request) -> Response:
        """Delete a custom field, as an admin would in Field Management."""
        name = str(request.path_params["name"])
        with emu.store.lock:
            if emu.store.fields.pop(name, None) is None:
                return _error(404, f"no field {name}")
            for lead in emu.store.leads.values():
                lead.pop(name, None)
        return Response(status_code=204)

    async def activity_type(request: Request) -> Response:
        """{"status": "draft"}: set a custom activity type's status (a draft cannot be written to)."""
        atype = emu.store.types.get(str(request.path_params["api"]))
        if atype is None:
            return _error(404, "no such activity type")
        status = str((await _body(request)).get("status", ""))
        if status not in {"draft", "approved"}:
            return _error(400, "status must be draft or approved")
        atype.status = status
        return JSONResponse({"apiName": atype.api_name, "status": atype.status})

    async def activity_log(request: Request) -> Response:
        return JSONResponse({"size": len(emu.store.log)})

    return [
        Route("/_admin/leads", leads, methods=["GET", "POST"]),
        Route("/_admin/leads/bulk", bulk, methods=["POST"]),
        Route("/_admin/partitions", partitions, methods=["POST"]),
        Route("/_admin/leads/{lead_id:int}", lead, methods=["GET", "PATCH", "DELETE"]),
        Route("/_admin/leads/{lead_id:int}/activities", activities, methods=["GET"]),
        Route("/_admin/leads/{lead_id:int}/merge", merge, methods=["POST"]),
        Route("/_admin/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_admin/stats", stats, methods=["GET"]),
        Route("/_admin/reset", reset, methods=["POST"]),
        Route("/_admin/clock", clock, methods=["GET", "POST"]),
        Route("/_admin/limits", limits, methods=["GET", "PATCH"]),
        Route("/_admin/spend", spend, methods=["POST"]),
        Route("/_admin/log", activity_log, methods=["GET"]),
        Route("/_admin/permissions", permissions, methods=["POST", "DELETE"]),
        Route("/_admin/fields/{name}", drop_field, methods=["DELETE"]),
        Route("/_admin/activity-types/{api}", activity_type, methods=["PATCH"]),
        Route("/_admin/campaigns", campaigns, methods=["GET", "POST", "DELETE"]),
        Route("/_admin/campaigns/{campaign_id:int}", campaign, methods=["DELETE"]),
        Route("/_admin/webhooks/faults", webhook_faults, methods=["POST", "DELETE"]),
    ]
