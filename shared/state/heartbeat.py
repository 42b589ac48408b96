"""Poll heartbeats: one row per feed saying when it was last polled and what it found.

Why: a poll that finds nothing does not move its cursor, so without a heartbeat the health
page would call a quiet feed stale.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from azure.data.tables import UpdateMode

from shared.state.storage import Storage

HEARTBEAT_PREFIX = "heartbeat-"


def record_poll(storage: Storage, feed: str, changed: int, deleted: int, *, at: datetime | None = None) -> None:
    """Note that `feed` was polled (found `changed`/`deleted` ids); the pollers call this each run.

    One row per feed, replaced every time (last writer wins: two overlapping polls both ran).
    """
    moment = at or datetime.now(UTC)
    storage.table("cursors").upsert_entity(
        {"PartitionKey": "cursor", "RowKey": HEARTBEAT_PREFIX + feed, "updated_at": moment,
         "value": json.dumps({"changed": changed, "deleted": deleted})},
        mode=UpdateMode.REPLACE,
    )
