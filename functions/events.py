"""Change events from both services: one HTTP receiver per source, and the drain that packs
their ids into work messages (`shared.state.eventbuffer`).

    POST /api/events/dataverse   a Dataverse webhook step's RemoteExecutionContext
    POST /api/events/marketo     a Marketo trigger campaign's `{"leadId": {{lead.Id}}}`

Both need the function key (`?code=`, as Dataverse's WebhookKey auth sends it, or the
`x-functions-key` header) and, when LEADSYNC_WEBHOOK_SECRET is set, the `x-leadsync-secret`
header. They answer 202 once the id is buffered (or, `"status": "ignored"`, for a Dataverse
change LeadSync's own user made), 401/400 with a JSON reason for a bad call, 503 when
storage cannot take it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.errors import BadMessage
from shared.runtime import services
from shared.state.eventbuffer import DRAIN_QUEUE, lane_of, parse_drain
from shared.state.workqueue import Work
from shared.sync.events import Event, parse_dataverse, parse_marketo
from shared.sync.messages import handle_message
from shared.sync.poison import park_bad_message
from shared.sync.realtime import SECRET_HEADER, webhook_secret_ok

bp = func.Blueprint()
log = logging.getLogger("leadsync")


def _json(status: int, body: dict[str, object]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def _unavailable(exc: Exception) -> func.HttpResponse:
    """A 503: the one failure Dataverse tries again (once); the polls catch the change anyway."""
    log.error("event not buffered: storage: %s", type(exc).__name__)
    return _json(503, {"status": "unavailable", "error": "storage is unreachable; the change arrives by the poll"})


def _receive(req: func.HttpRequest, parse: Callable[[func.HttpRequest], Event]) -> func.HttpResponse:
    try:
        svc = services(checked=False)  # buffering an id needs storage only: answer even while a service is down
    except AzureError as exc:  # building the services opens the state tables
        return _unavailable(exc)
    if not webhook_secret_ok(svc.settings.webhook_secret, req.headers.get(SECRET_HEADER)):
        return _json(401, {"status": "unauthorized", "error": f"missing or wrong {SECRET_HEADER} header"})
    try:
        event = parse(req)
    except BadMessage as exc:
        return _json(400, {"status": "bad_request", "error": exc.reason})
    if svc.own_user.made(event.initiated_by):  # our own write coming back: no news for either side
        return _json(202, {"status": "ignored", "reason": "a change LeadSync made", "source": event.source,
                           "kind": event.kind, "entity": event.entity, "id": event.record_id})
    lane = lane_of(event.source, event.kind, event.entity)
    try:
        scheduled = svc.events.add(lane, [event.record_id])
    except AzureError as exc:
        return _unavailable(exc)
    log.debug("event %s %s buffered%s", lane.key, event.record_id, " (drain scheduled)" if scheduled else "")
    return _json(202, {"status": "accepted", "source": event.source, "kind": event.kind,
                       "entity": event.entity, "id": event.record_id})


@bp.route(route="events/dataverse", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def dataverse_events_http(req: func.HttpRequest) -> func.HttpResponse:
    return _receive(req, lambda r: parse_dataverse(r.get_body(), {k.lower(): v for k, v in r.headers.items()}))


@bp.route(route="events/marketo", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def marketo_events_http(req: func.HttpRequest) -> func.HttpResponse:
    return _receive(req, lambda r: parse_marketo(r.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name=DRAIN_QUEUE, connection="AzureWebJobsStorage")
def drain_events(msg: func.QueueMessage) -> None:
    svc = services(checked=False)
    try:
        request = parse_drain(msg.get_body())
    except BadMessage as exc:
        park_bad_message(svc, DRAIN_QUEUE, msg.get_body(), exc.reason, message_id=msg.id)
        return
    drained = svc.events.drain(request, apply=_apply_here)
    log.info("events %s: %d ids -> %d work messages, %d applied here%s%s", drained.lane, drained.ids,
             drained.messages, drained.applied, " (window stretched)" if drained.stretched else "",
             f" ({drained.held} ids left for the next window)" if drained.held else "")


def _apply_here(work: Work) -> None:
    """Apply a drained lane as its work queue's trigger would, saving that queue's hop."""
    handle_message(services(), work.queue, work.to_json().encode(), message_id=None, dequeue_count=None)
