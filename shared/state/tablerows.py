"""Single-row table reads and writes through the public `TableClient` API.

Why: the link store branches on "missing", "exists" and "changed since my ETag", so those
come back here as values (None, `Conflict`) instead of the SDK's exceptions; every other
failure raises the SDK's `HttpResponseError` family unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, UpdateMode

__all__ = ["Conflict", "create", "get", "replace", "upsert"]


class Conflict(Exception):
    """The row changed (or went) since the ETag the write was conditional on."""


def get(table: TableClient, partition_key: str, row_key: str) -> TableEntity | None:
    """The row, with its ETag in `.metadata`; None if there is none."""
    try:
        return table.get_entity(partition_key, row_key)
    except ResourceNotFoundError:
        return None


def create(table: TableClient, row: Mapping[str, Any]) -> str | None:
    """Insert the row; its ETag, or None if a row with its keys exists (atomic insert-if-absent)."""
    try:
        return _etag(table.create_entity(row))
    except ResourceExistsError:
        return None


def replace(table: TableClient, row: Mapping[str, Any], etag: str) -> str:
    """Replace the row if its ETag is still `etag`; the new ETag. Conflict if it changed or went."""
    try:
        return _etag(table.update_entity(row, mode=UpdateMode.REPLACE, etag=etag,
                                         match_condition=MatchConditions.IfNotModified))
    except (ResourceModifiedError, ResourceNotFoundError) as exc:
        raise Conflict(f"{row['PartitionKey']}/{row['RowKey']} changed since ETag {etag}") from exc


def upsert(table: TableClient, row: Mapping[str, Any]) -> str:
    """Insert or replace the whole row; its new ETag."""
    return _etag(table.upsert_entity(row, mode=UpdateMode.REPLACE))


def _etag(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("etag") or "")
