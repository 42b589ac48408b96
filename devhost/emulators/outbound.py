"""Outbound webhook calls for both emulators: a bounded queue, a worker, faults and stats.

The emulators change data on their request threads; they hand each call here and return at
once, so a slow or dead receiver never holds up the request that made the change (both
services deliver asynchronously). A background thread runs an asyncio loop that sends with
at most `concurrency` calls in flight, `timeout_s` per attempt, and one more attempt only for
the statuses in `retry_statuses`. Faults (drop, duplicate, reorder, delay) apply per call.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

FAULT_KINDS = frozenset({"drop", "duplicate", "reorder", "delay"})
REORDER_HOLD_S = 1.0  # a held-back call goes out after the next one, or after this long if none comes


@dataclass(frozen=True)
class Call:
    """One webhook request as the service would send it."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    label: str = ""  # e.g. "lead Update": counted in stats
    on_failed: Callable[[str], None] | None = None  # told why, when the call ends without a 2xx


@dataclass
class EventFault:
    """Applies to `count` calls, or to each call with probability `rate` (until cleared)."""

    kind: str
    count: int | None = None
    rate: float | None = None
    delay_s: float = 0.0


def fires(fault: Any) -> bool:
    """Whether an armed fault (`count` left, or a `rate`) fires on this call; spends one of its count.
    The caller holds its emulator's lock."""
    if fault.count is not None:
        if fault.count <= 0:
            return False
        fault.count -= 1
        return True
    return fault.rate is not None and random.random() < fault.rate


@dataclass
class OutboundStats:
    submitted: int = 0
    sent: int = 0  # calls that got a 2xx (after a retry, if any)
    failed: int = 0  # calls that ended without a 2xx
    attempts: int = 0
    retries: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0
    overflow: int = 0  # refused because the queue was full
    in_flight: int = 0
    max_in_flight: int = 0
    by_status: Counter[str] = field(default_factory=Counter)  # per attempt: "200", "503", "timeout", "error"
    by_label: Counter[str] = field(default_factory=Counter)

    def as_json(self, pending: int) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not isinstance(v, Counter)}
        out.update(by_status=dict(self.by_status), by_label=dict(self.by_label), pending=pending)
        return out


class Outbound:
    """`submit()` from any thread; never blocks. `stats()` and faults are thread-safe."""

    def __init__(self, name: str, *, concurrency: int, timeout_s: float,
                 retry_statuses: frozenset[int] = frozenset(), allowed_faults: frozenset[str] = FAULT_KINDS,
                 queue_max: int = 100_000) -> None:
        self.name = name
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry_statuses = retry_statuses
        self.allowed_faults = allowed_faults
        self.queue_max = queue_max
        self.lock = threading.Lock()
        self.faults: list[EventFault] = []
        self._stats = OutboundStats()
        self._pending = 0
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[Call] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-webhooks", daemon=True)
        self._ready = threading.Event()
        self._thread.start()
        self._ready.wait(10)

    # -- control (any thread) ------------------------------------------------------------
    def submit(self, call: Call) -> None:
        with self.lock:
            self._stats.submitted += 1
            self._stats.by_label[call.label] += 1
            if self._pending >= self.queue_max:
                self._stats.overflow += 1
                return
            self._pending += 1
        try:
            self._loop.call_soon_threadsafe(self._enqueue, call)
        except RuntimeError:  # stopped: the emulator is shutting down, so the call goes nowhere
            with self.lock:
                self._pending -= 1

    def add_fault(self, fault: EventFault) -> None:
        if fault.kind not in self.allowed_faults:
            raise ValueError(f"kind must be one of {sorted(self.allowed_faults)}")
        if fault.count is None and fault.rate is None:
            fault.count = 1
        if fault.rate is not None and not 0 <= fault.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if fault.kind == "delay" and fault.delay_s <= 0:
            raise ValueError("delay needs delay_s > 0")
        with self.lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def reset(self) -> None:
        """Faults and counters back to zero; calls already queued still go out."""
        with self.lock:
            self.faults.clear()
            self._stats = OutboundStats(in_flight=self._stats.in_flight)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return self._stats.as_json(self._pending)

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._shutdown)
        self._thread.join(timeout=5)

    def _shutdown(self) -> None:
        """Cancel the dispatcher and every call in flight, then let `_run` close the loop."""
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.stop()

    # -- the worker (its own thread and loop) ----------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue()
        self._sem = asyncio.Semaphore(self.concurrency)
        # verify=False: receivers in tests and the local host use self-signed or no TLS.
        self._client = httpx.AsyncClient(timeout=self.timeout_s, verify=False,
                                         limits=httpx.Limits(max_connections=self.concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: Call | None = None
        self._loop.create_task(self._dispatch())
        self._ready.set()
        self._loop.run_forever()
        # Stopped: let the cancelled tasks finish, close the client, then the loop (no task is left pending).
        pending = asyncio.all_tasks(self._loop)
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def _enqueue(self, call: Call) -> None:
        assert self._queue is not None
        self._queue.put_nowait(call)

    def _take_fault(self) -> EventFault | None:
        with self.lock:
            return next((fault for fault in self.faults if fires(fault)), None)

    def _spawn(self, call: Call, delay_s: float = 0.0, after: asyncio.Task[None] | None = None) -> asyncio.Task[None]:
        task = self._loop.create_task(self._deliver(call, delay_s, after))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _dispatch(self) -> None:
        assert self._queue is not None
        while True:
            try:
                call = await asyncio.wait_for(self._queue.get(), REORDER_HOLD_S if self._held else None)
            except TimeoutError:
                held, self._held = self._held, None
                if held is not None:
                    self._spawn(held)
                continue
            fault = self._take_fault()
            kind = fault.kind if fault else None
            if kind == "drop":
                self._count(dropped=1)
                self._done()
                continue
            if kind == "reorder" and self._held is None:
                self._count(reordered=1)
                self._held = call
                continue
            if kind == "duplicate":
                self._count(duplicated=1)
                with self.lock:
                    self._pending += 1
                self._spawn(call)
            task = self._spawn(call, fault.delay_s if fault and kind == "delay" else 0.0)
            if kind == "delay":
                self._count(delayed=1)
            held, self._held = self._held, None
            if held is not None:
                self._spawn(held, after=task)  # the later call is delivered first

    async def _deliver(self, call: Call, delay_s: float, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            await asyncio.wait([after])
        if delay_s:
            await asyncio.sleep(delay_s)
        async with self._sem:
            self._count(in_flight=1)
            try:
                status = await self._attempt(call)
                if isinstance(status, int) and status in self.retry_statuses:
                    self._count(retries=1)
                    status = await self._attempt(call)
                if isinstance(status, int) and 200 <= status < 300:
                    self._count(sent=1)
                else:
                    self._count(failed=1)
                    if call.on_failed is not None:
                        call.on_failed(f"HTTP {status}" if isinstance(status, int) else status)
            finally:
                self._count(in_flight=-1)
                self._done()

    async def _attempt(self, call: Call) -> int | str:
        """The status code, or why there is none."""
        self._count(attempts=1)
        try:
            resp = await self._client.request(call.method, call.url, headers=call.headers, content=call.body)
        except httpx.TimeoutException:
            self._status("timeout")
            return f"timed out after {self.timeout_s:g} s"
        except httpx.HTTPError as exc:
            self._status("error")
            return f"{type(exc).__name__}: {exc}"
        self._status(str(resp.status_code))
        return resp.status_code

    def _count(self, **deltas: int) -> None:
        with self.lock:
            s = self._stats
            for key, delta in deltas.items():
                setattr(s, key, getattr(s, key) + delta)
            s.max_in_flight = max(s.max_in_flight, s.in_flight)

    def _status(self, key: str) -> None:
        with self.lock:
            self._stats.by_status[key] += 1

    def _done(self) -> None:
        with self.lock:
            self._pending -= 1
