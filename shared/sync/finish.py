"""Real-time requests taken but not answered, finished by the app (`shared.state.pending`).

`accept_and_sync` is what the `sync-person` endpoint runs: record the request, serve it,
and forget it once answered. `finish_due` is what the Marketo poll timer runs for requests
whose calls died: the same `sync_person`, without waiting on another call's claim (a timer
and not a queue function: on Flex Consumption a queue function is a scale group of its own,
with a Marketo budget of its own). A person still
held by a live call, or a pause, puts the request back for later; an error is retried with
a growing delay and, after MAX_TRIES, logged as a failure for the person (never dropped).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from shared import telemetry
from shared.errors import BadMessage, TransientError
from shared.runtime import Services
from shared.state import activity
from shared.state.activity import Entry
from shared.state.links import CREATING, person_key
from shared.state.pending import PENDING_QUEUE, Pending
from shared.sync.poison import park_bad_message
from shared.sync.realtime import Result, sync_linked, sync_person

log = logging.getLogger("leadsync")

BUSY_RETRY_S = 30  # another call holds the person: look again once its claim has had time
MAX_TRIES = 5


def accept_and_sync(svc: Services, lead_id: int, *, operation_id: str) -> Result:
    """Serve one webhook call; if this call dies before answering, the app finishes it later.

    A person already linked is answered from its link, with nothing written anywhere: such a
    call leaves nothing to finish, so it records no request (two queue calls saved).
    """
    existing = svc.links.get(lead_id)
    if existing is not None and existing.state != CREATING:
        return sync_linked(svc, lead_id, existing, operation_id=operation_id)
    request = Pending(lead_id, operation_id)
    receipt = svc.pending.accept(request)
    log.info("op=%s sync-person m%d accepted: the app finishes it if this call dies", operation_id, lead_id)
    # The link read above still holds: only the atomic claim decides who creates the lead.
    result = sync_linked(svc, lead_id, existing, operation_id=operation_id)
    svc.pending.done(receipt)
    # Marketo will not call again: after a pause, or while Dynamics is unavailable, the app does it.
    if result.status in ("paused", "unavailable"):
        svc.pending.later(request, _later_s(result))
    return result


def finish_due(svc: Services, *, limit: int = 32, hold_s: int = 300) -> int:
    """Finish up to `limit` accepted requests whose calls died; how many were taken."""
    messages = svc.pending.due(limit, hold_s=hold_s)
    for message in messages:
        finish(svc, str(message.content).encode("utf-8", "surrogatepass"), message_id=message.id)
        svc.pending.remove(message)
    return len(messages)


def finish(svc: Services, body: bytes, *, message_id: str | None) -> None:
    """Finish an accepted request whose call never answered (a pending message that surfaced)."""
    try:
        request = Pending.from_json(body)
    except BadMessage as exc:
        park_bad_message(svc, PENDING_QUEUE, body, exc.reason, message_id=message_id)
        return
    try:
        result = sync_person(svc, request.lead_id, operation_id=request.operation_id, wait_s=0)
    except Exception as exc:  # whatever it is, the request is retried or logged: never dropped
        _failed(svc, request, exc)
        return
    if result.status == "busy":
        svc.pending.later(request, BUSY_RETRY_S)
    elif result.status == "paused":
        svc.pending.later(request, _later_s(result))
    elif result.status == "unavailable":  # Dynamics still down: counted, so it is not tried for ever
        _failed(svc, request, TransientError(str(result.body.get("error") or "Dynamics is unavailable")))
        return
    log.info("op=%s sync-person m%d finished after its call died -> %s", request.operation_id, request.lead_id,
             result.status, extra=telemetry.op(request.operation_id, person=f"m{request.lead_id}",
                                               status=result.status, finished_later=True))


def _later_s(result: Result) -> int:
    """When to try a put-back request again: a pause's next look, not its reset (a quota can
    come back early, and the reset is only what our clock says)."""
    return result.look_again_s or result.retry_after or BUSY_RETRY_S


def _failed(svc: Services, request: Pending, exc: Exception) -> None:
    tries = request.tries
    if tries < MAX_TRIES:
        svc.pending.later(replace(request, tries=tries + 1), 60 * tries)
        log.warning("op=%s sync-person m%d not finished (try %d of %d, again in %d s): %s", request.operation_id,
                    request.lead_id, tries, MAX_TRIES, 60 * tries, exc)
        return
    message = (f"real-time request not finished after {tries} tries: {exc}; "
               "run the person through the campaign's webhook step again")
    svc.activity.write([Entry(person_key(request.lead_id), activity.REJECTED, message,
                              direction="marketo->dynamics",
                              details={"operation_id": request.operation_id, "tries": tries})])
    log.error("op=%s sync-person m%d: %s", request.operation_id, request.lead_id, message)
