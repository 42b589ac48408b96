"""/_admin: test and demo control (no auth; not counted in Web API limits or stats).

Writes here act "as a salesperson would" in the app: they skip Web API validation but bump
row versions, so they show up in change tracking, and they are made by the salesperson user
(`principals.SALESPERSON_USER`), whom their change events name.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..jsonresp import JSONResponse
from .principals import SALESPERSON_USER
from .store import ApiError

if TYPE_CHECKING:
    from .app import Emulator


def admin_routes(emu: Emulator) -> list[Route]:
    from .app import Fault, Limits
    from .webapi import Req

    def err(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def body(request: Request) -> Any:
        raw = await request.body()
        return (await request.json()) if raw else {}

    def entity_set(request: Request) -> str | None:
        name = str(request.path_params["set"])
        return name if name in emu.store.by_set else None

    def record(set_name: str, row: dict[str, Any]) -> dict[str, Any]:
        return emu.webapi.render(emu.store.entity(set_name), row, None)

    async def reset(request: Request) -> Response:
        emu.reset()
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        with emu.lock:
            return JSONResponse({**emu.stats.as_json(emu.webapi.batch_operations),
                                 "webhooks": emu.webhooks.outbound.stats()})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            with emu.lock:
                emu.faults.clear()
            return Response(status_code=204)
        doc = await body(request)
        kinds = {"http500", "http503", "429", "401", "slow", "drop"}
        if doc.get("kind") not in kinds:
            return err(400, f"kind must be one of {sorted(kinds)}")
        if doc.get("count") is None and doc.get("rate") is None:
            doc["count"] = 1
        fault = Fault(kind=doc["kind"], count=doc.get("count"), rate=doc.get("rate"),
                      retry_after=int(doc.get("retry_after", 1)), delay_s=float(doc.get("delay_s", 0.0)),
                      path_prefix=doc.get("path_prefix") or "/api/data/")
        with emu.lock:
            emu.faults.append(fault)
        return JSONResponse({"kind": fault.kind, "count": fault.count, "rate": fault.rate})

    async def limits(request: Request) -> Response:
        doc = await body(request)
        with emu.lock:
            for key in ("requests_per_window", "window_s", "concurrency", "execution_ms"):
                if key in doc:
                    setattr(emu.limits, key, doc[key])
            emu.window.clear()
            return JSONResponse(vars(emu.limits) if isinstance(emu.limits, Limits) else {})

    async def keys(request: Request) -> Response:
        doc = await body(request)
        entity = emu.store.entities.get(doc.get("entity", ""))
        columns = doc.get("columns") or []
        if entity is None or not columns or any(c not in entity.readable() for c in columns):
            return err(400, "entity must be lead|contact and columns existing columns")
        with emu.store.lock:
            emu.store.keys.setdefault(entity.logical_name, []).append(tuple(columns))
        return JSONResponse({"entity": entity.logical_name, "columns": columns})

    async def metadata(request: Request) -> Response:
        """Override one attribute: {"entity","attribute","required_level"?,"max_length"?,"format_name"?}."""
        doc = await body(request)
        entity = emu.store.entities.get(doc.get("entity", ""))
        attr = entity.attrs.get(doc.get("attribute", "")) if entity else None
        if attr is None:
            return err(400, "unknown entity/attribute")
        with emu.store.lock:
            for key in ("required_level", "max_length", "format_name", "precision", "min_value", "max_value",
                        "date_behavior", "date_format"):
                if key in doc:
                    setattr(attr, key, doc[key])
            if "options" in doc:
                attr.options = {int(k): str(v) for k, v in doc["options"].items()}
        return JSONResponse({"attribute": attr.logical_name, "required_level": attr.required_level,
                             "max_length": attr.max_length, "format_name": attr.format_name})

    async def privileges(request: Request) -> Response:
        """{"deny": ["prvReadLead", ...]} takes privileges from the application user; DELETE restores all."""
        with emu.store.lock:
            if request.method == "DELETE":
                emu.webapi.denied.clear()
            else:
                emu.webapi.denied.update(str(p) for p in (await body(request)).get("deny") or [])
            return JSONResponse({"denied": sorted(emu.webapi.denied)})

    async def plugins(request: Request) -> Response:
        """{"entity","message":"Create"|"Update","error"} registers a plug-in step that throws; DELETE removes all."""
        from .pipeline import MESSAGES, PluginStep

        with emu.store.lock:
            if request.method == "DELETE":
                emu.store.pipeline.steps.clear()
                return Response(status_code=204)
            doc = await body(request)
            if doc.get("entity") not in emu.store.entities or doc.get("message") not in MESSAGES \
                    or not doc.get("error"):
                return err(400, f"entity must be a table, message one of {list(MESSAGES)}, error a text")
            emu.store.pipeline.steps.append(PluginStep(doc["entity"], doc["message"], str(doc["error"])))
            return JSONResponse(doc)

    async def duplicate_rules(request: Request) -> Response:
        """{"entity","columns":[...]} publishes a duplicate detection rule; DELETE unpublishes all."""
        from .pipeline import DuplicateRule

        with emu.store.lock:
            if request.method == "DELETE":
                emu.store.pipeline.rules.clear()
                return Response(status_code=204)
            doc = await body(request)
            entity = emu.store.entities.get(doc.get("entity", ""))
            columns = doc.get("columns") or []
            if entity is None or not columns or any(c not in entity.readable() for c in columns):
                return err(400, "entity must be a table and columns existing columns")
            emu.store.pipeline.rules.append(DuplicateRule(entity.logical_name, tuple(columns)))
            return JSONResponse(doc)

    async def change_tracking(request: Request) -> Response:
        """{"enabled": false} turns a table's ChangeTrackingEnabled off (as if never enabled)."""
        entity = emu.store.entities.get(str(request.path_params["entity"]))
        if entity is None:
            return err(404, "unknown entity")
        with emu.store.lock:
            entity.change_tracking = bool((await body(request)).get("enabled", True))
        return JSONResponse({"entity": entity.logical_name, "ChangeTrackingEnabled": entity.change_tracking})

    async def drop_column(request: Request) -> Response:
        """Delete a column from a table's metadata, as a customizer deleting it would."""
        entity = emu.store.entities.get(str(request.path_params["entity"]))
        name = str(request.path_params["attribute"])
        if entity is None or name not in entity.attrs:
            return err(404, "unknown entity/attribute")
        with emu.store.lock:
            del entity.attrs[name]
            for row in emu.store.rows[entity.entity_set].values():
                row.pop(name, None)
        return Response(status_code=204)

    async def expire(request: Request) -> Response:
        emu.store.expire_delta_tokens()
        return Response(status_code=204)

    async def revoke(request: Request) -> Response:
        return JSONResponse({"revoked": emu.revoke_tokens()})

    async def collection(request: Request) -> Response:
        set_name = entity_set(request)
        if set_name is None:
            return err(404, "unknown entity set")
        if request.method == "POST":
            try:
                with emu.store.acting_as(SALESPERSON_USER):
                    row = emu.store.create(set_name, await body(request), validate=False)
                    return JSONResponse(record(set_name, row), status_code=201)
            except ApiError as exc:
                return err(exc.status, exc.message)
        filters = {k: v.casefold() for k, v in request.query_params.items()}
        with emu.store.lock:
            rows = [
                record(set_name, r) for r in emu.store.rows[set_name].values()
                if all(str(r.get(k) or "").casefold() == v for k, v in filters.items())
            ]
        return JSONResponse({"value": rows})

    async def bulk(request: Request) -> Response:
        """POST creates `records`; PATCH updates them, each naming its row by the primary id (an import's update)."""
        set_name = entity_set(request)
        if set_name is None:
            return err(404, "unknown entity set")
        records = (await body(request)).get("records") or []
        if request.method == "PATCH":
            key = emu.store.entity(set_name).primary_id
            try:
                with emu.store.acting_as(SALESPERSON_USER), emu.store.transaction():
                    for r in records:
                        emu.store.update(set_name, str(r.get(key) or ""), r, validate=False)
            except ApiError as exc:
                return err(exc.status, exc.message)
            return JSONResponse({"updated": len(records)})
        try:
            with emu.store.acting_as(SALESPERSON_USER), emu.store.transaction():
                ids = [emu.store.create(set_name, r, validate=False)[emu.store.entity(set_name).primary_id]
                       for r in records]
        except ApiError as exc:
            return err(exc.status, exc.message)
        return JSONResponse({"ids": ids}, status_code=201)

    async def one(request: Request) -> Response:
        set_name = entity_set(request)
        if set_name is None:
            return err(404, "unknown entity set")
        rid = str(request.path_params["id"]).lower()
        try:
            with emu.store.acting_as(SALESPERSON_USER):
                if request.method == "GET":
                    row = emu.store.get(set_name, rid)
                    return JSONResponse(record(set_name, row)) if row else err(404, "not found")
                if request.method == "PATCH":
                    row = emu.store.update(set_name, rid, await body(request), validate=False)
                    return JSONResponse(record(set_name, row))
                emu.store.delete(set_name, rid)
                return Response(status_code=204)
        except ApiError as exc:
            return err(exc.status, exc.message)

    async def qualify(request: Request) -> Response:
        """Qualify as a salesperson would: into a new contact, or with {"existing_contact": id}
        into that contact (the lead's Existing Contact is set first and no contact is created)."""
        import json

        rid = str(request.path_params["id"])
        existing = (await body(request)).get("existing_contact")
        with emu.store.acting_as(SALESPERSON_USER):
            if existing:
                patch = json.dumps({"parentcontactid@odata.bind": f"/contacts({existing})"}).encode()
                resp = emu.webapi.dispatch(Req("PATCH", f"leads({rid})", [], {"if-match": "*"}, patch))
                if resp.status >= 300:
                    return Response(resp.body, status_code=resp.status, media_type="application/json")
            action = {"CreateAccount": False, "CreateContact": not existing, "CreateOpportunity": False, "Status": 3}
            resp = emu.webapi.dispatch(Req("POST", f"leads({rid})/Microsoft.Dynamics.CRM.QualifyLead", [], {},
                                           json.dumps(action).encode()))
        if resp.status != 200:
            return Response(resp.body, status_code=resp.status, media_type="application/json")
        created = json.loads(resp.body)["value"]
        return JSONResponse({"contactid": created[0]["contactid"] if created else existing})

    async def merge(request: Request) -> Response:
        """A salesperson's merge: the Web API's Merge action with the body the UI would send."""
        payload = json.dumps(await body(request)).encode()
        with emu.store.acting_as(SALESPERSON_USER):
            resp = emu.webapi.dispatch(Req("POST", "Merge", [], {}, payload))
        if resp.status != 204:
            return Response(resp.body, status_code=resp.status, media_type="application/json")
        return Response(status_code=204)

    return [
        Route("/_admin/reset", reset, methods=["POST"]),
        Route("/_admin/stats", stats, methods=["GET"]),
        Route("/_admin/faults", faults, methods=["POST", "DELETE"]),
        Route("/_admin/limits", limits, methods=["POST"]),
        Route("/_admin/keys", keys, methods=["POST"]),
        Route("/_admin/metadata", metadata, methods=["POST"]),
        Route("/_admin/metadata/{entity}/{attribute}", drop_column, methods=["DELETE"]),
        Route("/_admin/privileges", privileges, methods=["POST", "DELETE"]),
        Route("/_admin/plugins", plugins, methods=["POST", "DELETE"]),
        Route("/_admin/duplicate-rules", duplicate_rules, methods=["POST", "DELETE"]),
        Route("/_admin/entities/{entity}/change-tracking", change_tracking, methods=["POST"]),
        Route("/_admin/expire-delta-tokens", expire, methods=["POST"]),
        Route("/_admin/tokens/revoke", revoke, methods=["POST"]),
        Route("/_admin/leads/{id}/qualify", qualify, methods=["POST"]),
        Route("/_admin/merge", merge, methods=["POST"]),
        Route("/_admin/{set}/bulk", bulk, methods=["POST", "PATCH"]),
        Route("/_admin/{set}/{id}", one, methods=["GET", "PATCH", "DELETE"]),
        Route("/_admin/{set}", collection, methods=["GET", "POST"]),
    ]
