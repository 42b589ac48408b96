"""The backlog's arithmetic (`shared.ops.backlog`): people waiting, the rate and the ETA, as tables."""

from __future__ import annotations

import pytest

from shared.ops.backlog import Backlog, eta_seconds, eta_text, handled, ids_waiting, rate_per_hour


@pytest.mark.parametrize(("depth", "peeked", "batch", "expected"), [
    (0, [], 300, (0, True)),  # nothing queued
    (0, [5], 300, (0, True)),  # a depth of 0 wins over a stale peek
    (3, [300, 300, 12], 300, (612, True)),  # every message peeked: the exact sum
    (4, [300, 300, 12], 300, (816, False)),  # one not visible: the depth times the mean (204)
    (100, [300] * 32, 300, (30_000, False)),  # only 32 can be peeked
    (5, [], 300, (1_500, False)),  # none visible (deferred or in flight): the batch size, an upper bound
    (5, [], 50, (250, False)),
])
def test_people_waiting_in_a_queue(depth: int, peeked: list[int], batch: int, expected: tuple[int, bool]) -> None:
    assert ids_waiting(depth, peeked, batch) == expected


@pytest.mark.parametrize(("done", "window_s", "expected"), [
    (0, 3600.0, None),  # nothing handled: no rate (a pause, or a quiet hour)
    (-1, 3600.0, None),
    (6_000, 3600.0, 6_000.0),
    (500, 1800.0, 1_000.0),
    (10, 0.0, None),
])
def test_the_rate_is_people_an_hour(done: int, window_s: float, expected: float | None) -> None:
    assert rate_per_hour(done, window_s) == expected


@pytest.mark.parametrize(("waiting", "rate", "seconds", "text"), [
    (0, None, 0.0, "now"),  # nothing waits: done, whatever the rate
    (0, 6_000.0, 0.0, "now"),
    (1_000, None, None, "—"),  # people wait and nothing moves: no ETA
    (1_000, 0.0, None, "—"),
    (100, 6_000.0, 60.0, "~60 s"),
    (1_000, 6_000.0, 600.0, "~10 min"),
    (1_001, 6_000.0, 600.6, "~11 min"),  # rounded up: never sooner than the arithmetic says
    (100_000, 6_000.0, 60_000.0, "~16 h 40 min"),
    (1_000_000, 6_000.0, 600_000.0, "~6 days"),
])
def test_the_eta_at_the_current_rate(waiting: int, rate: float | None, seconds: float | None, text: str) -> None:
    found = eta_seconds(waiting, rate)
    assert (found is None) if seconds is None else (found == pytest.approx(seconds))
    assert eta_text(eta_seconds(waiting, rate)) == text


@pytest.mark.parametrize(("waiting", "rate", "expected"), [
    (1_000, 6_000.0, None),  # paused: the last hour's pace says nothing about when it resumes
    (0, 6_000.0, 0.0),  # nothing waits: done, paused or not
])
def test_no_eta_while_paused(waiting: int, rate: float, expected: float | None) -> None:
    assert eta_seconds(waiting, rate, paused=True) == expected


def test_handled_counts_what_the_appliers_did_and_not_a_paused_call() -> None:
    hour = {"synced": 10, "unchanged": 5, "created": 2, "linked": 1, "moved": 1, "validation_failed": 3,
            "rejected": 1, "parked": 1, "link_conflict": 1, "paused": 40, "collision": 7, "skipped": 9}
    assert handled(hour) == 25


@pytest.mark.parametrize(("backlog", "line"), [
    (Backlog(612, 3, True, 6_000, 6_000.0, 367.2), "612 people waiting (3 work messages); ETA ~7 min at 6,000 "
                                                   "people/h (last hour)"),
    (Backlog(1_500, 5, False, 0, None, None), "about 1,500 people waiting (5 work messages); ETA —"),
    (Backlog(1, 1, True, 0, None, None), "1 person waiting (1 work message); ETA —"),
    (Backlog(0, 0, True, 12, 12.0, 0.0), "0 people waiting (0 work messages); ETA now at 12 people/h (last hour)"),
    (Backlog(4, 2, True, 12, 12.0, None, paused=True), "4 people waiting (2 work messages); ETA — (paused)"),
])
def test_the_line_the_page_and_status_show(backlog: Backlog, line: str) -> None:
    assert backlog.describe() == line
