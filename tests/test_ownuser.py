"""OwnUser: LeadSync's Dataverse user, asked with WhoAmI in the background, once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from shared.clients.ownuser import OwnUser

USER = "A1B2C3D4-0000-4000-8000-000000000001"


class Later:
    """A submit that runs the job only when told, as a pool thread would some time later."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, job: Callable[[], None]) -> None:
        self.jobs.append(job)

    def run(self) -> None:
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


def answers(*replies: Mapping[str, Any] | Exception) -> tuple[Callable[[], Mapping[str, Any]], list[int]]:
    asked = [0]

    def who_am_i() -> Mapping[str, Any]:
        reply = replies[min(asked[0], len(replies) - 1)]
        asked[0] += 1
        if isinstance(reply, Exception):
            raise reply
        return reply

    return who_am_i, asked


def test_the_first_look_asks_in_the_background_and_later_looks_know() -> None:
    who_am_i, asked = answers({"UserId": USER})
    later = Later()
    own = OwnUser(who_am_i, later)
    assert own.get() is None and own.made(USER) is False  # not known yet: nothing is taken for ours
    assert own.get() is None and len(later.jobs) == 1  # one question in flight, not one per look
    later.run()
    assert own.get() == USER.lower()
    assert own.made(USER) and own.made(USER.lower())
    assert not own.made("a1b2c3d4-0000-4000-8000-000000000002") and not own.made(None)
    assert asked == [1] and later.jobs == []


@pytest.mark.parametrize("failure", [RuntimeError("Dataverse is down"), {"UserId": "not-a-guid"}, {}])
def test_a_failed_question_is_asked_again_a_minute_later(failure: Mapping[str, Any] | Exception) -> None:
    now = [100.0]
    who_am_i, asked = answers(failure, {"UserId": USER})
    later = Later()
    own = OwnUser(who_am_i, later, clock=lambda: now[0])
    own.get()
    later.run()
    assert own.get() is None and later.jobs == []  # not asked again at once
    now[0] += OwnUser.RETRY_S - 1
    assert own.get() is None and later.jobs == []
    now[0] += 1
    assert own.get() is None
    later.run()
    assert own.get() == USER.lower() and asked == [2]
