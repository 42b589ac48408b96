"""The shared pause (`shared/state/pause.py`) on Azurite: who goes ahead, who waits, when it ends."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.queue import QueueClient

from shared.errors import QuotaExhausted
from shared.state.pause import LOOK_AGAIN_S, PauseKind, PauseStore, defer
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


def test_no_pause_is_trusted_for_a_few_seconds_then_read_again(storage: Storage) -> None:
    now = datetime.now(UTC)
    worker = PauseStore(storage, recheck_s=60, clear_for_s=5)
    assert worker.gate(now).go  # read: no pause
    stored = PauseStore(storage, recheck_s=60).quota_exhausted(exhausted(now), now)  # elsewhere, a 607
    assert worker.gate(now + timedelta(seconds=4)).go  # still trusting its read (it would meet the 607 itself)
    assert worker.current(now + timedelta(seconds=4), fresh=True) == stored  # the health page reads fresh
    assert not worker.gate(now + timedelta(seconds=5)).go  # read again, and the pause holds
    assert worker.current(now + timedelta(seconds=6)) is not None  # a pause seen is never cached away


def test_the_process_that_meets_a_607_sees_its_pause_at_once(storage: Storage) -> None:
    now = datetime.now(UTC)
    pauses = PauseStore(storage, recheck_s=60, clear_for_s=5)
    assert pauses.gate(now).go
    first = pauses.quota_exhausted(exhausted(now), now)
    assert not pauses.gate(now + timedelta(seconds=1)).go
    again = pauses.quota_exhausted(exhausted(now), now + timedelta(seconds=2))
    assert again.since == first.since  # renewed from a fresh read, not from the cached "no pause"


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


# -- the daily cap and the operator's pause ------------------------------------------------
def test_an_operators_pause_holds_the_background_sync_until_resumed_and_never_the_real_time_endpoint(
        storage: Storage) -> None:
    now = datetime.now(UTC)
    stopped = PauseStore(storage).operator_pause("moving the Dynamics org", now)
    pauses = PauseStore(storage)
    gate = pauses.gate(now + timedelta(days=30))
    assert not gate.go and gate.pause is not None and gate.pause.kind == PauseKind.OPERATOR
    assert gate.pause.describe() == (f"paused since {stopped.since:%Y-%m-%d %H:%M} UTC, because an operator paused "
                                     "it: moving the Dynamics org")
    assert gate.pause.seconds_to_recheck(now) == LOOK_AGAIN_S  # a message looks again in minutes, not at "until"
    assert pauses.gate(now, realtime=True).go
    assert PauseStore(storage).operator_resume() and not PauseStore(storage).operator_resume()
    assert PauseStore(storage).gate(now).go


def test_the_setting_pauses_the_background_sync_of_its_process(storage: Storage) -> None:
    pauses = PauseStore(storage, paused_by_setting=True)
    gate = pauses.gate()
    assert not gate.go and gate.pause is not None and "LEADSYNC_BACKGROUND_PAUSED" in gate.pause.describe()
    assert pauses.gate(realtime=True).go and PauseStore(storage).gate().go


def test_the_cap_stops_the_background_first_and_the_real_time_endpoint_once_its_reserve_is_spent(
        storage: Storage) -> None:
    now = datetime.now(UTC)
    reset = now + timedelta(hours=3)
    writer = PauseStore(storage)
    writer.cap_reached(37_600, 50_000, 80, realtime=False, resets_at=reset, now=now)
    reader = PauseStore(storage)
    gate = reader.gate(now)
    assert not gate.go and gate.pause is not None and gate.pause.kind == PauseKind.CAP
    assert "37,600 of 50,000" in gate.pause.describe() and gate.pause.until == reset
    assert reader.gate(now, realtime=True).go
    writer.cap_reached(40_100, 50_000, 80, realtime=True, resets_at=reset, now=now + timedelta(minutes=5))
    held = reader.gate(now + timedelta(minutes=5), realtime=True)
    assert not held.go and held.pause is not None and held.pause.since == gate.pause.since
    assert reader.gate(reset).go  # Marketo's reset ends it
    assert writer.cap_lifted() and reader.gate(now).go


def test_a_607_outranks_the_cap_and_only_it_is_probed(storage: Storage) -> None:
    now = datetime.now(UTC)
    pauses = PauseStore(storage, recheck_s=60)
    pauses.cap_reached(40_000, 50_000, 80, realtime=False, resets_at=now + timedelta(hours=3), now=now)
    pauses.quota_exhausted(exhausted(now), now)
    assert pauses.current(now, fresh=True).kind == PauseKind.QUOTA  # type: ignore[union-attr]
    later = now + timedelta(seconds=61)
    assert pauses.gate(later).go  # the 607's re-check turn
    pauses.resumed(pauses.gate(later + timedelta(seconds=61)))
    gate = pauses.gate(later + timedelta(seconds=200))
    assert not gate.go and gate.pause is not None and gate.pause.kind == PauseKind.CAP  # the cap still holds
