"""Change cursors: where each poller resumes (Marketo paging tokens, Dataverse delta links).

One small table, partition "cursor", one row per feed. A handful of rows written every
poll: no partition spreading needed. Saves carry the ETag read with the value, so two
overlapping pollers cannot move a cursor backwards; the loser gets StateConflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.errors import StateConflict
from shared.state.storage import Storage

MARKETO_CHANGES = "marketo-leadchanges"
MARKETO_DELETES = "marketo-deletedleads"
MARKETO_MERGES = "marketo-mergeleads"  # read with the deletes: a merge deletes its losers


def dataverse_feed(entity: str) -> str:
    return f"dataverse-{entity}"


@dataclass(frozen=True)
class Cursor:
    name: str
    value: str
    updated_at: datetime
    etag: str | None = None


class CursorStore:
    def __init__(self, storage: Storage) -> None:
        self._table = storage.table("cursors")

    def get(self, name: str) -> Cursor | None:
        try:
            e = self._table.get_entity("cursor", name)
        except ResourceNotFoundError:
            return None
        return Cursor(name, e["value"], e["updated_at"], e.metadata["etag"])

    def save(self, name: str, value: str, *, previous: Cursor | None) -> Cursor:
        """Store `value`; `previous` is the cursor this poll started from (None: first)."""
        now = datetime.now(UTC)
        entity = {"PartitionKey": "cursor", "RowKey": name, "value": value, "updated_at": now}
        try:
            if previous is None or previous.etag is None:
                meta = self._table.create_entity(entity)
            else:
                meta = self._table.update_entity(entity, mode=UpdateMode.REPLACE, etag=previous.etag,
                                                 match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise StateConflict(f"cursor {name} was moved by another poller") from exc
        return Cursor(name, value, now, meta.get("etag"))

    def delete(self, name: str) -> None:
        try:
            self._table.delete_entity("cursor", name)
        except ResourceNotFoundError:
            pass

    def all(self) -> list[Cursor]:
        return [Cursor(e["RowKey"], e["value"], e["updated_at"], e.metadata["etag"])
                for e in self._table.query_entities("PartitionKey eq 'cursor'")]
