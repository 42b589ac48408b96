"""Messages we cannot interpret go straight to `<queue>-poison`, with their reason recorded."""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from collections.abc import Sequence

from azure.core.exceptions import AzureError

from shared import telemetry
from shared.errors import BadMessage
from shared.runtime import Services
from shared.state import activity
from shared.state.activity import Entry
from shared.state.workqueue import Work

log = logging.getLogger("leadsync")
POISON_PERSON = "poison"
# The words a work message's reason may quote as what was expected: never a person's data.
VOCABULARY = frozenset({"marketo", "dynamics", "changed", "deleted", "lead", "contact"})


def park_bad_message(svc: Services, queue: str, body: bytes, reason: str, *, message_id: str | None) -> None:
    """Copy the body unchanged to the poison queue and log why; the caller then returns.

    The log line and the activity entry carry the reason and the body with their values
    masked (`telemetry.redact_body`): a malformed message can hold anything, names included."""
    text = body.decode("utf-8", errors="replace")
    copy = svc.storage.queue(f"{queue}-poison").send_message(text)
    why = telemetry.redact(reason, quoted=True, keep=VOCABULARY)
    svc.activity.write([Entry(POISON_PERSON, activity.PARKED, f"bad message on {queue}: {why}",
                              details={"queue": queue, "message_id": message_id,
                                       "body": telemetry.redact_body(text)[:2000], "poison_message_id": copy.id})])
    log.error("message %s on %s moved to %s-poison: %s", message_id, queue, queue, why)


def decode_stored(content: str) -> str | None:
    """A stored message's text as the queue trigger reads it (base64 of UTF-8), or None
    when it is not that: the host then moves it to the poison queue without running us."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def fingerprint(content: str) -> str:
    """A short digest of a message as stored: identifies it in logs without showing it."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def note_unlogged_poison(svc: Services, queues: Sequence[str], *, peek: int = 32) -> int:
    """Give each poison message that has no activity entry one, with what we can tell of why.

    The Functions host moves a message to `<queue>-poison` by itself when it cannot decode
    it (not base64) or when every delivery failed, and says why only in its own log. The
    entry names the poison message's id, its size and digest, never its content, which may
    hold names. Returns the entries written; a message is noted once (by its id). A storage
    error is logged and left for the next call: the caller's own work is already done.
    """
    try:
        return _note(svc, queues, peek)
    except AzureError as exc:
        log.warning("poison messages not checked for activity entries: %s", type(exc).__name__)
        return 0


def _note(svc: Services, queues: Sequence[str], peek: int) -> int:
    waiting = [(q, m) for q in queues for m in svc.storage.raw_queue(f"{q}-poison").peek_messages(max_messages=peek)]
    if not waiting:
        return 0
    known = _known_poison(svc)
    entries = []
    for queue, m in waiting:
        content = str(m.content or "")
        text = decode_stored(content)
        if m.id in known[0] or (text is not None and (queue, telemetry.redact_body(text)[:2000]) in known[1]):
            continue
        size = len(content.encode("utf-8", "surrogatepass"))
        entries.append(Entry(POISON_PERSON, activity.PARKED, f"bad message on {queue}: {_why(text)}",
                             details={"queue": queue, "poison_message_id": m.id, "bytes": size,
                                      "sha256": fingerprint(content)}))
        log.error("message %s on %s-poison (sha256 %s, %d bytes) had no reason logged: %s", m.id, queue,
                  fingerprint(content), size, _why(text))
    svc.activity.write(entries)
    return len(entries)


def _why(text: str | None) -> str:
    if text is None:
        return "not base64-encoded UTF-8, so the host could not decode it and never ran the function"
    try:
        work = Work.from_json(text)
    except BadMessage:
        return "not a valid work message (`leadsync failures` says why)"  # the reason may quote its values
    return f"failed on every delivery (retries exhausted): see the function logs for op={work.operation_id}"


def _known_poison(svc: Services) -> tuple[set[str], set[tuple[str, str]]]:
    """Poison message ids already noted, and the (queue, body) of messages parked as unreadable."""
    ids: set[str] = set()
    bodies: set[tuple[str, str]] = set()
    for e in svc.activity.for_person(POISON_PERSON, limit=1000):
        if isinstance(e.details.get("poison_message_id"), str):
            ids.add(e.details["poison_message_id"])
        if isinstance(e.details.get("queue"), str) and isinstance(e.details.get("body"), str):
            bodies.add((e.details["queue"], e.details["body"]))
    return ids, bodies
