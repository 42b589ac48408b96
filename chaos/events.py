"""Change events in the campaign: both emulators wired to the app, and their faults.

The campaign wires the app's receivers as `python -m devhost run` does
(`devhost.events.wire_app`) and then, each round:

- edits the people with no same-field collision this round while events are live and
  faulty: Dataverse duplicates, reorders, delays and drops its webhook calls, Marketo drops
  and delays its campaign's (each at `rate`), and the host may be SIGKILLed while they
  arrive; the campaign waits until no event is left anywhere (`wait_idle`);
- makes the collision edits and the merges with every event dropped: the oracle models a
  collision as two edits made before either is synced, and an event applied between the two
  edits would make the later one simply the newer edit (the poll brings them);
- syncs under the usual faults with the event faults armed again (our writes' echoes
  arrive as events), then waits for the events once more: late ones must change nothing.

The checks that already hold the sync to the oracle (lost updates, duplicates, rule
violations) then hold the event path to it; `figures` adds what the emulators did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.state.eventbuffer import DRAIN_QUEUE, EventBuffer
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, WorkQueues

DATAVERSE_FAULTS = ("duplicate", "reorder", "delay", "drop")
MARKETO_FAULTS = ("delay", "drop")
COUNTED = ("submitted", "sent", "failed", "dropped", "duplicated", "reordered", "delayed")


class EventFaults:
    def __init__(self, marketo: Any, dataverse: Any, rate: float) -> None:
        self.marketo, self.dataverse, self.rate = marketo, dataverse, rate
        self._baseline = self._totals()

    def live(self) -> None:
        """Every fault kind at `rate` (a delay of 1.5 s: past the coalescing window)."""
        self.clear()
        for kind in DATAVERSE_FAULTS:
            self.dataverse.webhook_fault(kind, rate=self.rate, delay_s=1.5 if kind == "delay" else 0.0)
        for kind in MARKETO_FAULTS:
            self.marketo.webhook_fault(kind, rate=self.rate, delay_s=1.5 if kind == "delay" else 0.0)

    def hold(self) -> None:
        """Drop every event until the next `live` or `clear`."""
        self.clear()
        self.dataverse.webhook_fault("drop", rate=1.0)
        self.marketo.webhook_fault("drop", rate=1.0)

    def clear(self) -> None:
        self.dataverse.clear_webhook_faults()
        self.marketo.clear_webhook_faults()

    def _totals(self) -> dict[str, int]:
        stats = (self.marketo.webhook_stats(), self.dataverse.webhook_stats())
        return {k: sum(int(s.get(k, 0)) for s in stats) for k in COUNTED}

    def figures(self) -> dict[str, int]:
        """What both emulators did with their events since the campaign began (held drops included)."""
        now = self._totals()
        return {f"events.calls.{k}": now[k] - self._baseline[k] for k in COUNTED}


def idle(marketo: Any, dataverse: Any, connection_string: str) -> bool:
    """No webhook call queued or in flight, no id buffered, no drain or work message queued."""
    try:
        for stats in (marketo.webhook_stats(), dataverse.webhook_stats()):
            if stats["pending"] or stats["in_flight"]:
                return False
        storage = Storage(connection_string)
        queues = WorkQueues(storage)
        if EventBuffer(storage, queues).pending() or queues.depth(FROM_MARKETO) or queues.depth(FROM_DYNAMICS):
            return False
        return int(storage.queue(DRAIN_QUEUE).get_queue_properties().approximate_message_count or 0) == 0
    except Exception:  # noqa: BLE001 - Azurite restarting: not idle yet
        return False


def wait_idle(check: Callable[[], bool], sweep: Callable[[], None], *, timeout: float = 300.0,
              sweep_every_s: float = 10.0) -> None:
    """Until `check()` holds three times in a row; `sweep()` (a Dataverse poll, which drains what a
    killed receiver left in the buffer) every `sweep_every_s` meanwhile."""
    deadline = time.monotonic() + timeout
    next_sweep = time.monotonic() + sweep_every_s
    quiet = 0
    while quiet < 3:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"events still on their way after {timeout:g} s")
        if now > next_sweep:
            sweep()
            next_sweep = time.monotonic() + sweep_every_s
        quiet = quiet + 1 if check() else 0
        time.sleep(0.5)
