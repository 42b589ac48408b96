"""A client-side call budget so LeadSync cannot trip a service's rate or concurrency limits.

Marketo allows 100 calls per sliding 20 s and 10 calls in flight per subscription;
Dataverse 6,000 requests per 5 min and 52 in flight per application user. Both limits are
shared by every LeadSync instance, worker process and function group, and by the customer's
other integrations. `CallBudget` is what a client holds: `slot()` waits until one call may
start. On its own it keeps one process under a ceiling (tests, tools); given an
`AllowanceSource` (the shared budget in `shared.state.budget`, composed in
`shared.runtime`) it draws blocks of calls and leased concurrency slots from one budget that
every process shares, so one storage request serves a block of calls, not each call.
`pressure()` tells the budget a limit answered that it did not predict (someone else spends
the same limit), so every process slows down together.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("leadsync")
FAILURE_REPORT_S = 60.0  # while the budget's storage fails, one warning line this often
_jitter = random.Random()


@dataclass(frozen=True)
class LeaseRequest:
    """What one process asks of the shared budget in one storage round trip."""

    grant_id: str  # the id the new block of calls is recorded under (unique per holder)
    calls: int  # calls wanted now (0: only the slots change)
    slots: int  # concurrency slots this process wants to hold in total
    in_use: int  # slots it holds and cannot give back (calls in flight)
    # Finished block id -> (calls it started, seconds from asking for it to its last start).
    spent: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    # A block (its id) to extend, while the budget has room, instead of finishing it (`spent`)
    # and granting `grant_id`: the process keeps counting its calls per window across both.
    renew: str = ""


@dataclass(frozen=True)
class LeaseAnswer:
    calls: int  # calls granted, to be started within `spend_within_s`, at most this many per `window_s`
    slots: int  # concurrency slots now held, valid for `slot_ttl_s` unless renewed
    retry_in: float  # seconds to wait before asking again when short of either
    spend_within_s: float
    slot_ttl_s: float
    window_s: float = 0.0  # the limit's window (0: the block's calls are a total, not per window)
    ample: bool = False  # the budget has room to spare: what is unused may age out instead of going back
    renewed: bool = False  # the block in `LeaseRequest.renew` was extended (no new block)


class AllowanceSource(Protocol):
    """Where a `CallBudget` draws its allowance from: one budget shared by every process."""

    holder: str

    def lease(self, request: LeaseRequest) -> LeaseAnswer:
        """Grant what fits the shared limits now (possibly nothing) and record it."""
        ...

    def pressure(self, retry_after: float | None) -> None:
        """Record that the service refused a call the budget allowed; honour `retry_after`."""
        ...


class CallBudget:
    """Blocks callers until a call fits both the rate and the concurrency ceiling.

    Thread-safe. `slot()` is a context manager held for the duration of one HTTP call.
    Without `source` the ceiling is this process's alone (`calls` per `window_s`,
    `concurrency` in flight). With `source`, `concurrency` only caps this process and the
    shared budget decides the rest: blocks of `block` calls (per window, while the block
    lasts), slots renewed while busy and given back after `idle_s` without calls, unless
    the budget said it has room to spare (then they expire by themselves: no storage request).
    """

    def __init__(
        self,
        calls: int = 90,
        window_s: float = 20.0,
        concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        source: AllowanceSource | None = None,
        block: int = 10,
        idle_s: float = 2.0,
        background: bool = True,
    ) -> None:
        if calls < 1 or concurrency < 1 or window_s <= 0 or block < 1:
            raise ValueError("calls, concurrency and block must be >= 1 and window_s > 0")
        self.calls = calls
        self.window_s = window_s
        self.concurrency = concurrency
        self.source = source
        self.block = block
        self.idle_s = idle_s
        self._clock = clock
        self._sent: deque[float] = deque()
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(concurrency)
        # The shared budget's local view: the current block and the leased slots.
        self._seq = 0
        self._grant_id: str | None = None
        self._pool = 0  # calls the current block allows per window (0: none)
        self._used = 0
        self._starts: deque[float] = deque()  # the current block's call starts within its window
        self._block_window = 0.0
        self._ample = False
        self._spend_by = 0.0
        self._asked_at = 0.0
        self._last_start = 0.0
        self._held = 0
        self._slots_until = 0.0
        self._slot_ttl = 0.0
        self._in_use = 0
        self._waiting = 0
        self._leasing = False
        self._retry_at = 0.0
        self._last_busy = clock()
        self._last_pressure = float("-inf")
        self._closed = False
        self._failing_since: float | None = None  # when renewals began to fail (None: they work)
        self._warned_at = 0.0
        self._thread: threading.Thread | None = None
        self._background = background
        self.leases = 0
        """Storage round trips this process made for the shared budget (for tests and metrics)."""

    # ---- the process-local ceiling

    def _take_rate(self) -> None:
        with self._cond:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.calls:
                    self._sent.append(now)
                    return
                # The oldest call leaves the window at _sent[0] + window_s.
                self._cond.wait(max(0.001, self._sent[0] + self.window_s - now))

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the concurrency slots and one place in the window for a single call."""
        self._slots.acquire()
        try:
            if self.source is None:
                self._take_rate()
                yield
                return
            self._take_shared()
            try:
                yield
            finally:
                with self._cond:
                    self._in_use -= 1
                    self._last_busy = self._clock()
                    self._cond.notify_all()
        finally:
            self._slots.release()

    def in_window(self) -> int:
        """Calls started in the current window by the local ceiling (for tests and metrics)."""
        with self._cond:
            now = self._clock()
            return sum(1 for t in self._sent if t > now - self.window_s)

    # ---- the shared budget

    def _take_shared(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while True:
                    now = self._clock()
                    if now >= self._slots_until:
                        self._held = self._in_use  # expired slots are someone else's now
                    room = self._block_room(now)
                    if self._in_use < self._held and room:
                        self._starts.append(now)
                        self._used += 1
                        self._in_use += 1
                        self._last_start = now
                        return
                    if self._leasing or now < self._retry_at:
                        self._cond.wait(1.0 if self._leasing else max(0.001, self._retry_at - now))
                        continue
                    finished = not room
                    # A long block that ran out of time, not of calls per window: ask to extend it.
                    renew = finished and self._ample and self._pool > 0 and now >= self._spend_by
                    self._lease_locked(finish=finished, calls=self.block if finished else 0,
                                       slots=min(self.concurrency, self._in_use + self._waiting), renew=renew)
            finally:
                self._waiting -= 1

    def _block_room(self, now: float) -> bool:
        """Whether the current block lets one more call start now (holding `_cond`)."""
        if self._pool <= 0 or now >= self._spend_by:
            return False  # a block's calls must start within its horizon, or not at all
        if self._block_window <= 0:
            return self._used < self._pool
        while self._starts and self._starts[0] <= now - self._block_window:
            self._starts.popleft()
        return len(self._starts) < self._pool

    def _lease_locked(self, *, finish: bool, calls: int, slots: int, renew: bool = False) -> LeaseAnswer:
        """One round trip to the source; called and returns holding `_cond` (released meanwhile).

        `finish` closes the current block: the calls it never started go back to the budget.
        """
        assert self.source is not None
        spent: dict[str, tuple[int, float]] = {}
        old = (self._grant_id, self._pool, self._used) if renew and self._grant_id is not None else None
        if finish and self._grant_id is not None:
            # The rest of the old block was never started, and none will start after its last one.
            spent[self._grant_id] = (self._used, self._last_start - self._asked_at)
            self._grant_id, self._pool, self._used = None, 0, 0
        self._seq += 1
        grant_id = f"{self.source.holder}.{self._seq}"
        request = LeaseRequest(grant_id, calls, max(slots, self._in_use), self._in_use, spent,
                               renew=old[0] if old else "")
        asked_at = self._clock()
        self._leasing = True
        self._cond.release()
        try:
            answer = self.source.lease(request)
        finally:
            self._cond.acquire()
            self._leasing = False
            self._cond.notify_all()
        self.leases += 1
        if answer.renewed and old is not None:
            # The same block, longer: its calls so far still count, in this window and when reported.
            self._grant_id, self._pool, self._used = old
            self._spend_by = self._asked_at = asked_at
            self._spend_by += answer.spend_within_s
        elif answer.calls > 0:
            # Counting from before the request is conservative: the grant is recorded later.
            self._grant_id, self._pool, self._used = grant_id, answer.calls, 0
            self._starts.clear()
            self._block_window = answer.window_s
            self._spend_by = self._asked_at = self._last_start = asked_at
            self._spend_by += answer.spend_within_s
        self._ample = answer.ample
        self._held = answer.slots
        self._slot_ttl = answer.slot_ttl_s
        self._slots_until = asked_at + answer.slot_ttl_s
        if answer.calls < calls or answer.slots < request.slots:
            # A little jitter, so processes waiting for the same room do not all ask at once;
            # little, because the room is there at `retry_in` and waiting longer wastes it.
            self._retry_at = self._clock() + answer.retry_in + _jitter.uniform(0, min(answer.retry_in / 4, 0.25))
        self._start_background()
        return answer

    def maintain(self) -> None:
        """Renew slots in use before they expire; give back slots and calls after `idle_s` idle.

        When the budget last said it has room to spare, nothing idle goes back: it expires by
        itself, which costs no storage request. The background thread calls this; tests with
        an injected clock call it themselves.
        """
        with self._cond:
            if self.source is None or self._leasing or (self._held == 0 and self._grant_id is None):
                return
            now = self._clock()
            busy = self._in_use > 0 or self._waiting > 0
            idle = not busy and now - self._last_busy >= self.idle_s
            renew = self._held > 0 and now >= self._slots_until - self._slot_ttl / 2
            if self._ample and not busy:
                return
            if idle:
                self._pool = 0
                self._lease_locked(finish=True, calls=0, slots=0)
            elif renew:
                self._lease_locked(finish=False, calls=0, slots=min(self._held, self._in_use + self._waiting))

    def _start_background(self) -> None:
        if self._background and self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="call-budget", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(min(self.idle_s, max(self._slot_ttl / 4, 0.1)))
                if self._closed:
                    return
            self.tend()

    def tend(self) -> None:
        """`maintain()`, reporting failures without flooding the log while storage is down:
        the first with its traceback, then one line a minute, then the recovery."""
        try:
            self.maintain()
        except Exception as exc:  # noqa: BLE001 - a storage hiccup must not end renewals; the next lease retries
            now = self._clock()
            if self._failing_since is None:
                self._failing_since = self._warned_at = now
                log.warning("could not renew or give back the shared call budget", exc_info=True)
            elif now - self._warned_at >= FAILURE_REPORT_S:
                self._warned_at = now
                log.warning("the shared call budget still cannot be renewed or given back after %.0f s (%s: %s)",
                            now - self._failing_since, type(exc).__name__, exc)
            return
        if self._failing_since is not None:
            log.info("the shared call budget is renewed again after %.0f s", self._clock() - self._failing_since)
            self._failing_since = None

    def pressure(self, retry_after: float | None = None) -> None:
        """The service refused a call with a limit code (Marketo 606/615, Dataverse 429).

        The budget allowed the call, so someone else spends the same limit: this process
        drops the rest of its block and waits `retry_after`, and the shared budget (if any)
        makes every process slow down at its next lease. At most one report per second.
        """
        with self._cond:
            now = self._clock()
            self._pool = 0
            if retry_after:
                self._retry_at = max(self._retry_at, now + retry_after)
            if self.source is None or now - self._last_pressure < 1.0:
                return
            self._last_pressure = now
        self.source.pressure(retry_after)

    def close(self) -> None:
        """Stop the background thread and give back what this process holds of the shared budget."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if self.source is not None and (self._held or self._grant_id) and not self._leasing:
                self._pool = 0
                self._lease_locked(finish=True, calls=0, slots=0)


_registry: dict[tuple[str, int, float, int], CallBudget] = {}
_registry_lock = threading.Lock()


def budget_for(base_url: str, calls: int = 90, window_s: float = 20.0, concurrency: int = 8) -> CallBudget:
    """The process-wide local budget of one Marketo instance with these limits (created on first use).

    Every client, and every rebuild of the services, with the same instance and limits draws
    on the same budget. The app itself uses the shared budget (`shared.runtime`).
    """
    key = (base_url.rstrip("/").lower(), calls, window_s, concurrency)
    with _registry_lock:
        budget = _registry.get(key)
        if budget is None:
            budget = _registry[key] = CallBudget(calls, window_s, concurrency)
        return budget
