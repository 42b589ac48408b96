"""Change events wired: propagation latency, the cost of a burst, and what a lossy feed loses.

Both emulators call the app's receivers as `python -m devhost run` wires them
(`devhost.events.wire_app`: a Dataverse webhook registered through the Web API, a Marketo
trigger campaign). Three measurements:

- latency at 4 edits/s with both pollers every 5 minutes (`latency.events.*`): the load
  and watcher of `bench.latency`, so any edit seen arrived by an event;
- a burst of N edits made at once (an import's bulk update) on one side, each way
  (`api_cost.events_burst.*`): first with events off, picked up by one poll of that side
  plus the echo poll of the other (the polling path, as in `bench.cost`); then the same
  people edited again with events on, counted from the edit until every value arrived and
  nothing is left anywhere (webhook calls, buffer, queues), echo events included;
- 20 % of the events dropped by both emulators, with a shortened poll
  (`latency.events_dropped20.*`): every edit must still arrive, through the poll.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import cost, latency
from bench.system import BenchSystem, Counters
from devhost.events import wire_app
from shared.state.eventbuffer import DRAIN_QUEUE, EventBuffer
from shared.state.storage import Storage
from shared.state.workqueue import WorkQueues

EVENTS_POLL_S = 300  # the relaxed schedule events allow: both pollers every 5 minutes
QUIET_CHECKS = 6  # consecutive empty looks, 0.5 s apart (longer than the 1 s coalescing window)
# Reads an app process makes once, at its first use of a service (metadata, the field map's
# check, who it is): not a cost of the changes, and they land in whichever path runs first.
STARTUP = frozenset({"dataverse GET EntityDefinitions", "dataverse GET WhoAmI",
                     "marketo GET /rest/v1/leads/describe.json"})


def wire(system: BenchSystem) -> None:
    """Point both emulators' events at the app now running (its port changes at each start)."""
    wire_app(system.env, system.app_url, system.function_key)


def events_off(system: BenchSystem) -> None:
    system.marketo.webhook_fault("drop", rate=1.0)
    system.dataverse.webhook_fault("drop", rate=1.0)


def clear_event_faults(system: BenchSystem) -> None:
    system.marketo.clear_webhook_faults()
    system.dataverse.clear_webhook_faults()


def idle(system: BenchSystem) -> bool:
    """Nothing on its way: no webhook call queued or in flight, no id buffered, no message queued."""
    for stats in (system.marketo.webhook_stats(), system.dataverse.webhook_stats()):
        if stats["pending"] or stats["in_flight"]:
            return False
    storage = Storage(system.env["AzureWebJobsStorage"])
    buffer = EventBuffer(storage, WorkQueues(storage))
    if buffer.pending() or system.depth():
        return False
    return int(storage.queue(DRAIN_QUEUE).get_queue_properties().approximate_message_count or 0) == 0


def settle(system: BenchSystem, arrived: Callable[[], bool], timeout: float) -> tuple[float, int]:
    """Wait until `arrived()` and then until the system stays idle; seconds until the values
    arrived, and the webhook calls lost on the way (a call that failed: Marketo never tries
    again). When calls were lost and the system is idle with values missing, one poll of
    both sides runs, as the scheduled poll would (its calls count)."""
    started = time.monotonic()
    deadline = started + timeout
    lost_before = _lost(system)
    quiet, polled = 0, False
    while not arrived():
        if time.monotonic() > deadline:
            raise RuntimeError(f"a burst did not arrive within {timeout:g} s")
        quiet = quiet + 1 if not polled and _lost(system) > lost_before and idle(system) else 0
        if quiet >= QUIET_CHECKS:
            system.sync(1)
            polled = True
        time.sleep(0.5)
    took = time.monotonic() - started
    quiet = 0
    while quiet < QUIET_CHECKS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"events still on their way after {timeout:g} s")
        quiet = quiet + 1 if idle(system) else 0
        time.sleep(0.5)
    return took, _lost(system) - lost_before


class Burst:
    """N linked people edited at once on one side; where the values must arrive."""

    def __init__(self, system: BenchSystem, tag: str, pairs: list[tuple[str, int]], side: str) -> None:
        self.system, self.tag, self.pairs, self.side = system, tag, pairs, side

    def edit(self, label: str) -> dict[Any, str]:
        """One bulk edit (uncounted, like an import); the value each person must get on the other side."""
        stamp = f"{label}{uuid.uuid4().hex[:4]}"
        if self.side == "dynamics":
            self.system.dataverse.bulk_update("leads", [{"leadid": lid, "jobtitle": f"{stamp}-{i}"}
                                                        for i, (lid, _) in enumerate(self.pairs)])
            return {mid: f"{stamp}-{i}" for i, (_, mid) in enumerate(self.pairs)}
        self.system.marketo.bulk([{"id": mid, "title": f"{stamp}-{i}"} for i, (_, mid) in enumerate(self.pairs)])
        return {lid: f"{stamp}-{i}" for i, (lid, _) in enumerate(self.pairs)}

    def wrong(self, wanted: dict[Any, str]) -> int:
        if self.side == "dynamics":
            now = {int(p["id"]): p.get("title") for p in self.system.marketo.all_leads()
                   if self.tag in str(p.get("email") or "")}
        else:
            now = {r["leadid"]: r.get("jobtitle") for r in self.system.dataverse.find("leads", lastname=self.tag)}
        return sum(1 for key, value in wanted.items() if now.get(key) != value)

    def polled(self) -> tuple[Counters, Counters]:
        """The polling path: the edited side's poll, then the other side's (our writes' echo);
        the calls the changes cost, and the start-up reads apart."""
        wanted = self.edit("P")
        before, calls = self.system.counters(), self.system.calls_by_endpoint()
        for marketo in (self.side == "marketo", self.side != "marketo"):
            self.system.poll(marketo=marketo, dataverse=not marketo)
            self.system.drain()
        spent = self.spent("by the poll", before, calls)
        if self.wrong(wanted):
            raise RuntimeError(f"{self.wrong(wanted)} values did not arrive by the poll")
        return spent

    def by_events(self, timeout: float) -> tuple[Counters, Counters, float, int]:
        before, calls = self.system.counters(), self.system.calls_by_endpoint()
        wanted = self.edit("E")
        took, lost = settle(self.system, lambda: self.wrong(wanted) == 0, timeout)
        return *self.spent("by events", before, calls), took, lost

    def spent(self, path: str, before: Counters, calls: Counter[str]) -> tuple[Counters, Counters]:
        """Counted calls since `before` less the start-up reads, and those reads; the calls by
        endpoint go to the bench's log."""
        by_endpoint = self.system.calls_by_endpoint() - calls
        self.system.say(f"  burst of {len(self.pairs)} edits in {self.side}, {path}: "
                        + ", ".join(f"{name} {count}" for name, count in sorted(by_endpoint.items())))
        startup = Counters(sum(n for e, n in by_endpoint.items() if e in STARTUP and e.startswith("marketo")),
                           sum(n for e, n in by_endpoint.items() if e in STARTUP and e.startswith("dataverse")))
        return self.system.counters() - before - startup, startup


def burst(system: BenchSystem, pools: dict[str, tuple[str, list[tuple[str, int]]]],
          timeout: float = 900.0) -> dict[str, Any]:
    """The burst each way, by the poll (events off) and by events; `pools`: side -> (tag, pairs)."""
    system.start_app(None)
    events_off(system)
    bursts = {side: Burst(system, tag, pairs, side) for side, (tag, pairs) in pools.items()}
    polled = {side: b.polled() for side, b in bursts.items()}  # side -> (calls, start-up reads)
    clear_event_faults(system)
    wire(system)
    out: dict[str, Any] = {}
    ratios = []
    for side, b in bursts.items():
        name = "d2m" if side == "dynamics" else "m2d"
        spent, startup, took, lost = b.by_events(timeout)
        before = system.counters()
        system.sync(1)  # the scheduled poll that follows reads the same changes from both feeds
        after = system.counters() - before
        key = f"api_cost.events_burst.{name}"
        poll, poll_startup = polled[side]
        out[f"{key}.edits"] = len(b.pairs)
        out[f"{key}.poll_calls"] = poll.total
        out[f"{key}.poll_marketo_calls"] = poll.marketo_calls
        out[f"{key}.poll_dataverse_requests"] = poll.dataverse_requests
        out[f"{key}.poll_startup_calls"] = poll_startup.total
        out[f"{key}.event_calls"] = spent.total
        out[f"{key}.event_marketo_calls"] = spent.marketo_calls
        out[f"{key}.event_dataverse_requests"] = spent.dataverse_requests
        out[f"{key}.event_startup_calls"] = startup.total
        out[f"{key}.arrived_s"] = round(took, 1)
        out[f"{key}.event_calls_lost"] = lost  # failed on the way: the poll brought those values
        out[f"{key}.next_poll_calls"] = after.total
        out[f"{key}.ratio"] = round(spent.total / poll.total, 2)
        ratios.append(out[f"{key}.ratio"])
    out["api_cost.events_burst_ratio"] = max(ratios)
    system.stop_app()
    return out


def propagation(system: BenchSystem, pool: list[tuple[str, int]], *, duration_s: float,
                edits_per_s: float) -> dict[str, Any]:
    """Latency with events wired and both pollers every 5 minutes."""
    system.start_app(EVENTS_POLL_S)
    wire(system)
    before, started = system.counters(), time.monotonic()
    edits = latency.drive(system, pool, duration_s=duration_s, edits_per_s=edits_per_s, grace_s=30)
    spent, seconds = system.counters() - before, time.monotonic() - started
    system.stop_app()
    out = latency.summarize(edits, EVENTS_POLL_S, duration_s, key="latency.events")
    # What the event path spends at this rate: Marketo allows 100 calls / 20 s (LeadSync keeps to 90).
    out["latency.events.marketo_calls_per_s"] = round(spent.marketo_calls / seconds, 2)
    out["latency.events.dataverse_requests_per_s"] = round(spent.dataverse_requests / seconds, 2)
    return out


def dropped(system: BenchSystem, pool: list[tuple[str, int]], *, poll_s: int, duration_s: float,
            edits_per_s: float, rate: float = 0.2) -> dict[str, Any]:
    """Both emulators drop `rate` of their events; the poll (every `poll_s`) must bring the rest."""
    system.start_app(poll_s)
    wire(system)
    dropped_before = _dropped(system)
    system.marketo.webhook_fault("drop", rate=rate)
    system.dataverse.webhook_fault("drop", rate=rate)
    try:
        edits = latency.drive(system, pool, duration_s=duration_s, edits_per_s=edits_per_s,
                              grace_s=2 * poll_s + 30)
        lost_events = _dropped(system) - dropped_before
    finally:
        clear_event_faults(system)
        system.stop_app()
    key = f"latency.events_dropped{round(rate * 100)}"
    out = latency.summarize(edits, poll_s, duration_s, key=key)
    out.pop(f"{key}.native_ratio", None)
    out[f"{key}.lost"] = out[f"{key}.unseen"]
    out[f"{key}.poll_s"] = poll_s
    out[f"{key}.events_dropped"] = lost_events
    return out


def _dropped(system: BenchSystem) -> int:
    return _webhook_calls(system, "dropped")


def _lost(system: BenchSystem) -> int:
    """Webhook calls that never reached the app: dropped, or failed (no answer, or not a 2xx)."""
    return _webhook_calls(system, "dropped", "failed")


def _webhook_calls(system: BenchSystem, *counts: str) -> int:
    """Both emulators' webhook calls so far, summed over the given counts."""
    return sum(int(stats[name]) for stats in (system.marketo.webhook_stats(), system.dataverse.webhook_stats())
               for name in counts)


def measure(system: BenchSystem, *, burst_n: int, pool_n: int, duration_s: float, edits_per_s: float,
            dropped_poll_s: int, dropped_s: float) -> dict[str, Any]:
    """Every events figure, on people linked first (the app polling on demand, events not wired)."""
    system.start_app(None)
    pools = {side: cost.linked_people(system, burst_n, f"ev{side[0]}") for side in ("dynamics", "marketo")}
    _, pool = cost.linked_people(system, pool_n, "evl")
    out = burst(system, pools)
    out.update(propagation(system, pool, duration_s=duration_s, edits_per_s=edits_per_s))
    out.update(dropped(system, pool, poll_s=dropped_poll_s, duration_s=dropped_s, edits_per_s=edits_per_s))
    return out
