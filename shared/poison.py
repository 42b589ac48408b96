"""Messages we cannot interpret go straight to `<queue>-poison`, with their reason recorded."""

from __future__ import annotations

import logging

from shared import activity, telemetry
from shared.activity import Entry
from shared.runtime import Services

log = logging.getLogger("leadsync")
POISON_PERSON = "poison"
# The words a work message's reason may quote as what was expected: never a person's data.
VOCABULARY = frozenset({"marketo", "dynamics", "changed", "deleted", "lead", "contact"})


def park_bad_message(svc: Services, queue: str, body: bytes, reason: str, *, message_id: str | None) -> None:
    """Copy the body unchanged to the poison queue and log why; the caller then returns.

    The log line and the activity entry carry the reason and the body with their values
    masked (`telemetry.redact_body`): a malformed message can hold anything, names included."""
    text = body.decode("utf-8", errors="replace")
    svc.storage.queue(f"{queue}-poison").send_message(text)
    why = telemetry.redact(reason, quoted=True, keep=VOCABULARY)
    svc.activity.write([Entry(POISON_PERSON, activity.PARKED, f"bad message on {queue}: {why}",
                              details={"queue": queue, "message_id": message_id,
                                       "body": telemetry.redact_body(text)[:2000]})])
    log.error("message %s on %s moved to %s-poison: %s", message_id, queue, queue, why)
