"""Transactions written by shared/tablebatch.py, against a real (Azurite) table.

They stand in for the SDK's `submit_transaction`, so they must write exactly what it
writes (types, awkward keys and values), return ETags that later conditional writes
accept, and write nothing when one row fails.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.data.tables import TableClient

from shared.storage import Storage
from shared.tablebatch import Op, TransactionFailed, submit


@pytest.fixture
def table(storage_connection_string: str, name_prefix: str) -> TableClient:
    return Storage(storage_connection_string, table_prefix=name_prefix).table("batch")


def test_rows_read_back_as_the_sdk_wrote_them(table: TableClient) -> None:
    at = datetime(2026, 11, 25, 12, 30, 5, 123000, tzinfo=UTC)
    rows = [{"PartitionKey": "p'1", "RowKey": f"o'brien|lead:{i} 100% ü+&=", "text": "ünïcode ' \" \\ </> \u2028",
             "n": i, "ok": i % 2 == 0, "at": at, "x": 1.5} for i in range(5)]
    etags = submit(table, [Op("create", r) for r in rows])
    for row, etag in zip(rows, etags, strict=True):
        stored = table.get_entity(row["PartitionKey"], row["RowKey"])
        assert stored.metadata["etag"] == etag
        assert {k: stored[k] for k in row} == row


def test_a_returned_etag_is_the_one_a_conditional_write_needs(table: TableClient) -> None:
    (etag,) = submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "r", "v": 1})])
    (newer,) = submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 2}, etag)])
    with pytest.raises(TransactionFailed) as stale:
        submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 3}, etag)])
    assert stale.value.status == 412 and stale.value.index == 0
    submit(table, [Op("replace", {"PartitionKey": "p", "RowKey": "r", "v": 4}, newer)])
    assert table.get_entity("p", "r")["v"] == 4


def test_one_failing_row_writes_nothing_and_says_which(table: TableClient) -> None:
    submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "taken"})])
    with pytest.raises(TransactionFailed) as failed:
        submit(table, [Op("create", {"PartitionKey": "p", "RowKey": "new"}),
                       Op("upsert", {"PartitionKey": "p", "RowKey": "also-new"}),
                       Op("create", {"PartitionKey": "p", "RowKey": "taken"})])
    assert failed.value.status == 409 and failed.value.code == "EntityAlreadyExists" and failed.value.index == 2
    assert sorted(e["RowKey"] for e in table.list_entities()) == ["taken"]


def test_upsert_replaces_the_whole_row(table: TableClient) -> None:
    submit(table, [Op("upsert", {"PartitionKey": "p", "RowKey": "r", "old": "gone", "keep": 1})])
    submit(table, [Op("upsert", {"PartitionKey": "p", "RowKey": "r", "keep": 2})])
    stored = table.get_entity("p", "r")
    assert stored["keep"] == 2 and "old" not in stored


def test_rows_of_two_partitions_are_refused_before_sending(table: TableClient) -> None:
    # Azure refuses such a transaction; Azurite would write it, so the check is ours.
    with pytest.raises(ValueError, match="one partition"):
        submit(table, [Op("create", {"PartitionKey": "a", "RowKey": "1"}),
                       Op("create", {"PartitionKey": "b", "RowKey": "1"})])
    assert list(table.list_entities()) == []
