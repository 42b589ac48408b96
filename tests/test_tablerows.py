"""Single-row reads and writes of shared/state/tablerows.py, against a real (Azurite) table.

The link store branches on their answers, so they must read back what the SDK wrote (and
the reverse), hand back ETags that conditional writes accept, and report "missing",
"exists" and "changed" as values.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableClient

from shared.state import tablerows
from shared.state.storage import Storage


@pytest.fixture
def table(storage_connection_string: str, name_prefix: str) -> TableClient:
    return Storage(storage_connection_string, table_prefix=name_prefix).table("rest")


AT = datetime(2026, 11, 25, 12, 30, 5, 123000, tzinfo=UTC)
AWKWARD = {"PartitionKey": "p'1", "RowKey": "o'brien|lead:1 100% ü+&=", "text": "ünïcode ' \" \\ </> \u2028",
           "n": 7, "ok": False, "at": AT, "x": 1.5, "empty": ""}


def test_a_created_row_reads_back_as_the_sdk_reads_it(table: TableClient) -> None:
    etag = tablerows.create(table, AWKWARD)
    assert etag
    mine = tablerows.get(table, AWKWARD["PartitionKey"], AWKWARD["RowKey"])
    sdk = table.get_entity(AWKWARD["PartitionKey"], AWKWARD["RowKey"])
    assert mine is not None
    assert dict(mine) == dict(sdk) and {k: mine[k] for k in AWKWARD} == AWKWARD
    assert mine.metadata["etag"] == sdk.metadata["etag"] == etag


def test_a_row_the_sdk_wrote_reads_back_the_same(table: TableClient) -> None:
    table.create_entity(AWKWARD)
    mine = tablerows.get(table, AWKWARD["PartitionKey"], AWKWARD["RowKey"])
    assert mine is not None and {k: mine[k] for k in AWKWARD} == AWKWARD


def test_missing_and_existing_rows_are_answers_not_errors(table: TableClient) -> None:
    assert tablerows.get(table, "p", "nobody") is None
    assert tablerows.create(table, {"PartitionKey": "p", "RowKey": "r", "v": 1})
    assert tablerows.create(table, {"PartitionKey": "p", "RowKey": "r", "v": 2}) is None
    assert table.get_entity("p", "r")["v"] == 1  # the second create wrote nothing


def test_replace_is_conditional_on_the_etag(table: TableClient) -> None:
    first = tablerows.create(table, {"PartitionKey": "p", "RowKey": "r", "v": 1, "old": "x"})
    assert first is not None
    second = tablerows.replace(table, {"PartitionKey": "p", "RowKey": "r", "v": 2}, first)
    with pytest.raises(tablerows.Conflict):
        tablerows.replace(table, {"PartitionKey": "p", "RowKey": "r", "v": 3}, first)
    stored = table.get_entity("p", "r")
    assert stored["v"] == 2 and "old" not in stored and stored.metadata["etag"] == second
    with pytest.raises(tablerows.Conflict):  # a row that went is a conflict too
        tablerows.replace(table, {"PartitionKey": "p", "RowKey": "gone", "v": 1}, second)


def test_upsert_inserts_then_replaces_the_whole_row(table: TableClient) -> None:
    tablerows.upsert(table, {"PartitionKey": "p", "RowKey": "r", "old": "gone", "keep": 1})
    etag = tablerows.upsert(table, {"PartitionKey": "p", "RowKey": "r", "keep": 2})
    stored = table.get_entity("p", "r")
    assert stored["keep"] == 2 and "old" not in stored and stored.metadata["etag"] == etag


def test_other_failures_raise_as_the_sdk_does(table: TableClient) -> None:
    with pytest.raises(HttpResponseError) as refused:
        tablerows.upsert(table, {"PartitionKey": "p", "RowKey": "bad\tkey", "v": 1})  # control characters refused
    assert refused.value.status_code == 400
