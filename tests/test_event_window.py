"""When a drain stretches its lane's coalescing window instead of draining (pure: the clock is
passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import BadMessage
from shared.state.eventbuffer import BUSY_IDS, BUSY_PER_S, QUIET_S, DrainRequest, parse_drain, should_stretch

OPENED = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)


def stretch(ids: int, after_s: float, *, delay_s: int = 1, max_window_s: int = 10, opened: datetime | None = OPENED,
            batch_size: int = 300, seen: int = 0, grew_s: float | None = None) -> bool:
    grew = OPENED + timedelta(seconds=grew_s) if grew_s is not None else None
    return should_stretch(ids, opened, OPENED + timedelta(seconds=after_s), delay_s=delay_s,
                          max_window_s=max_window_s, batch_size=batch_size, seen=seen, grew=grew)


def test_a_busy_lane_stretches_while_its_window_stays_within_the_maximum() -> None:
    assert stretch(BUSY_IDS, 1)
    assert stretch(150, 8.5)
    assert stretch(150, 9)  # the next drain comes 10 s after the opening: still within it


def test_steady_edits_at_four_a_second_never_stretch() -> None:
    """The latency case: ids at 4 a second reach BUSY_IDS but not a burst's rate."""
    assert not any(stretch(4 * t, t) for t in range(1, 10))
    assert stretch(BUSY_PER_S * 4, 4)


def test_a_clump_of_a_trickle_does_not_stretch() -> None:
    """Steady edits arrive in clumps (a drain picked up late, echoes of one write): 8 ids
    1.3 s after the opening is a burst's rate, but too few to be one."""
    assert not stretch(8, 1.3)
    assert not stretch(BUSY_IDS - 1, 1)


def test_a_window_is_never_stretched_past_the_maximum() -> None:
    assert not stretch(150, 9.5)
    assert not stretch(150, 30)
    assert not stretch(150, 9.5, seen=100)


def test_a_stretched_window_stays_open_while_ids_keep_coming_even_slowly() -> None:
    """A burst whose webhook calls slowed down (its first ids are being applied) still packs
    into a full message, where the first look's rate rule would drain it in small windows."""
    assert not stretch(30, 6)  # 5 a second: a trickle's rate at a first look
    assert stretch(30, 6, seen=26, grew_s=5)  # but this window stretched before, and it grew
    assert stretch(BUSY_IDS + 1, 9, seen=BUSY_IDS, grew_s=2)


def test_a_stretched_window_drains_once_the_burst_is_over() -> None:
    """A lull shorter than QUIET_S may be a stall (receivers waiting on a busy CPU); a longer
    one ends the burst."""
    assert stretch(120, 4, seen=120, grew_s=2)
    assert stretch(120, 2 + QUIET_S - 0.1, seen=120, grew_s=2)
    assert not stretch(120, 2 + QUIET_S, seen=120, grew_s=2)
    assert stretch(121, 9, seen=120, grew_s=2)  # it grew again
    assert not stretch(300, 4, seen=250, grew_s=3)  # a full message drains at once


def test_the_next_drain_remembers_when_the_lane_last_grew() -> None:
    def at(s: float) -> datetime:
        return OPENED + timedelta(seconds=s)

    first = DrainRequest("marketo-changed", OPENED).looked(20, at(1))
    assert first == DrainRequest("marketo-changed", OPENED, 20, at(1))
    assert first.looked(20, at(2)) == DrainRequest("marketo-changed", OPENED, 20, at(1))
    assert first.looked(20, at(2)).looked(25, at(3)) == DrainRequest("marketo-changed", OPENED, 25, at(3))


def test_a_trickle_drains_at_once() -> None:
    """A few edits a second (the latency case) never wait more than the first window."""
    assert not stretch(BUSY_IDS - 1, 1)
    assert not stretch(1, 1)


def test_a_full_work_message_drains_at_once() -> None:
    assert not stretch(300, 1)
    assert not stretch(50, 1, batch_size=50)


@pytest.mark.parametrize(("delay_s", "max_window_s", "opened"), [(0, 10, OPENED), (1, 0, OPENED), (1, 1, OPENED),
                                                                  (1, 10, None)])
def test_no_stretch_without_a_window_or_an_opening_time(delay_s: int, max_window_s: int,
                                                        opened: datetime | None) -> None:
    """delay 0 means drain at once; a maximum no larger than the window means no stretching;
    a drain message sent before windows stretched carries no opening time."""
    assert not stretch(150, 1, delay_s=delay_s, max_window_s=max_window_s, opened=opened)


def test_a_drain_message_carries_its_windows_opening_and_last_look() -> None:
    assert parse_drain(DrainRequest("marketo-changed", OPENED).to_json()) == DrainRequest("marketo-changed", OPENED)
    grew = OPENED + timedelta(seconds=2)
    assert parse_drain(DrainRequest("marketo-changed", OPENED, 42, grew).to_json()) == \
        DrainRequest("marketo-changed", OPENED, 42, grew)
    assert parse_drain('{"lane": "dynamics-lead-changed"}') == DrainRequest("dynamics-lead-changed", None)


@pytest.mark.parametrize("value", ['"many"', "-1", "true", "1.5"])
def test_a_drain_message_with_a_bad_last_look_is_refused(value: str) -> None:
    with pytest.raises(BadMessage, match="seen"):
        parse_drain('{"lane": "marketo-changed", "seen": %s}' % value)


@pytest.mark.parametrize("name", ["opened", "grew"])
def test_a_drain_message_with_a_bad_time_is_refused(name: str) -> None:
    with pytest.raises(BadMessage, match=name):
        parse_drain('{"lane": "marketo-changed", "%s": "yesterday"}' % name)
