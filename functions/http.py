"""HTTP triggers: real-time lead creation for Marketo's webhook."""

from __future__ import annotations

import json
import logging
import uuid

import azure.functions as func

from shared.errors import BadMessage
from shared.realtime import parse_body, sync_person
from shared.runtime import services

bp = func.Blueprint()
log = logging.getLogger("leadsync")


def _json(status: int, body: dict[str, object]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


@bp.route(route="sync-person", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def sync_person_http(req: func.HttpRequest) -> func.HttpResponse:
    try:
        lead_id = parse_body(req.get_body())
    except BadMessage as exc:
        return _json(400, {"status": "bad_request", "error": exc.reason})
    op = uuid.uuid4().hex[:12]
    result = sync_person(services(), lead_id, operation_id=op)
    log.info("op=%s sync-person %d -> %s", op, lead_id, result.status)
    return _json(result.http_status, {**result.body, "operationId": op})
