"""One work message from a queue trigger: parse it, apply it, or put it aside.

A message that cannot be parsed goes to the poison queue at once, with its reason: retrying
it would only fail the same way. While Marketo's daily quota is used up
(`shared.state.pause`), a message is put back until the next re-check instead, never
counted towards poison. Anything else that raises is left to the host, which retries the
message and poisons it after maxDequeueCount tries.
"""

from __future__ import annotations

import logging
import time

from shared import telemetry
from shared.errors import BadMessage, QuotaExhausted
from shared.runtime import Services
from shared.state.pause import Pause, defer
from shared.state.workqueue import Work
from shared.sync import sampling
from shared.sync.apply import apply_work
from shared.sync.poison import park_bad_message

log = logging.getLogger("leadsync")


def handle_message(svc: Services, queue: str, body: bytes, *, message_id: str | None,
                   dequeue_count: int | None) -> None:
    """Apply the work message `body` that arrived on `queue`; returns normally unless the
    host should retry it (a transient error propagates)."""
    try:
        work = Work.from_json(body)
    except BadMessage as exc:
        park_bad_message(svc, queue, body, exc.reason, message_id=message_id)
        return
    gate = svc.pauses.gate()
    if not gate.go and gate.pause is not None:
        _defer(svc, queue, work, gate.pause, dequeue_count)
        return
    started = time.perf_counter()
    try:
        out = apply_work(svc, work)
    except QuotaExhausted as exc:
        _defer(svc, queue, work, svc.pauses.quota_exhausted(exc), dequeue_count)
        return
    svc.pauses.resumed(gate)
    sampling.sample(svc)
    elapsed = (time.perf_counter() - started) * 1000
    telemetry.batch_duration.record(elapsed, {"source": work.source, "kind": work.kind})
    log.info("op=%s %s %s x%d in %.0f ms: %s", work.operation_id, work.source, work.kind, len(work.ids), elapsed,
             dict(out.counts), extra=telemetry.op(work.operation_id, source=work.source, kind=work.kind,
                                                  records=len(work.ids), dequeue_count=dequeue_count))


def _defer(svc: Services, queue: str, work: Work, pause: Pause, dequeue_count: int | None) -> None:
    delay = defer(svc.storage, queue, work.to_json(), pause)
    log.info("op=%s %s %s x%d deferred %d s: %s", work.operation_id, work.source, work.kind, len(work.ids), delay,
             pause.describe(), extra=telemetry.op(work.operation_id, source=work.source, kind=work.kind,
                                                  records=len(work.ids), deferred_s=delay,
                                                  dequeue_count=dequeue_count))
