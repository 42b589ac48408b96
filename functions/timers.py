"""Timer triggers: poll each side's change feed and enqueue work; the Marketo one also finishes
real-time requests whose calls died, the Dataverse one drains event ids left behind."""

from __future__ import annotations

import logging
import time
import uuid

import azure.functions as func

from shared import telemetry
from shared.config import poll_schedule
from shared.runtime import services
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO
from shared.sync.finish import finish_due
from shared.sync.poison import note_unlogged_poison
from shared.sync.poll import PollReport, poll_dataverse, poll_marketo
from shared.sync.report import send_outbox

bp = func.Blueprint()
log = logging.getLogger("leadsync")


def _report(side: str, reports: list[PollReport], timer: func.TimerRequest, started: float) -> None:
    op = uuid.uuid4().hex[:12]
    telemetry.poll_duration.record((time.perf_counter() - started) * 1000, {"side": side})
    for r in reports:
        telemetry.changes_seen.add(r.changed + r.deleted, {"feed": r.feed})
        log.info("op=%s poll %s: %d changed, %d deleted -> %d messages%s%s", op, r.feed, r.changed, r.deleted,
                 r.messages, " (late)" if timer.past_due else "", "".join(f"; {n}" for n in r.notes),
                 extra=telemetry.op(op, feed=r.feed, changed=r.changed, deleted=r.deleted, messages=r.messages,
                                    rebaselined=r.rebaselined, past_due=timer.past_due))


@bp.timer_trigger(schedule=poll_schedule("MARKETO_POLL_SCHEDULE"), arg_name="timer", run_on_startup=False,
                  use_monitor=True)
def poll_marketo_changes(timer: func.TimerRequest) -> None:
    started = time.perf_counter()
    _report("marketo", poll_marketo(services()), timer, started)
    note_unlogged_poison(services(), (FROM_MARKETO, FROM_DYNAMICS))
    finish_due(services())  # real-time requests whose calls died before answering
    send_outbox(services())  # the webhook's Marketo Activity Log entries, batched


@bp.timer_trigger(schedule=poll_schedule("DATAVERSE_POLL_SCHEDULE"), arg_name="timer", run_on_startup=False,
                  use_monitor=True)
def poll_dataverse_changes(timer: func.TimerRequest) -> None:
    started = time.perf_counter()
    _report("dataverse", poll_dataverse(services()), timer, started)
    services().events.sweep()  # event ids whose drain message was lost (cheap: one query per lane)
