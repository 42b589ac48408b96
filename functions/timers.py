"""Timer triggers: poll each side's change feed and enqueue work."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.config import poll_schedule
from shared.poll import poll_dataverse, poll_marketo
from shared.runtime import services

bp = func.Blueprint()
log = logging.getLogger("leadsync")


@bp.timer_trigger(schedule=poll_schedule("MARKETO_POLL_SCHEDULE"), arg_name="timer", run_on_startup=False,
                  use_monitor=True)
def poll_marketo_changes(timer: func.TimerRequest) -> None:
    for report in poll_marketo(services()):
        log.info("poll %s: %d changed, %d deleted -> %d messages%s%s", report.feed, report.changed, report.deleted,
                 report.messages, " (late)" if timer.past_due else "", "".join(f"; {n}" for n in report.notes))


@bp.timer_trigger(schedule=poll_schedule("DATAVERSE_POLL_SCHEDULE"), arg_name="timer", run_on_startup=False,
                  use_monitor=True)
def poll_dataverse_changes(timer: func.TimerRequest) -> None:
    for report in poll_dataverse(services()):
        log.info("poll %s: %d changed, %d deleted -> %d messages%s%s", report.feed, report.changed, report.deleted,
                 report.messages, " (late)" if timer.past_due else "", "".join(f"; {n}" for n in report.notes))
