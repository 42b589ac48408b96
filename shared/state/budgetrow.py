"""The arithmetic of the shared API budget: pure, so any interleaving of grants can be checked.

One row per limited resource (Marketo, Dataverse) holds what every process was given:

- `grants`: recent blocks of calls, (time, calls, id, last). A block's calls start between
  its grant and `last` (the grant plus `horizon_s` until the process reports when it
  started its last call, and how many it started: the rest go back), never more than
  `calls` of them in one sliding window. While the row has ample room (what is in reach
  stays under half the share, no pressure), a block's horizon is `long_s` instead, so a
  process calling slowly leases once a minute, not every few calls. A new block's calls
  can share a sliding window of `window_s` only with blocks whose `last` is less than
  `window_s` (plus twice the clock skew tolerated between instances) before it: it is
  granted only if those blocks and it stay within the share, so no window ever holds more.
- `slots`: concurrency slots per holder with an expiry (`long_s` too while at most half
  the slots are held). A holder renews them while busy; a crashed holder's slots come
  back when they expire.
- `factor`, `pressure_at`, `blocked_until`: pressure from other integrations. A refusal
  the budget did not predict halves the usable share (at most once per `window_s / 4`,
  never below `floor`); each calm `calm_s` since then gives back `step` of it; a
  Retry-After blocks every new grant until it has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from shared.clients.ratelimit import LeaseAnswer, LeaseRequest


@dataclass(frozen=True)
class BudgetLimits:
    """LeadSync's share of one service's limits and the budget's timings."""

    calls: int  # calls per window
    window_s: float
    concurrency: int  # calls in flight
    horizon_s: float = 2.0  # a block's calls start within this long of its grant
    skew_s: float = 0.25  # clock difference tolerated between instances
    slot_ttl_s: float = 15.0  # a slot not renewed for this long is free again
    calm_s: float = 20.0  # pressure-free time that gives back one `step` of the share
    step: float = 0.1
    floor: float = 0.1  # the least fraction of the share pressure can leave
    slot_poll_s: float = 0.5  # how soon to ask again for a slot held by a live holder
    long_s: float = 0.0  # horizon and slot expiry while the row has ample room (0: never)

    def __post_init__(self) -> None:
        if self.calls < 1 or self.concurrency < 1 or self.window_s <= 0 or self.horizon_s <= 0:
            raise ValueError("calls and concurrency must be >= 1, window_s and horizon_s > 0")

    @property
    def reach_s(self) -> float:
        """How long after a block's last call start a new block's calls may share a window with it."""
        return self.window_s + 2 * self.skew_s


@dataclass(frozen=True)
class Grant:
    at: float
    calls: int
    id: str
    last: float  # no call of the block starts after this


@dataclass(frozen=True)
class Slots:
    count: int
    expires: float


@dataclass(frozen=True)
class BudgetState:
    grants: tuple[Grant, ...] = ()
    slots: Mapping[str, Slots] = field(default_factory=dict)
    factor: float = 1.0  # fraction of the share left right after the last pressure
    pressure_at: float = 0.0  # when the last pressure was recorded (0: never)
    blocked_until: float = 0.0  # no new grant before this (a Retry-After)
    pressures: int = 0  # pressure reports recorded (for the health page and tests)


@dataclass(frozen=True)
class Outcome:
    state: BudgetState
    answer: LeaseAnswer
    changed: bool  # whether the row must be written


def factor_at(state: BudgetState, limits: BudgetLimits, now: float) -> float:
    """The fraction of the share usable at `now`: the last pressure's, plus a step per calm period."""
    if state.pressure_at <= 0:
        return state.factor
    calm = max(0.0, now - state.pressure_at)
    return min(1.0, state.factor + limits.step * math.floor(calm / limits.calm_s))


def call_cap(state: BudgetState, limits: BudgetLimits, now: float) -> int:
    """Calls per span usable now (at least one, so the sync always moves)."""
    return max(1, math.floor(limits.calls * factor_at(state, limits, now) + 1e-9))


def slot_cap(state: BudgetState, limits: BudgetLimits, now: float) -> int:
    return max(1, math.floor(limits.concurrency * factor_at(state, limits, now) + 1e-9))


def in_reach(grants: tuple[Grant, ...] | list[Grant], limits: BudgetLimits, at: float) -> int:
    """Calls of the blocks that can share a window with calls started at or after `at`."""
    return sum(g.calls for g in grants if g.last > at - limits.reach_s)


def lease(state: BudgetState, limits: BudgetLimits, holder: str, request: LeaseRequest, now: float) -> Outcome:
    """Grant what fits at `now`; `holder` names the process (its slots) and `request.grant_id` the block."""
    changed = False
    grants = [g for g in state.grants if g.last > now - limits.reach_s]
    changed |= len(grants) != len(state.grants)
    renewed = _renew(state, limits, holder, grants, request, now)
    if renewed is not None:
        return renewed
    if request.spent:
        kept = []
        for g in grants:
            spent = request.spent.get(g.id)
            if spent is not None:
                calls, within = spent
                last = min(g.last, g.at + max(0.0, within))
                if calls < g.calls or last < g.last:
                    changed = True
                    g = replace(g, calls=max(0, min(calls, g.calls)), last=last)
            if g.calls > 0:
                kept.append(g)
        changed |= len(kept) != len(grants)
        grants = kept
    slots = {h: s for h, s in state.slots.items() if s.expires > now}
    changed |= len(slots) != len(state.slots)
    blocked = now < state.blocked_until

    others = sum(s.count for h, s in slots.items() if h != holder)
    mine = slots.get(holder, Slots(0, 0.0)).count
    free_slots = max(0, slot_cap(state, limits, now) - others)
    want = request.slots if not blocked else min(request.slots, mine)
    held = max(request.in_use, min(want, free_slots))
    # Few slots held: a long expiry, so a slow process renews seldom (the rest stay free at once).
    calm = limits.long_s > 0 and not blocked and factor_at(state, limits, now) >= 1.0
    roomy = calm and others + held <= slot_cap(state, limits, now) / 2
    ttl = max(limits.slot_ttl_s, limits.long_s) if roomy else limits.slot_ttl_s
    if held != mine or (held and slots[holder].expires < now + ttl):
        changed = True
        if held:
            slots[holder] = Slots(held, now + ttl)
        else:
            slots.pop(holder, None)

    at = max([now] + [g.at for g in grants])  # grant times never decrease
    used = in_reach(grants, limits, at)
    cap = call_cap(state, limits, now)
    calls = 0 if blocked else max(0, min(request.calls, cap - used))
    # Half the share still free after this block, and no pressure: the block may last long.
    ample = calm and used + max(calls, request.calls) <= cap / 2
    horizon = max(limits.horizon_s, limits.long_s) if ample else limits.horizon_s
    if calls:
        grants.append(Grant(at, calls, request.grant_id, at + horizon))
        changed = True

    retry_in = 0.0
    if calls < request.calls:
        if blocked:
            retry_in = state.blocked_until - now
        else:
            retry_in = _until_room(grants, limits, call_cap(state, limits, now), at) + (at - now)
    if held < request.slots:
        soonest = min((s.expires for h, s in slots.items() if h != holder), default=now)
        slot_wait = min(limits.slot_poll_s, max(0.0, soonest - now))
        retry_in = max(retry_in, state.blocked_until - now if blocked else slot_wait)
    new = replace(state, grants=tuple(grants), slots=slots)
    answer = LeaseAnswer(calls, held, max(0.01, retry_in), horizon, ttl, limits.window_s, ample)
    return Outcome(new, answer, changed)


def _renew(state: BudgetState, limits: BudgetLimits, holder: str, grants: list[Grant], request: LeaseRequest,
           now: float) -> Outcome | None:
    """Extend `request.renew` by `long_s` from now if the row still has ample room, else None.

    Safe as a new grant of the same calls would be: the extension is checked against every
    other block in reach now, and the holder counts the block's calls per window across the
    old part and the new, so no window sees more than `calls` of it.
    """
    old = next((g for g in grants if g.id == request.renew), None)
    if old is None or limits.long_s <= 0 or now < state.blocked_until or factor_at(state, limits, now) < 1.0:
        return None
    at = max([now] + [g.at for g in grants])
    others = [g for g in grants if g is not old]
    if in_reach(others, limits, at) + old.calls > call_cap(state, limits, now) / 2:
        return None
    # Its slots too: the same lease, with the request's rest applied to the extended row.
    horizon = max(limits.horizon_s, limits.long_s)
    rest = lease(replace(state, grants=tuple(others) + (replace(old, at=at, last=at + horizon),)), limits,
                 holder, replace(request, calls=0, spent={}, renew=""), now)
    answer = replace(rest.answer, calls=old.calls, spend_within_s=horizon,
                     ample=True, renewed=True)
    return Outcome(rest.state, answer, True)


def _until_room(grants: list[Grant], limits: BudgetLimits, cap: int, at: float) -> float:
    """Seconds after `at` until the blocks in reach then leave at least one free call."""
    reaching = sorted((g for g in grants if g.last > at - limits.reach_s), key=lambda g: g.last)
    used = sum(g.calls for g in reaching)
    for g in reaching:  # each block leaving the reach frees its calls
        used -= g.calls
        if used < cap:
            return max(0.0, g.last + limits.reach_s - at)
    return 0.0


def pressure(state: BudgetState, limits: BudgetLimits, now: float, retry_after: float | None) -> BudgetState:
    """Record a refusal the budget did not predict: less share for everyone, and any Retry-After."""
    blocked = max(state.blocked_until, now + retry_after) if retry_after else state.blocked_until
    recent = state.pressure_at > 0 and now - state.pressure_at < limits.window_s / 4
    factor = factor_at(state, limits, now) if recent else max(limits.floor, factor_at(state, limits, now) / 2)
    return replace(state, factor=factor, pressure_at=now, blocked_until=blocked, pressures=state.pressures + 1)
