"""The shared pause (`shared/state/pause.py`) on Azurite: who goes ahead, who waits, when it ends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.queue import QueueClient

from shared.errors import QuotaExhausted
from shared.state.pause import PauseStore, defer
from shared.state.storage import Storage


@pytest.fixture
def storage(storage_connection_string: str, name_prefix: str) -> Storage:
    return Storage(storage_connection_string, table_prefix=name_prefix)


def exhausted(now: datetime, hours: float = 5) -> QuotaExhausted:
    return QuotaExhausted("Daily quota '50000' reached", now + timedelta(hours=hours), "req-1")


def test_no_pause_lets_everyone_go_and_resuming_then_is_a_no_op(storage: Storage) -> None:
    pauses = PauseStore(storage)
    gate = pauses.gate()
    assert (gate.pause, gate.go) == (None, True)
    pauses.resumed(gate)
    assert pauses.current() is None


def test_a_607_pauses_every_reader_until_the_reset(storage: Storage) -> None:
    now = datetime.now(UTC)
    stored = PauseStore(storage, recheck_s=60).quota_exhausted(exhausted(now), now)
    other = PauseStore(storage, recheck_s=60)  # another instance reads the same row
    seen = other.current(now)
    assert seen is not None and (seen.code, seen.until, seen.detail) == ("607", stored.until, stored.detail)
    assert seen.describe() == f"paused until {stored.until:%Y-%m-%d %H:%M} UTC, because Marketo daily quota (607)"
    assert not other.gate(now + timedelta(seconds=30)).go
    assert other.current(stored.until) is None  # the reset has passed: no pause, whoever reads
    assert other.gate(stored.until).go


def test_when_a_recheck_is_due_exactly_one_caller_goes(storage: Storage) -> None:
    now = datetime.now(UTC)
    PauseStore(storage, recheck_s=60).quota_exhausted(exhausted(now), now)
    due = now + timedelta(seconds=61)
    results: list[bool] = []
    lock = threading.Lock()

    def ask() -> None:
        go = PauseStore(storage, recheck_s=60).gate(due).go
        with lock:
            results.append(go)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert not PauseStore(storage, recheck_s=60).gate(due + timedelta(seconds=30)).go  # next re-check: 60 s on


def test_the_recheck_that_succeeds_ends_the_pause_and_one_that_meets_607_renews_it(storage: Storage) -> None:
    now = datetime.now(UTC)
    pauses = PauseStore(storage, recheck_s=60)
    first = pauses.quota_exhausted(exhausted(now), now)
    later = now + timedelta(seconds=61)
    assert pauses.gate(later).go
    renewed = pauses.quota_exhausted(exhausted(later), later)  # the probe met 607 again
    assert renewed.since == first.since and renewed.recheck_at == later + timedelta(seconds=60)
    gate = pauses.gate(later + timedelta(seconds=61))
    assert gate.go
    pauses.resumed(gate)  # the probe's call succeeded
    assert pauses.current() is None and pauses.gate().go


def test_a_deferred_message_is_a_new_message_invisible_until_the_recheck(
        storage: Storage, storage_connection_string: str, name_prefix: str) -> None:
    now = datetime.now(UTC)
    pause = PauseStore(storage, recheck_s=30).quota_exhausted(exhausted(now), now)
    queue = f"{name_prefix}-work"
    assert defer(storage, queue, '{"v":1}', pause, now=now) == 30
    client = QueueClient.from_connection_string(storage_connection_string, queue)
    assert client.get_queue_properties().approximate_message_count == 1
    assert client.peek_messages() == []  # invisible until the re-check
