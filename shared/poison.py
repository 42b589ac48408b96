"""Messages we cannot interpret go straight to `<queue>-poison`, with their reason recorded."""

from __future__ import annotations

import logging

from shared import activity
from shared.activity import Entry
from shared.runtime import Services

log = logging.getLogger("leadsync")
POISON_PERSON = "poison"


def park_bad_message(svc: Services, queue: str, body: bytes, reason: str, *, message_id: str | None) -> None:
    """Copy the body unchanged to the poison queue and log why; the caller then returns."""
    text = body.decode("utf-8", errors="replace")
    svc.storage.queue(f"{queue}-poison").send_message(text)
    svc.activity.write([Entry(POISON_PERSON, activity.PARKED, f"bad message on {queue}: {reason}",
                              details={"queue": queue, "message_id": message_id, "body": text[:2000]})])
    log.error("message %s on %s moved to %s-poison: %s", message_id, queue, queue, reason)
