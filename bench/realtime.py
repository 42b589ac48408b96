"""Real-time create: latency of `POST /api/sync-person`, as Marketo's webhook calls it.

New people (the call reads the person from Marketo, checks Dynamics for the email and
creates the lead), existing people (linked already: the call answers "exists"), and new
people from 20 concurrent callers, Marketo's webhook concurrency. Marketo's rate window
(100 calls / 20 s) is left to empty before each part so that one part's calls do not
throttle the next.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx

from bench.stats import percentiles
from bench.system import BenchSystem

CONCURRENCY = 20
RATE_WINDOW_S = 21.0


def measure(system: BenchSystem, sequential: int, per_caller: int) -> dict[str, Any]:
    system.start_app(None)
    tag = f"rt{uuid.uuid4().hex[:6]}"
    people = [system.marketo.create_lead(email=f"{tag}-{i}@example.com", firstName="Real", lastName=f"Time{i}",
                                         company="Bench")
              for i in range(2 * system.worker_processes + sequential + CONCURRENCY * per_caller)]
    out: dict[str, Any] = {"realtime.sequential_calls": sequential,
                           "realtime.concurrent_calls": CONCURRENCY * per_caller}
    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=CONCURRENCY + 5)) as http:
        # Warm-up: services, tokens, Dynamics metadata, in every worker process (calls in turn
        # go round the workers).
        warm = 2 * system.worker_processes
        _timed(system, http, people[:warm], expect=201)
        people = people[warm:]
        time.sleep(RATE_WINDOW_S)
        new = _timed(system, http, people[:sequential], expect=201)
        existing = _timed(system, http, people[:sequential], expect=200)
        time.sleep(RATE_WINDOW_S)
        concurrent: list[float] = []
        lock = threading.Lock()
        errors: list[str] = []

        def caller(mine: list[int]) -> None:
            try:
                times = _timed(system, http, mine, expect=201)
            except AssertionError as exc:
                errors.append(str(exc))
                return
            with lock:
                concurrent.extend(times)

        rest = people[sequential:]
        threads = [threading.Thread(target=caller, args=(rest[i::CONCURRENCY],)) for i in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"{len(errors)} concurrent callers failed: {errors[0]}")
    for name, values in (("new", new), ("existing", existing), ("concurrent20", concurrent)):
        p50, p95, top = percentiles(values, (50, 95, 100))
        out[f"realtime.{name}.p50_ms"] = round(p50, 1)
        out[f"realtime.{name}.p95_ms"] = round(p95, 1)
        out[f"realtime.{name}.max_ms"] = round(top, 1)
    out["realtime.p95_ms_20_concurrent"] = out["realtime.concurrent20.p95_ms"]
    return out


def _timed(system: BenchSystem, http: httpx.Client, people: list[int], *, expect: int) -> list[float]:
    times = []
    for marketo_id in people:
        start = time.perf_counter()
        response = system.sync_person(http, marketo_id)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != expect:
            raise AssertionError(f"sync-person {marketo_id}: {response.status_code} {response.text[:200]}")
    return times
