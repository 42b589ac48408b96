"""Entity-group transactions written as plain `$batch` text, falling back to `submit_transaction`.

Why: the SDK's `submit_transaction` builds and parses the multipart body through the
`email` package, which costs the app several times the CPU of this writer per row (figures
in bench/README.md, measured by `python -m bench.tablecpu`), and transactions carry most
table writes of an initial sync. It is the one module that uses private names of
azure-data-tables (the generated client's pipeline, the account host, and the SDK's own
entity-to-JSON conversion, so property types are written exactly as the SDK writes them);
if a release removes them, every transaction goes through `submit_transaction` instead.
tests/test_tablebatch.py checks that both send the same sub-requests.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest, HttpResponse
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.state import tablerows

try:  # the private names this module relies on; without them, `submit_transaction` does the work
    from azure.data.tables._serialize import _add_entity_properties
except ImportError:  # pragma: no cover - depends on the installed SDK
    _add_entity_properties = None  # type: ignore[assignment]

TRANSACTION_MAX = 100  # rows in one entity-group transaction (a Table Storage limit)
# A lone row goes as a single write; from two rows one transaction costs the app no more
# than the single writes would, and the service one request instead of several.
TRANSACTION_MIN = 2
_STATUS = re.compile(r"^HTTP/1\.1 (\d{3})")
_ERROR_INDEX = re.compile(r"^(\d+):")


@dataclass(frozen=True)
class Op:
    """One row of a transaction: `create` (fails if it exists), `replace` (if `etag` matches,
    or unconditionally without one), `upsert` (insert or replace)."""

    kind: str
    entity: Mapping[str, Any]
    etag: str | None = None


class TransactionFailed(Exception):
    """The service refused the transaction; none of its rows was written."""

    def __init__(self, status: int, code: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.index = index  # the row that failed, when the service says


def submit(table: TableClient, ops: Sequence[Op], *, hand_written: bool | None = None) -> list[str]:
    """Write `ops` (one partition, at most 100) as one transaction; their new ETags, in order.

    `hand_written` (default: whenever the SDK still has the private names it needs) picks
    this module's `$batch` writer over the SDK's `submit_transaction`; both raise
    TransactionFailed, with the failing row's index when the service names it.
    """
    if len({op.entity["PartitionKey"] for op in ops}) != 1 or len(ops) > TRANSACTION_MAX:
        raise ValueError("a transaction holds 1 to 100 rows of one partition")
    if hand_written is None:
        hand_written = available(table)
    return _submit_hand_written(table, ops) if hand_written else _submit_sdk(table, ops)


def available(table: TableClient) -> bool:
    """Whether the hand-written writer can run with the installed SDK."""
    return (_add_entity_properties is not None and hasattr(table, "_client")
            and hasattr(table, "_primary_hostname"))


def _submit_sdk(table: TableClient, ops: Sequence[Op]) -> list[str]:
    sdk_ops: list[Any] = []
    for op in ops:
        if op.kind == "create":
            sdk_ops.append(("create", op.entity))
        elif op.kind == "replace" and op.etag:
            sdk_ops.append(("update", op.entity, {"mode": UpdateMode.REPLACE, "etag": op.etag,
                                                  "match_condition": MatchConditions.IfNotModified}))
        elif op.kind in ("replace", "upsert"):  # unconditional: a PUT without If-Match, as `_part` sends
            sdk_ops.append(("upsert", op.entity, {"mode": UpdateMode.REPLACE}))
        else:
            raise ValueError(f"unknown transaction operation {op.kind!r}")
    try:
        results = table.submit_transaction(sdk_ops)
    except TableTransactionError as exc:
        index = _ERROR_INDEX.match(exc.message or "")
        code = str(getattr(exc, "error_code", None) or "")
        raise TransactionFailed(exc.status_code or 0, code, exc.message or str(exc),
                                int(index.group(1)) if index else None) from exc
    return [str(r.get("etag") or "") for r in results]


def _submit_hand_written(table: TableClient, ops: Sequence[Op]) -> list[str]:
    host = _host(table)
    changeset, batch = f"changeset_{uuid.uuid4()}", f"batch_{uuid.uuid4()}"
    parts = [_part(host, table.table_name, op, changeset) for op in ops]
    body = (f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
            + "".join(parts) + f"--{changeset}--\r\n--{batch}--\r\n").encode()
    request = HttpRequest("POST", f"{host}/$batch", content=body, headers={
        "x-ms-version": table.api_version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
        "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"})
    response, raw = _send(table, request)
    text = raw.decode("utf-8", "replace")
    if response.status_code != 202:
        raise TransactionFailed(response.status_code, *_error(text))
    statuses: list[int] = []
    etags: list[str] = []
    for line in text.splitlines():
        if match := _STATUS.match(line):
            statuses.append(int(match.group(1)))
            etags.append("")
        elif line.lower().startswith("etag:") and etags:
            etags[-1] = line.split(":", 1)[1].strip()
    failed = [s for s in statuses if not 200 <= s < 300]
    if failed or len(statuses) != len(ops):
        code, message = _error(text)
        index = _ERROR_INDEX.match(message)
        raise TransactionFailed(failed[0] if failed else response.status_code, code, message,
                                int(index.group(1)) if index else None)
    return etags


def partition_chunks(rows: list[dict[str, Any]]) -> list[list[int]]:
    """Indexes of `rows` grouped by partition, at most one transaction's worth each: the
    rows of one entity-group transaction must share a partition."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row["PartitionKey"], []).append(i)
    return [idx[j:j + TRANSACTION_MAX] for idx in groups.values() for j in range(0, len(idx), TRANSACTION_MAX)]


def upsert_all(table: TableClient, rows: list[dict[str, Any]], pool: Executor) -> None:
    """Insert or replace `rows`, of any partitions: a transaction per partition and 100
    rows (a lone row as a single write), run on `pool`."""

    def group(chunk: list[int]) -> None:
        if len(chunk) < TRANSACTION_MIN:
            for i in chunk:
                tablerows.upsert(table, rows[i])
        else:
            submit(table, [Op("upsert", rows[i]) for i in chunk])

    list(pool.map(group, partition_chunks(rows)))


def _part(host: str, table: str, op: Op, boundary: str) -> str:
    payload = _entity_json(op.entity)
    if op.kind == "create":
        line, extra = f"POST {host}/{table} HTTP/1.1", "Prefer: return-no-content\r\n"
    elif op.kind in ("replace", "upsert"):
        pk, rk = _key(op.entity["PartitionKey"]), _key(op.entity["RowKey"])
        keys = f"(PartitionKey='{pk}',RowKey='{rk}')"
        line = f"PUT {host}/{table}{keys} HTTP/1.1"
        extra = f"If-Match: {op.etag}\r\n" if op.kind == "replace" and op.etag else ""
    else:
        raise ValueError(f"unknown transaction operation {op.kind!r}")
    return (f"--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"{line}\r\nContent-Type: application/json\r\nAccept: application/json;odata=minimalmetadata\r\n"
            f"DataServiceVersion: 3.0\r\n{extra}Content-Length: {len(payload.encode())}\r\n\r\n{payload}\r\n")


def _error(text: str) -> tuple[str, str]:
    """(code, message) from the first OData error in a response body."""
    start = text.find('{"odata.error"')
    if start < 0:
        return "", text[:300].strip()
    try:
        error, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return "", text[start:start + 300]
    inner = error.get("odata.error", {})
    message = inner.get("message", {})
    return str(inner.get("code", "")), str(message.get("value", "") if isinstance(message, dict) else message)


def _host(table: TableClient) -> str:
    return f"{table.scheme}://{table._primary_hostname}"  # noqa: SLF001 - see the module docstring


def _send(table: TableClient, request: HttpRequest) -> tuple[HttpResponse, bytes]:
    response = table._client._client.send_request(request, stream=True)  # noqa: SLF001 - see the module docstring
    return response, response.read()


def _key(value: str) -> str:
    """A PartitionKey or RowKey as it goes inside `(PartitionKey='...')` in a URL."""
    return quote(value.replace("'", "''"), safe="")


def _entity_json(row: Mapping[str, Any]) -> str:
    """The row as the service takes it, property types annotated as the SDK writes them."""
    assert _add_entity_properties is not None
    return json.dumps(_add_entity_properties(row), separators=(",", ":"))
