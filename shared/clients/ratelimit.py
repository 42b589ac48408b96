"""A client-side call budget so this process cannot trip Marketo's rate (606) or concurrency (615) limits.

Marketo allows 100 calls per sliding 20 s and 10 calls in flight per instance, shared by
every integration. `CallBudget` keeps this process under a lower ceiling
(default 90 / 20 s, 8 in flight). One instance per base URL is shared by every client in the
process through `budget_for`, because two clients of the same instance draw on one limit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class CallBudget:
    """Blocks callers until a call fits both the sliding window and the concurrency ceiling.

    Thread-safe. `slot()` is a context manager held for the duration of one HTTP call.
    """

    def __init__(
        self,
        calls: int = 90,
        window_s: float = 20.0,
        concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if calls < 1 or concurrency < 1 or window_s <= 0:
            raise ValueError("calls and concurrency must be >= 1 and window_s > 0")
        self.calls = calls
        self.window_s = window_s
        self.concurrency = concurrency
        self._clock = clock
        self._sent: deque[float] = deque()
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(concurrency)

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
            self._take_rate()
            yield
        finally:
            self._slots.release()

    def in_window(self) -> int:
        """Calls started in the current window (for tests and metrics)."""
        with self._cond:
            now = self._clock()
            return sum(1 for t in self._sent if t > now - self.window_s)


_registry: dict[tuple[str, int, float, int], CallBudget] = {}
_registry_lock = threading.Lock()


def budget_for(base_url: str, calls: int = 90, window_s: float = 20.0, concurrency: int = 8) -> CallBudget:
    """The process-wide budget of one Marketo instance with these limits (created on first use).

    Every client, and every rebuild of the services, with the same instance and limits draws
    on the same budget.
    """
    key = (base_url.rstrip("/").lower(), calls, window_s, concurrency)
    with _registry_lock:
        budget = _registry.get(key)
        if budget is None:
            budget = _registry[key] = CallBudget(calls, window_s, concurrency)
        return budget
