"""Throughput and scale: initial sync of N Dynamics leads into Marketo, and steady-state changes.

Initial sync: N leads are seeded in the Dataverse emulator in bulk (as an import would),
the app is started fresh (so its peak RSS belongs to this N alone), the Dataverse poller
runs once and the work queues drain; then every one of the N people must exist in Marketo.
Marketo's rate limit forces a minimum time on this: each 300 people need one read (is the
email there already?) and one write, at 100 calls per 20 s.

When n is cut short by its time budget, `seconds` is extrapolated from the rate reached
(`complete` false, `stopped_after_s` the real time): the figures still compare, and say so.

Steady state: the same N people are changed in Marketo, the Marketo poller runs and the
queues drain; changes per second over that round.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from bench.system import BenchSystem, people_with, seed_leads

MARKETO_CALLS_PER_S = 100 / 20


def forced_seconds(calls: int) -> float:
    return calls / MARKETO_CALLS_PER_S


def sync_until(system: BenchSystem, tag: str, n: int, deadline: float) -> dict[str, int]:
    """Poll Dataverse and drain the queues until n people tagged `tag` are in Marketo, or the
    (monotonic) deadline passes; the people found."""
    people: dict[str, int] = {}
    for _ in range(4):  # records re-enqueued by the appliers (e.g. a lost race) land in another round
        if not (system.poll_within(deadline - time.monotonic(), marketo=False)
                and system.drained(deadline - time.monotonic())):
            break
        people = people_with(system, tag)
        if len(people) >= n:
            break
    return people


def initial_sync(system: BenchSystem, n: int, *, echo: bool,
                 budget_s: float) -> tuple[dict[str, Any], str, dict[str, int]]:
    """Seed n leads, restart the app, poll Dataverse once and wait for all n in Marketo.

    Waits at most `budget_s` after the poll starts; a run cut short says so
    (`complete` false) and gives the rate it reached and the time that rate extrapolates to.
    """
    key = f"scale.n{label(n)}"
    tag = f"s{uuid.uuid4().hex[:6]}"
    records = [{"firstname": f"S{i}", "lastname": tag, "emailaddress1": f"{tag}-{i}@example.com",
                "companyname": "Scale Ltd", "subject": "bench"} for i in range(n)]
    ids = seed_leads(system, records)
    system.start_app(None)
    rss_start = system.app_memory_kb()["VmRSS"]
    cpu_before = system.cpu_seconds()
    before = system.counters()
    started = time.monotonic()
    deadline = started + budget_s
    people = sync_until(system, tag, n, deadline)
    elapsed = time.monotonic() - started
    used = system.counters() - before
    cpu = {name: seconds - cpu_before[name] for name, seconds in system.cpu_seconds().items()}
    memory = system.app_memory_kb()
    if len(people) < n:
        people = people_with(system, tag)
    complete = len(people) >= n
    forced = forced_seconds(2 * math.ceil(n / 300))
    seconds = elapsed if complete else elapsed * n / max(1, len(people))
    out: dict[str, Any] = {
        f"{key}.complete": complete,
        f"{key}.seconds": round(seconds, 1),
        f"{key}.people_in_marketo": len(people),
        f"{key}.marketo_calls": used.marketo_calls,
        f"{key}.dataverse_requests": used.dataverse_requests,
        f"{key}.people_per_s": round(len(people) / elapsed, 1),
        f"{key}.rate_limit_forced_s": round(forced, 1),
        f"{key}.vs_rate_limit": round(seconds / forced, 2),
        f"{key}.rss_start_mb": round(rss_start / 1024, 1),
        f"{key}.rss_peak_mb": round(memory["VmHWM"] / 1024, 1),
    }
    for name, seconds in cpu.items():
        out[f"{key}.cpu_s.{name}"] = round(seconds, 1)
        out[f"{key}.cpu_ms_per_person.{name}"] = round(seconds * 1000 / max(1, len(people)), 2)
    if not complete:
        out[f"{key}.stopped_after_s"] = round(elapsed, 1)
    if echo and complete:  # our n creations come back through Marketo's feed; the next poll reads and drops them
        before = system.counters()
        started = time.monotonic()
        system.poll(dataverse=False)
        system.drain(timeout=3600)
        out[f"{key}.echo_seconds"] = round(time.monotonic() - started, 1)
        out[f"{key}.echo_marketo_calls"] = (system.counters() - before).marketo_calls
    by_email = {r["emailaddress1"]: lead_id for r, lead_id in zip(records, ids, strict=True)}
    pairs = {by_email[email]: mid for email, mid in people.items() if email in by_email}
    return out, tag, pairs


def steady_state(system: BenchSystem, marketo_ids: list[int]) -> dict[str, Any]:
    """Change every person in Marketo at once; one Marketo poll and the drain, timed."""
    stamp = uuid.uuid4().hex[:4]
    for start in range(0, len(marketo_ids), 5000):
        system.marketo.bulk([{"id": mid, "title": f"T{start + i}-{stamp}"}
                             for i, mid in enumerate(marketo_ids[start:start + 5000])])
    before = system.counters()
    started = time.monotonic()
    system.poll(dataverse=False)
    system.drain(timeout=3600)
    elapsed = time.monotonic() - started
    used = system.counters() - before
    n = len(marketo_ids)
    forced = forced_seconds(2 * math.ceil(n / 300))  # feed pages + person reads
    return {"scale.steady.changes": n, "scale.steady.seconds": round(elapsed, 1),
            "scale.steady.changes_per_s": round(n / elapsed, 1),
            "scale.steady.marketo_calls": used.marketo_calls,
            "scale.steady.dataverse_requests": used.dataverse_requests,
            "scale.steady.vs_rate_limit": round(elapsed / forced, 2)}


def label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)
