"""Work messages: which records changed on which side, as JSON on the work queues.

    leadsync-from-marketo    {"v": 1, "source": "marketo",  "kind": "changed"|"deleted", "ids": [1042, …]}
                             {"v": 1, "source": "marketo",  "kind": "merged", "ids": [winner, loser, …]}
    leadsync-from-dynamics   {"v": 1, "source": "dynamics", "kind": "changed"|"deleted",
                              "entity": "lead"|"contact", "ids": ["<guid>", …]}

A message names records, never values: the applier reads both sides fresh, so a
duplicated, late or reordered message cannot carry stale data into a write. `v` is the
schema version; anything else is a BadMessage (the host moves it to the poison queue).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueMessage

from shared.errors import BadMessage
from shared.state.storage import Storage

SCHEMA_VERSION = 1
FROM_MARKETO = "leadsync-from-marketo"
FROM_DYNAMICS = "leadsync-from-dynamics"
MAX_IDS = 300  # one Marketo read (300 ids) per message
log = logging.getLogger("leadsync")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def json_object(text: str | bytes) -> dict[str, Any]:
    """A queue message's JSON object; BadMessage when it is not JSON or not an object."""
    try:
        body = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadMessage("not a JSON object")
    return body


@dataclass(frozen=True)
class Work:
    source: str  # "marketo" | "dynamics"
    kind: str  # "changed" | "deleted" | "merged" (Marketo: ids = winner, then the losers)
    ids: tuple[Any, ...]
    entity: str | None = None  # dynamics only
    reason: str = "poll"
    operation_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def queue(self) -> str:
        return FROM_MARKETO if self.source == "marketo" else FROM_DYNAMICS

    def to_json(self) -> str:
        body: dict[str, Any] = {"v": SCHEMA_VERSION, "source": self.source, "kind": self.kind,
                                "ids": list(self.ids), "reason": self.reason, "op": self.operation_id}
        if self.entity:
            body["entity"] = self.entity
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Work:
        """Parse and check a message; BadMessage says exactly what is wrong."""
        body = json_object(text)
        version = body.get("v")
        if type(version) is not int or version != SCHEMA_VERSION:
            raise BadMessage(f"schema version {version!r} is not {SCHEMA_VERSION}")
        source, kind, ids = body.get("source"), body.get("kind"), body.get("ids")
        if source not in ("marketo", "dynamics"):
            raise BadMessage(f"source {source!r} is not 'marketo' or 'dynamics'")
        if kind not in ("changed", "deleted", "merged") or (kind == "merged" and source != "marketo"):
            raise BadMessage(f"kind {kind!r} is not 'changed' or 'deleted' (or 'merged' from Marketo)")
        if kind == "merged" and (not isinstance(ids, list) or len(ids) < 2):
            raise BadMessage("a merged message names the winner, then at least one loser")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
            raise BadMessage(f"ids must be a list of 1 to {MAX_IDS} record ids")
        entity = body.get("entity")
        if source == "marketo":
            if not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids):
                raise BadMessage("Marketo ids must be positive integers")
            entity = None
        else:
            if entity not in ("lead", "contact"):
                raise BadMessage(f"entity {entity!r} is not 'lead' or 'contact'")
            if not all(isinstance(i, str) and _GUID.fullmatch(i) for i in ids):
                raise BadMessage("Dynamics ids must be GUIDs")
        reason = body.get("reason", "poll")
        op = body.get("op") or uuid.uuid4().hex[:12]
        return cls(source, kind, tuple(ids), entity, str(reason), str(op))


def chunked(source: str, kind: str, ids: Sequence[Any], *, entity: str | None = None,
            reason: str = "poll", size: int = MAX_IDS) -> list[Work]:
    unique = list(dict.fromkeys(ids))
    return [Work(source, kind, tuple(unique[i:i + size]), entity, reason) for i in range(0, len(unique), size)]


@dataclass(frozen=True)
class Held:
    """A work message sent invisible (`WorkQueues.send_held`), and the receipt that withdraws it."""

    queue: str
    message: QueueMessage


class WorkQueues:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def send(self, items: Sequence[Work], *, delay_s: int = 0) -> None:
        """Enqueue; `delay_s` keeps the messages invisible that long (a retry that should
        not spin while whatever blocked it clears)."""
        for item in items:
            self._storage.queue(item.queue).send_message(item.to_json(), visibility_timeout=delay_s or None)

    def send_held(self, item: Work, *, hold_s: int) -> Held:
        """Enqueue `item` invisible for `hold_s`: the safe copy of work applied meanwhile by
        whoever holds it, who then withdraws it (done) or releases it (failed); if the
        holder dies, the queue trigger applies it once the hold ends."""
        queue = self._storage.queue(item.queue)
        return Held(item.queue, queue.send_message(item.to_json(), visibility_timeout=hold_s))

    def withdraw(self, held: Held) -> None:
        """The held work was applied: delete its copy (if that fails, it is applied once more later)."""
        try:
            self._storage.queue(held.queue).delete_message(held.message)
        except AzureError as exc:
            log.warning("work %s: the applied copy stays and will be applied again (%s)", held.message.id,
                        type(exc).__name__)

    def release(self, held: Held) -> None:
        """Applying the held work failed: let the queue trigger have it now (or, if that fails, when the hold ends)."""
        try:
            self._storage.queue(held.queue).update_message(held.message, visibility_timeout=0)
        except AzureError as exc:
            log.warning("work %s: it waits for its hold to end (%s)", held.message.id, type(exc).__name__)

    def depth(self, name: str) -> int:
        props = self._storage.queue(name).get_queue_properties()
        return int(props.approximate_message_count or 0)
