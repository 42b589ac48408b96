"""Webhook delivery: after each committed Create/Update/Delete of a lead or contact, one POST per
enabled step registered on that message and table (sdk_tables), asynchronously.

Source: Microsoft's "Use webhooks" (headers, authentication, 60 s timeout, one more attempt on
502/503/504, no ordering guarantee). Emulator choices: every step is delivered after the commit
(also mode 0 and stages 10/20, which the service runs inside the transaction); `x-request-id` stays the
same on the retry [unverified]; a `duplicate` fault resends the same body and headers.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..jsonresp import JSONResponse
from ..outbound import Call, EventFault, Outbound
from . import sdk_tables
from .events import Encoder, Origin, StepInfo, context
from .store import Change, Store

EVENT_SETS = {"leads", "contacts"}
TIMEOUT_S = 60.0
CONCURRENCY = 10  # parallel async-service jobs [unverified]; the docs promise no number


class Webhooks:
    def __init__(self, store: Store, origin: Origin) -> None:
        self.store = store
        self.origin = origin
        self.encoder = Encoder(store)
        self.outbound = Outbound("dataverse", concurrency=CONCURRENCY, timeout_s=TIMEOUT_S,
                                 retry_statuses=frozenset({502, 503, 504}))
        ext = sdk_tables.extension()
        ext.on_commit = self.notify
        store.extend(ext)

    def _steps(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(message, entity, step row) of every enabled step."""
        out = []
        for step in self.store.rows["sdkmessageprocessingsteps"].values():
            if step["statecode"] == 0:
                message, entity = sdk_tables.step_target(self.store, step)
                out.append((message, entity, step))
        return out

    def notify(self, changes: list[Change]) -> None:
        """Called by the store (under its lock) with the changes one commit made; queues the calls."""
        if not self.store.rows.get("sdkmessageprocessingsteps"):
            return  # none registered (or a snapshot from before these tables was restored)
        steps = self._steps()
        for change in changes:
            if change.set_name not in EVENT_SETS:
                continue
            entity = self.store.by_set[change.set_name]
            submitted = {entity.readable()[c].logical_name for c in change.submitted if c in entity.readable()}
            correlation_id, request_id = str(uuid.uuid4()), str(uuid.uuid4())
            for message, logical, step in steps:
                if message != change.message or logical != entity.logical_name:
                    continue
                wanted = {c.strip() for c in (step["filteringattributes"] or "").split(",") if c.strip()}
                if message == "Update" and wanted and not wanted & submitted:
                    continue
                self._queue(change, step, correlation_id, request_id)

    def _queue(self, change: Change, step: dict[str, Any], correlation_id: str, request_id: str) -> None:
        endpoint = self.store.rows["serviceendpoints"][step["_eventhandler_value"]]
        step_id = step["sdkmessageprocessingstepid"]
        images = [i for i in self.store.rows["sdkmessageprocessingstepimages"].values()
                  if i["_sdkmessageprocessingstepid_value"] == step_id]
        info = StepInfo(step_id, step["name"], step["stage"], step["mode"], images)
        body, trimmed = context(self.encoder, change, info, self.origin, correlation_id, request_id)
        entity = self.store.by_set[change.set_name].logical_name
        headers = {
            "Content-Type": "application/json",
            "x-request-id": str(uuid.uuid4()),
            "x-ms-dynamics-organization": self.origin.organization,
            "x-ms-dynamics-entity-name": entity,
            "x-ms-dynamics-request-name": change.message,
            "x-ms-correlation-request-id": correlation_id,
        }
        if trimmed:
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
        url, auth = endpoint["url"], endpoint["authvalue"]
        sep = "&" if "?" in url else "?"
        if endpoint["authtype"] == sdk_tables.AUTH_WEBHOOKKEY:
            url = f"{url}{sep}code={quote(auth, safe='')}"
        elif endpoint["authtype"] == sdk_tables.AUTH_HTTPHEADER:
            headers.update(sdk_tables.parse_settings(auth))
        else:
            url = f"{url}{sep}{urlencode(sdk_tables.parse_settings(auth))}"
        self.outbound.submit(Call("POST", url, headers, body, label=f"{entity} {change.message}",
                                  on_failed=lambda why: self._failed(step_id, info.name, why)))

    def _failed(self, step_id: str, name: str, why: str) -> None:
        """An async step's failed system job stays readable (statuscode 31), as in Dataverse."""
        self.store.insert_system_row("asyncoperations", {
            "asyncoperationid": str(uuid.uuid4()), "name": name, "operationtype": 1, "statecode": 3,
            "statuscode": 31, "message": f"Webhook call failed: {why}",
            "friendlymessage": "The plug-in execution failed because the webhook call did not succeed.",
            "_owningextensionid_value": step_id})


def webhook_routes(hooks: Webhooks) -> list[Route]:
    """/_admin/webhooks/faults: POST {"kind": drop|duplicate|reorder|delay, "count"|"rate", "delay_s"}, DELETE."""

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            hooks.outbound.clear_faults()
            return Response(status_code=204)
        doc = await request.json() if await request.body() else {}
        if not isinstance(doc, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        try:
            fault = EventFault(kind=str(doc.get("kind", "")),
                               count=int(doc["count"]) if doc.get("count") is not None else None,
                               rate=float(doc["rate"]) if doc.get("rate") is not None else None,
                               delay_s=float(doc.get("delay_s") or 0.0))
            hooks.outbound.add_fault(fault)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(vars(fault), status_code=201)

    async def stats(request: Request) -> Response:
        return JSONResponse(hooks.outbound.stats())

    return [Route("/_admin/webhooks/faults", faults, methods=["POST", "DELETE"]),
            Route("/_admin/webhooks/stats", stats, methods=["GET"])]
