"""Accepted real-time requests: each one is finished by the app, even if the call that took it dies.

Marketo calls a webhook once and never again, so a `sync-person` call that dies (a host
kill, a scale-in, a transient error answered with 500) would leave its person without a
lead until the campaign runs again. Before it writes anything the endpoint puts a
message on `leadsync-realtime-pending`, invisible for `finish_after_s`; a call that
reaches an answer deletes it. A person already linked needs none: its call only reads.
A message that becomes visible belongs to a call that did not: the Marketo poll timer
(`shared.sync.finish.finish_due`) runs the same request again. The request is idempotent
(a claim and an email lookup decide who creates the lead), so a person gets exactly one
lead however many times it runs.

    leadsync-realtime-pending    {"v": 1, "leadId": 1042, "op": "<operation id of the call>", "try": 1}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueMessage

from shared.errors import BadMessage
from shared.state.storage import Storage
from shared.state.workqueue import json_object

PENDING_QUEUE = "leadsync-realtime-pending"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Pending:
    """One accepted request: the person, the operation id of the call that accepted it, and
    how many times the app has tried to finish it."""

    lead_id: int
    operation_id: str
    tries: int = 1

    def to_json(self) -> str:
        return json.dumps({"v": SCHEMA_VERSION, "leadId": self.lead_id, "op": self.operation_id, "try": self.tries},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Pending:
        """Parse a pending message; BadMessage says exactly what is wrong."""
        body = json_object(text)
        if body.get("v") != SCHEMA_VERSION:
            raise BadMessage(f"not a version {SCHEMA_VERSION} pending request")
        lead_id, op = body.get("leadId"), body.get("op")
        if type(lead_id) is not int or lead_id <= 0:
            raise BadMessage(f"leadId must be a positive integer, got {lead_id!r}")
        if not isinstance(op, str) or not op:
            raise BadMessage("op must be a non-empty string")
        tries = body.get("try", 1)
        if type(tries) is not int or tries < 1:
            raise BadMessage(f"try must be a positive integer, got {tries!r}")
        return cls(lead_id, op, tries)


@dataclass(frozen=True)
class Receipt:
    """What deletes an accepted request's message once its call has answered."""

    message_id: str
    pop_receipt: str


class PendingRequests:
    def __init__(self, storage: Storage, *, finish_after_s: int = 150) -> None:
        self._queue = storage.queue(PENDING_QUEUE)
        self.finish_after_s = finish_after_s

    def accept(self, request: Pending) -> Receipt:
        """Record the request; unless `done` is called in time, the app finishes it itself."""
        sent = self._queue.send_message(request.to_json(), visibility_timeout=self.finish_after_s)
        return Receipt(sent.id, str(sent.pop_receipt))

    def done(self, receipt: Receipt) -> None:
        """The call answered: nothing is left to finish."""
        try:
            self._queue.delete_message(receipt.message_id, receipt.pop_receipt)
        except ResourceNotFoundError:
            pass  # already gone: the finisher took it (the call outlived `finish_after_s`)

    def later(self, request: Pending, delay_s: int) -> None:
        """Try again in `delay_s` (as a new message, so its dequeue count starts again)."""
        self._queue.send_message(request.to_json(), visibility_timeout=delay_s)

    def due(self, limit: int, *, hold_s: int) -> list[QueueMessage]:
        """Up to `limit` requests whose calls never answered, hidden from others for `hold_s`."""
        return list(self._queue.receive_messages(messages_per_page=limit, max_messages=limit,
                                                 visibility_timeout=hold_s))

    def remove(self, message: QueueMessage) -> None:
        """A surfaced request was finished (or put back as a new message): delete this copy."""
        try:
            self._queue.delete_message(message)
        except ResourceNotFoundError:
            pass  # held longer than `hold_s`: another finisher took and removed it
