"""Marketo Activity Log entries waiting to be written, up to 300 per Marketo call.

The real-time endpoint serves one person per call, so writing its entry to Marketo at once
costs a Marketo call per webhook: as many as the create itself, from the same 100 calls per
20 s. It stores the entry here instead (one table write) and the Marketo poll timer sends
what waits in batches (`shared.sync.report.send_outbox`), a poll interval later.

Table `<prefix>outbox`, PartitionKey "marketo-notes", RowKey "<ticks>-<random>" (oldest first).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from azure.data.tables import TableTransactionError

from shared.state.storage import Storage

PARTITION = "marketo-notes"


@dataclass(frozen=True)
class OutboxNote:
    """One Activity Log entry for a Marketo person; `row_key` is set once stored."""

    lead_id: int
    reason: str
    detail: str
    operation_id: str
    row_key: str = ""


class MarketoOutbox:
    def __init__(self, storage: Storage) -> None:
        self._table = storage.table("outbox")

    def put(self, notes: Iterable[OutboxNote]) -> None:
        rows = [{"PartitionKey": PARTITION, "RowKey": f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}",
                 "lead_id": n.lead_id, "reason": n.reason, "detail": n.detail, "operation_id": n.operation_id}
                for n in notes]
        if len(rows) == 1:
            self._table.create_entity(rows[0])
            return
        for start in range(0, len(rows), 100):  # one entity-group transaction per 100 rows
            self._table.submit_transaction([("create", row) for row in rows[start:start + 100]])

    def take(self, limit: int) -> list[OutboxNote]:
        """The oldest `limit` waiting entries (left in place until `remove`)."""
        out: list[OutboxNote] = []
        for e in self._table.query_entities("PartitionKey eq @p", parameters={"p": PARTITION},
                                            results_per_page=min(limit, 1000)):
            out.append(OutboxNote(int(e["lead_id"]), str(e["reason"]), str(e["detail"]), str(e["operation_id"]),
                                  str(e["RowKey"])))
            if len(out) >= limit:
                break
        return out

    def remove(self, notes: Iterable[OutboxNote]) -> None:
        keys = [n.row_key for n in notes]
        for start in range(0, len(keys), 100):
            chunk = keys[start:start + 100]
            try:
                self._table.submit_transaction([("delete", {"PartitionKey": PARTITION, "RowKey": k}) for k in chunk])
            except TableTransactionError:  # one was gone already (another timer sent it): delete the rest alone
                for k in chunk:
                    self._table.delete_entity(PARTITION, k)
