"""Queue triggers: apply one work message (up to 300 people) to the other side.

A message that cannot be parsed is moved to the poison queue at once, with its reason in
the log and the activity table: retrying it would only fail the same way. While Marketo's
daily quota is used up (`shared.state.pause`), a message is put back until the next re-check
instead, never counted towards poison. Anything else that raises is retried by the host
and poisoned after maxDequeueCount tries.
"""

from __future__ import annotations

import logging
import time

import azure.functions as func

from shared import telemetry
from shared.errors import BadMessage, QuotaExhausted
from shared.runtime import Services, services
from shared.state.pause import Pause, defer
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, Work
from shared.sync.apply import apply_work
from shared.sync.poison import park_bad_message

bp = func.Blueprint()
log = logging.getLogger("leadsync")


def _handle(queue: str, msg: func.QueueMessage) -> None:
    svc = services()
    body = msg.get_body()
    try:
        work = Work.from_json(body)
    except BadMessage as exc:
        park_bad_message(svc, queue, body, exc.reason, message_id=msg.id)
        return
    gate = svc.pauses.gate()
    if not gate.go and gate.pause is not None:
        _defer(svc, queue, work, gate.pause, msg)
        return
    started = time.perf_counter()
    try:
        out = apply_work(svc, work)
    except QuotaExhausted as exc:
        _defer(svc, queue, work, svc.pauses.quota_exhausted(exc), msg)
        return
    svc.pauses.resumed(gate)
    elapsed = (time.perf_counter() - started) * 1000
    telemetry.batch_duration.record(elapsed, {"source": work.source, "kind": work.kind})
    log.info("op=%s %s %s x%d in %.0f ms: %s", work.operation_id, work.source, work.kind, len(work.ids), elapsed,
             dict(out.counts), extra=telemetry.op(work.operation_id, source=work.source, kind=work.kind,
                                                  records=len(work.ids), dequeue_count=msg.dequeue_count))


def _defer(svc: Services, queue: str, work: Work, pause: Pause, msg: func.QueueMessage) -> None:
    delay = defer(svc.storage, queue, work.to_json(), pause)
    log.info("op=%s %s %s x%d deferred %d s: %s", work.operation_id, work.source, work.kind, len(work.ids), delay,
             pause.describe(), extra=telemetry.op(work.operation_id, source=work.source, kind=work.kind,
                                                  records=len(work.ids), deferred_s=delay,
                                                  dequeue_count=msg.dequeue_count))


@bp.queue_trigger(arg_name="msg", queue_name=FROM_MARKETO, connection="AzureWebJobsStorage")
def apply_from_marketo(msg: func.QueueMessage) -> None:
    _handle(FROM_MARKETO, msg)


@bp.queue_trigger(arg_name="msg", queue_name=FROM_DYNAMICS, connection="AzureWebJobsStorage")
def apply_from_dynamics(msg: func.QueueMessage) -> None:
    _handle(FROM_DYNAMICS, msg)
