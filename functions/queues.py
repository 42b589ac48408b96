"""Queue triggers: apply one work message (up to 300 people) to the other side.

Thin adapters: `shared.sync.messages.handle_message` parses, applies, defers during a quota
pause, or parks a message it cannot read.
"""

from __future__ import annotations

import azure.functions as func

from shared.runtime import services
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO
from shared.sync.messages import handle_message

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=FROM_MARKETO, connection="AzureWebJobsStorage")
def apply_from_marketo(msg: func.QueueMessage) -> None:
    handle_message(services(), FROM_MARKETO, msg.get_body(), message_id=msg.id, dequeue_count=msg.dequeue_count)


@bp.queue_trigger(arg_name="msg", queue_name=FROM_DYNAMICS, connection="AzureWebJobsStorage")
def apply_from_dynamics(msg: func.QueueMessage) -> None:
    handle_message(services(), FROM_DYNAMICS, msg.get_body(), message_id=msg.id, dequeue_count=msg.dequeue_count)
