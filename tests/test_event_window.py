"""When a drain stretches its lane's coalescing window instead of draining (pure: the clock is
passed in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import BadMessage
from shared.state.eventbuffer import BUSY_IDS, BUSY_PER_S, DrainRequest, parse_drain, should_stretch

OPENED = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)


def stretch(ids: int, after_s: float, *, delay_s: int = 1, max_window_s: int = 10, opened: datetime | None = OPENED,
            batch_size: int = 300) -> bool:
    return should_stretch(ids, opened, OPENED + timedelta(seconds=after_s), delay_s=delay_s,
                          max_window_s=max_window_s, batch_size=batch_size)


def test_a_busy_lane_stretches_while_its_window_stays_within_the_maximum() -> None:
    assert stretch(BUSY_IDS, 1)
    assert stretch(150, 8.5)
    assert stretch(150, 9)  # the next drain comes 10 s after the opening: still within it


def test_steady_edits_at_four_a_second_never_stretch() -> None:
    """The latency case: ids at 4 a second reach BUSY_IDS but not a burst's rate."""
    assert not any(stretch(4 * t, t) for t in range(1, 10))
    assert stretch(BUSY_PER_S * 2, 2)


def test_a_window_is_never_stretched_past_the_maximum() -> None:
    assert not stretch(150, 9.5)
    assert not stretch(150, 30)


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


def test_a_drain_message_carries_its_windows_opening() -> None:
    assert parse_drain(DrainRequest("marketo-changed", OPENED).to_json()) == DrainRequest("marketo-changed", OPENED)
    assert parse_drain('{"lane": "dynamics-lead-changed"}') == DrainRequest("dynamics-lead-changed", None)


def test_a_drain_message_with_a_bad_opening_time_is_refused() -> None:
    with pytest.raises(BadMessage, match="opened"):
        parse_drain('{"lane": "marketo-changed", "opened": "yesterday"}')
