"""HTTP triggers: real-time lead creation for Marketo's webhook."""

from __future__ import annotations

import json
import logging
import uuid

import azure.functions as func

from shared import telemetry
from shared.errors import BadMessage
from shared.runtime import services
from shared.sync.finish import accept_and_sync
from shared.sync.realtime import SECRET_HEADER, parse_body, webhook_secret_ok

bp = func.Blueprint()
log = logging.getLogger("leadsync")


def _json(status: int, body: dict[str, object], *, retry_after: int | None = None) -> func.HttpResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=headers)


@bp.route(route="sync-person", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sync_person_http(req: func.HttpRequest) -> func.HttpResponse:
    svc = services()
    if not webhook_secret_ok(svc.settings.webhook_secret, req.headers.get(SECRET_HEADER)):
        return _json(401, {"status": "unauthorized", "error": f"missing or wrong {SECRET_HEADER} header"})
    try:
        lead_id = parse_body(req.get_body())
    except BadMessage as exc:
        return _json(400, {"status": "bad_request", "error": exc.reason})
    op = uuid.uuid4().hex[:12]
    result = accept_and_sync(svc, lead_id, operation_id=op)
    log.info("op=%s sync-person m%d -> %s", op, lead_id, result.status,
             extra=telemetry.op(op, person=f"m{lead_id}", status=result.status))
    return _json(result.http_status, {**result.body, "operationId": op}, retry_after=result.retry_after)
