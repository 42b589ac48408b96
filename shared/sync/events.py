"""Change events pushed by the two services: check a request, name the records it is about.

An event is a latency hint, never data: it names a record (a Marketo person id, or a
Dataverse lead/contact GUID) and whether it changed or was deleted; the appliers read both
sides fresh and merge against the base, so a duplicated, reordered, late, echoed or forged
event cannot carry a value into a write. Two wire formats:

    Dataverse  a RemoteExecutionContext (webhook step on Create/Update/Delete of lead or
               contact): MessageName, PrimaryEntityName, PrimaryEntityId, and who made the
               change (InitiatingUserId) are all we read. The body may arrive double-encoded
               (a JSON string holding the JSON object), which is accepted once.
               Delete -> "deleted", Create/Update -> "changed".
    Marketo    the Call Webhook payload `{"leadId": {{lead.Id}}}` (the same template as
               `sync-person`), from a trigger campaign on Data Value Changes / Person is
               Created. Always "changed"; a person not linked yet is left alone (the applier
               skips it, as for a poll), so an event never creates a Dynamics lead.

Anything else is a BadMessage whose reason the receiver returns as a 400.

A Dataverse change LeadSync made itself (its application user initiated it) is an echo: the
receiver drops it before it costs a read on either side (`shared.clients.ownuser`).
Marketo's webhook says nothing about who made a change, so its echoes are dropped later, by
the applier's base comparison (`shared.sync.echo.marketo_people_news`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from shared.errors import BadMessage
from shared.sync.realtime import parse_body

# Dataverse trims a context above 256 KB (header x-ms-dynamics-msg-size-exceeded), so a real
# one stays well under this; anything larger is not a Dataverse webhook.
MAX_DATAVERSE_BODY = 512 * 1024
ENTITIES = ("lead", "contact")
MESSAGES = {"Create": "changed", "Update": "changed", "Delete": "deleted"}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Event:
    """One record that changed (or was deleted) on one side."""

    source: str  # "marketo" | "dynamics"
    kind: str  # "changed" | "deleted"
    record_id: int | str  # Marketo person id, or a lower-case Dataverse GUID
    entity: str | None = None  # "lead" | "contact" for Dataverse
    initiated_by: str | None = None  # the Dataverse user who made the change (lower case), when the context says


def parse_dataverse(raw: bytes, headers: dict[str, str] | None = None) -> Event:
    """The record a Dataverse webhook call is about; BadMessage says what is wrong.

    `headers` (lower-case names) are cross-checked when present: an entity or message
    header that disagrees with the body is refused.
    """
    if len(raw) > MAX_DATAVERSE_BODY:
        raise BadMessage(f"body is larger than {MAX_DATAVERSE_BODY} bytes")
    body = _json(raw)
    if isinstance(body, str):  # double-encoded: a JSON string holding the context
        body = _json(body.encode("utf-8"), "double-encoded body")
        if not isinstance(body, dict):
            raise BadMessage("double-encoded body does not hold a JSON object (a RemoteExecutionContext)")
    if not isinstance(body, dict):
        raise BadMessage("body is not a JSON object (a RemoteExecutionContext)")
    message, entity, record_id = body.get("MessageName"), body.get("PrimaryEntityName"), body.get("PrimaryEntityId")
    if not isinstance(message, str) or message not in MESSAGES:  # a list or object is not hashable
        raise BadMessage(f"MessageName {message!r} is not one of {', '.join(MESSAGES)}")
    if not isinstance(entity, str) or entity not in ENTITIES:
        raise BadMessage(f"PrimaryEntityName {entity!r} is not 'lead' or 'contact'")
    if not isinstance(record_id, str) or not _GUID.fullmatch(record_id):
        raise BadMessage(f"PrimaryEntityId {record_id!r} is not a GUID")
    headers = headers or {}
    for header, value in (("x-ms-dynamics-entity-name", entity), ("x-ms-dynamics-request-name", message)):
        given = headers.get(header)
        if given is not None and given != value:
            raise BadMessage(f"header {header} {given!r} does not match the body's {value!r}")
    initiated_by = body.get("InitiatingUserId")
    if not isinstance(initiated_by, str) or not _GUID.fullmatch(initiated_by):
        initiated_by = None  # optional to us: without it the event is simply never taken for an echo
    return Event("dynamics", MESSAGES[message], record_id.lower(), entity,
                 initiated_by.lower() if initiated_by else None)


def parse_marketo(raw: bytes) -> Event:
    """The person a Marketo trigger campaign's webhook is about; BadMessage says what is wrong."""
    return Event("marketo", "changed", parse_body(raw))


def _json(raw: bytes, what: str = "body") -> Any:
    try:
        text = raw.decode("utf-8-sig")  # whether Dataverse sends a byte-order mark is not documented
    except UnicodeDecodeError:
        raise BadMessage(f"{what} is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BadMessage(f"{what} nests too deep") from None
    except ValueError:
        raise BadMessage(f"{what} is not JSON") from None
