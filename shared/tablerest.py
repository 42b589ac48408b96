"""Single-row reads and writes through the TableClient's pipeline, without the SDK's wrappers.

The link store makes one or two point requests per person (the index read of every
changed Dynamics record; claim, save and index write of every real-time create). Through
`TableClient.get_entity`/`create_entity` each costs ~0.95 ms of the app's CPU, and
create echoes the whole row back; sent here as plain requests through the same
pipeline (so authentication, retries and the transport stay the SDK's) they cost ~0.7 ms,
and a write asks for no content back (measured against Azurite: its own CPU per create
drops from ~1.1 to ~0.6 ms).

Outcomes the link store branches on come back as values (None for a missing row or an
existing one, `Conflict` for a failed ETag condition), not as exceptions; any other
failure raises the same `HttpResponseError` family the SDK raises.

Private names of azure-data-tables used here and in shared/tablebatch.py (requirements.txt
pins the version; tests/test_tablerest.py and tests/test_tablebatch.py exercise them):
`TableClient._client`, `TableClient._primary_hostname`, `_serialize._add_entity_properties`
and `_deserialize._convert_to_entity`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    map_error,
)
from azure.core.rest import HttpRequest, HttpResponse
from azure.data.tables import TableClient, TableEntity
from azure.data.tables._deserialize import _convert_to_entity
from azure.data.tables._serialize import _add_entity_properties

__all__ = ["Conflict", "create", "entity_json", "get", "host", "key", "replace", "send", "upsert"]

_ERRORS = {404: ResourceNotFoundError, 409: ResourceExistsError, 412: ResourceModifiedError}


class Conflict(Exception):
    """The row changed (or went) since the ETag the write was conditional on."""


def host(table: TableClient) -> str:
    return f"{table.scheme}://{table._primary_hostname}"  # noqa: SLF001 - see the module docstring


def key(value: str) -> str:
    """A PartitionKey or RowKey as it goes inside `(PartitionKey='...')` in a URL."""
    return quote(value.replace("'", "''"), safe="")


def send(table: TableClient, request: HttpRequest) -> tuple[HttpResponse, bytes]:
    response = table._client._client.send_request(request, stream=True)  # noqa: SLF001
    return response, response.read()


def get(table: TableClient, partition_key: str, row_key: str) -> TableEntity | None:
    """The row, with its ETag in `.metadata`; None if there is none."""
    response, body = send(table, HttpRequest("GET", _row_url(table, partition_key, row_key), headers=_headers(table)))
    if response.status_code == 404:
        return None
    _check(response, body, 200)
    entity: TableEntity = _convert_to_entity(json.loads(body))  # type: ignore[no-untyped-call]
    return entity


def create(table: TableClient, row: Mapping[str, Any]) -> str | None:
    """Insert the row; its ETag, or None if a row with its keys exists (atomic insert-if-absent)."""
    response, body = send(table, HttpRequest("POST", f"{host(table)}/{table.table_name}", headers={
        **_headers(table), "Content-Type": "application/json", "Prefer": "return-no-content"},
        content=entity_json(row).encode()))
    if response.status_code == 409:
        return None
    _check(response, body, 204)
    return str(response.headers.get("etag", ""))


def replace(table: TableClient, row: Mapping[str, Any], etag: str) -> str:
    """Replace the row if its ETag is still `etag`; the new ETag. Conflict if it changed or went."""
    response, body = _put(table, row, etag)
    if response.status_code in (404, 412):
        raise Conflict(f"{row['PartitionKey']}/{row['RowKey']} changed since ETag {etag}")
    _check(response, body, 204)
    return str(response.headers.get("etag", ""))


def upsert(table: TableClient, row: Mapping[str, Any]) -> str:
    """Insert or replace the whole row; its new ETag."""
    response, body = _put(table, row, None)
    _check(response, body, 204)
    return str(response.headers.get("etag", ""))


def _put(table: TableClient, row: Mapping[str, Any], etag: str | None) -> tuple[HttpResponse, bytes]:
    headers = {**_headers(table), "Content-Type": "application/json"}
    if etag is not None:
        headers["If-Match"] = etag
    return send(table, HttpRequest("PUT", _row_url(table, row["PartitionKey"], row["RowKey"]), headers=headers,
                                   content=entity_json(row).encode()))


def _row_url(table: TableClient, partition_key: str, row_key: str) -> str:
    return f"{host(table)}/{table.table_name}(PartitionKey='{key(partition_key)}',RowKey='{key(row_key)}')"


def _headers(table: TableClient) -> dict[str, str]:
    return {"x-ms-version": table.api_version, "DataServiceVersion": "3.0",
            "Accept": "application/json;odata=minimalmetadata"}


def entity_json(row: Mapping[str, Any]) -> str:
    """The row as the service takes it, property types annotated as the SDK writes them."""
    return json.dumps(_add_entity_properties(row), separators=(",", ":"))


def _check(response: HttpResponse, body: bytes, expected: int) -> None:
    if response.status_code == expected:
        return
    message = body.decode("utf-8", "replace")[:500]
    map_error(response.status_code, response, _ERRORS)  # raises for the statuses it maps
    raise HttpResponseError(message=f"{response.status_code}: {message}", response=response)
