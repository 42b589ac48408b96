"""Transactions of shared/state/tablebatch.py, against a real (Azurite) table.

The hand-written `$batch` writer stands in for the SDK's `submit_transaction` (its
fallback), so it must send the same sub-requests, and both paths must write exactly what
the SDK writes (types, awkward keys and values), return ETags that later conditional writes
accept, and write nothing when one row fails.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient

from shared.state import tablebatch
from shared.state.storage import Storage
from shared.state.tablebatch import Op, TransactionFailed

Submit = Callable[[TableClient, list[Op]], list[str]]


@pytest.fixture
def table(storage_connection_string: str, name_prefix: str) -> TableClient:
    return Storage(storage_connection_string, table_prefix=name_prefix).table("batch")


@pytest.fixture(params=[True, False], ids=["hand-written", "submit_transaction"])
def submit(request: pytest.FixtureRequest) -> Callable[[TableClient, list[Op]], list[str]]:
    """`tablebatch.submit` on one path; every test here runs on both."""
    return functools.partial(tablebatch.submit, hand_written=request.param)


def test_rows_read_back_as_the_sdk_wrote_them(table: TableClient, submit: Submit) -> None:
    at = datetime(2026, 11, 25, 12, 30, 5, 123000, tzinfo=UTC)
    rows = [{"PartitionKey": "p'1", "RowKey": f"o'brien|lead:{i} 100% ü+&=", "text": "ünïcode ' \" \\ </> \u2028",
             "n": i, "ok": i % 2 == 0, "at": at, "x": 1.5} for i in range(5)]
    etags = submit(table, [Op("create", r) for r in rows])
    for row, etag in zip(rows, etags, strict=True):
        stored = table.get_entity(row["PartitionKey"], row["RowKey"])
        assert stored.metadata["etag"] == etag
        assert {k: stored[k] for k in row} == row


def test_a_returned_etag_is_the_one_a_conditional_write_needs(table: TableClient, submit: Submit) -> None:
    (etag,) = submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "r", "v": 1})])
    (newer,) = submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 2}, etag)])
    with pytest.raises(TransactionFailed) as stale:
        submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 3}, etag)])
    assert stale.value.status == 412 and stale.value.index == 0
    submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 4}, newer)])
    assert table.get_entity("p", "r")["v"] == 4


def test_one_failing_row_writes_nothing_and_says_which(table: TableClient, submit: Submit) -> None:
    submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "taken"})])
    with pytest.raises(TransactionFailed) as failed:
        submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "new"}),
                       Op("upsert", {"PartitionKey": "p", "RowKey": "also-new"}),
                       Op("create", {"PartitionKey": "p", "RowKey": "taken"})])
    assert failed.value.status == 409 and failed.value.code == "EntityAlreadyExists" and failed.value.index == 2
    assert sorted(e["RowKey"] for e in table.list_entities()) == ["taken"]


def test_upsert_replaces_the_whole_row(table: TableClient, submit: Submit) -> None:
    submit(table, [Op("upsert", {"PartitionKey": "p", "RowKey": "r", "old": "gone", "keep": 1})])
    submit(table, [Op("upsert", {"PartitionKey": "p", "RowKey": "r", "keep": 2})])
    stored = table.get_entity("p", "r")
    assert stored["keep"] == 2 and "old" not in stored


def test_rows_of_two_partitions_are_refused_before_sending(table: TableClient, submit: Submit) -> None:
    # Azure refuses such a transaction; Azurite would write it, so the check is ours.
    with pytest.raises(ValueError, match="one partition"):
        submit(table, [Op("create", {"PartitionKey": "a", "RowKey": "1"}),
                       Op("create", {"PartitionKey": "b", "RowKey": "1"})])
    assert list(table.list_entities()) == []


class Recording(RequestsTransport):
    """The real transport, keeping the body of every `$batch` request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[str] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.url.split("?")[0].endswith("/$batch"):
            body = request.content if request.content is not None else request.data
            self.batches.append(body.decode() if isinstance(body, bytes) else str(body))
        return super().send(request, **kwargs)


_SUB_REQUEST = re.compile(r"^(POST|PUT|PATCH|MERGE|DELETE) (\S+) HTTP/1\.1\r?\n(.*?)\r?\n\r?\n(.*?)\r?\n--",
                          re.MULTILINE | re.DOTALL)


def sub_requests(batch: str, table_name: str) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """Each sub-request of a `$batch` body: method, URL (the table's name as `T`), If-Match kind, JSON body."""
    out = []
    for method, url, head, body in _SUB_REQUEST.findall(batch):
        headers = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        etag = headers.get("If-Match")
        condition = None if etag is None else "*" if etag == "*" else "etag"  # each table has its own ETags
        out.append((method, unquote(url).replace(table_name, "T"), condition, json.loads(body)))
    return out


def test_the_hand_written_batch_sends_the_sdks_sub_requests(storage_connection_string: str, name_prefix: str) -> None:
    at = datetime(2026, 11, 25, 12, 30, 5, 123000, tzinfo=UTC)
    rows = [{"PartitionKey": "p'1", "RowKey": f"o'brien|lead:{i} 100% ü+&=", "text": "ünïcode ' \" \\ </> \u2028",
             "n": i, "ok": i % 2 == 0, "at": at, "x": 1.5} for i in range(3)]
    sent: dict[bool, list[Any]] = {}
    for hand_written in (True, False):
        transport = Recording()
        name = f"{name_prefix}{'hand' if hand_written else 'sdk'}"
        table = TableClient.from_connection_string(storage_connection_string, name, transport=transport)
        table.create_table()
        etags = tablebatch.submit(table, [Op("create", r) for r in rows], hand_written=hand_written)
        tablebatch.submit(table, [Op("replace", {**rows[0], "n": 9}, etags[0]), Op("upsert", rows[1]),
                                  Op("replace", rows[2])], hand_written=hand_written)
        sent[hand_written] = [r for batch in transport.batches for r in sub_requests(batch, name)]
    assert len(sent[True]) == 6
    assert sent[True] == sent[False]
