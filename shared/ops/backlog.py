"""The operator's view of the backlog: how many people wait, and when they will be done.

People waiting are the ids in the work queues' messages, plus ids buffered from change events
(`shared.state.eventbuffer`) and real-time requests the app still has to finish
(`shared.state.pending`). A queue holds up to 300 ids a message; the ids are counted
exactly when every message could be peeked (at most 32 a queue, the service's limit), else
the depth is multiplied by the mean of the peeked messages (or, when none is visible, by
the batch size: an upper bound, said so).

The rate is the people the appliers handled in the last hour (synced, unchanged, created,
linked, moved or failed), so the ETA is "at the last hour's pace": none ("—") when nothing
was handled, and none while the background sync is paused ("— (paused)").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.errors import BadMessage
from shared.state import activity
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, Work

PEEK_MAX = 32  # Azure Queue Storage peeks at most 32 messages
WINDOW_S = 3600.0  # the rate is measured over the last hour
# A paused real-time call is not in this list: nothing was done for its person yet.
HANDLED_KINDS = frozenset({activity.SYNCED, activity.UNCHANGED, activity.CREATED, activity.LINKED, activity.MOVED,
                           activity.VALIDATION_FAILED, activity.REJECTED, activity.PARKED, activity.LINK_CONFLICT})
NO_ETA = "—"


@dataclass(frozen=True)
class Backlog:
    people: int  # people waiting: ids in work messages + buffered events + accepted real-time requests
    messages: int  # work messages (both queues, visible or not)
    exact: bool  # False: the ids in work messages are estimated from the messages peeked
    handled_last_hour: int
    rate_per_h: float | None  # people handled an hour; None: nothing handled in the last hour
    eta_s: float | None  # None: no rate to go by, or paused (nothing waits: then 0)
    paused: bool = False  # the background sync is paused: nothing moves until it resumes

    def describe(self) -> str:
        """One line for the page and `leadsync status`."""
        about = "" if self.exact else "about "
        waiting = (f"{about}{self.people:,} {'person' if self.people == 1 else 'people'} waiting "
                   f"({self.messages:,} work message{'' if self.messages == 1 else 's'})")
        if self.paused and self.people:
            return f"{waiting}; ETA {NO_ETA} (paused)"
        return f"{waiting}; ETA {eta_text(self.eta_s)}" + (
            f" at {self.rate_per_h:,.0f} people/h (last hour)" if self.rate_per_h else "")


def ids_waiting(depth: int, peeked: list[int], batch_size: int) -> tuple[int, bool]:
    """People in a queue of `depth` messages whose visible ones held `peeked` ids each; exact or not.

    Every message peeked: their sum. Some: the depth times their mean. None visible (all in
    flight or deferred): the depth times the batch size, an upper bound.
    """
    if depth <= 0:
        return 0, True
    if peeked and len(peeked) >= depth:
        return sum(peeked), True
    if peeked:
        return round(depth * sum(peeked) / len(peeked)), False
    return depth * batch_size, False


def rate_per_hour(handled: int, window_s: float = WINDOW_S) -> float | None:
    """People an hour, from `handled` in the last `window_s`; None when there is nothing to go by."""
    if handled <= 0 or window_s <= 0:
        return None
    return handled * 3600.0 / window_s


def eta_seconds(waiting: int, rate_h: float | None, *, paused: bool = False) -> float | None:
    """Seconds until `waiting` people are done at `rate_h` people an hour; 0 when none wait,
    None when they wait and there is no rate, or the sync is paused (the last hour's pace
    says nothing about when a pause ends)."""
    if waiting <= 0:
        return 0.0
    if paused or rate_h is None or rate_h <= 0:
        return None
    return waiting * 3600.0 / rate_h


def eta_text(seconds: float | None) -> str:
    """"—" without a rate, "now" when nothing waits, else "~12 min", "~3 h 05 min", "~4 days"."""
    if seconds is None:
        return NO_ETA
    if seconds <= 0:
        return "now"
    s = math.ceil(seconds)
    if s < 120:
        return f"~{s} s"
    if s < 7200:
        return f"~{math.ceil(s / 60)} min"
    if s < 172800:
        return f"~{s // 3600} h {s % 3600 // 60:02d} min"
    return f"~{s // 86400} days"


def handled(by_kind: Mapping[str, int]) -> int:
    """People the appliers handled, from an hour's counts by kind."""
    return sum(n for kind, n in by_kind.items() if kind in HANDLED_KINDS)


def measure(storage: Storage, depths: Mapping[str, int], by_kind_last_hour: Mapping[str, int], *,
            batch_size: int, buffered: Iterable[int] = (), pending: int = 0, paused: bool = False) -> Backlog:
    """The backlog now: `depths` of the work queues (as the snapshot read them), one peek each."""
    people, exact, messages = 0, True, 0
    for name in (FROM_MARKETO, FROM_DYNAMICS):
        depth = depths.get(name, 0)
        messages += depth
        found, whole = ids_waiting(depth, _peek(storage, name) if depth else [], batch_size)
        people += found
        exact = exact and whole
    people += sum(buffered) + pending
    done = handled(by_kind_last_hour)
    rate = rate_per_hour(done)
    return Backlog(people, messages, exact, done, rate, eta_seconds(people, rate, paused=paused), paused)


def _peek(storage: Storage, name: str) -> list[int]:
    sizes = []
    for message in storage.queue(name).peek_messages(max_messages=PEEK_MAX):
        try:
            sizes.append(len(Work.from_json(str(message.content)).ids))
        except BadMessage:
            continue  # the appliers poison it: nobody waits on it
    return sizes
