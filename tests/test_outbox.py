"""The webhook's Marketo Activity Log entries wait in the outbox and go 300 to a Marketo call."""

from __future__ import annotations

import pytest

from shared.state.outbox import MarketoOutbox, OutboxNote
from shared.state.storage import Storage


@pytest.fixture
def outbox(storage_connection_string: str, name_prefix: str) -> MarketoOutbox:
    return MarketoOutbox(Storage(storage_connection_string, table_prefix=name_prefix))


def test_entries_come_out_oldest_first_and_stay_until_removed(outbox: MarketoOutbox) -> None:
    outbox.put([OutboxNote(1, "created Dynamics lead", "lead a", "op-1")])
    outbox.put([OutboxNote(i, f"r{i}", f"d{i}", "op-2") for i in range(2, 260)])  # 3 transactions
    first = outbox.take(300)
    assert [n.lead_id for n in first] == list(range(1, 260))
    assert first[0] == OutboxNote(1, "created Dynamics lead", "lead a", "op-1", first[0].row_key)
    assert len(outbox.take(10)) == 10  # taking does not remove
    outbox.remove(first[:200])
    assert [n.lead_id for n in outbox.take(300)] == list(range(201, 260))


def test_removing_what_another_sender_removed_already_is_harmless(outbox: MarketoOutbox) -> None:
    outbox.put([OutboxNote(i, "r", "d", "op") for i in range(5)])
    taken = outbox.take(5)
    outbox.remove(taken[:2])  # another timer sent and removed these
    outbox.remove(taken)
    assert outbox.take(5) == []
