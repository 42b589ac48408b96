"""Injected faults: what each round asks the emulators for, and what they really served.

Every fault is count-limited, so the campaign knows how many of each kind happened:
Marketo reports served faults in its stats (`faults_injected`); for Dataverse, whose stats
mix injected and real responses, the campaign reads the emulator's fault list (it runs in
this process) before clearing it: served = asked - left.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

MARKETO_KINDS = ("606", "615", "602", "http500", "http502", "http503", "slow", "drop")
DATAVERSE_KINDS = ("429", "http500", "http503", "401", "drop", "slow")


@dataclass(frozen=True)
class Planned:
    service: str  # "marketo" | "dataverse"
    kind: str
    gap_s: float  # wait before arming it
    delay_s: float  # "slow" only
    retry_after: int  # Dataverse 429/503 only


class FaultInjector:
    def __init__(self, rng: random.Random, marketo_admin: Any, dataverse_admin: Any, dataverse_emulator: Any,
                 *, per_kind: int = 2) -> None:
        self.rng = rng
        self.marketo = marketo_admin
        self.dataverse = dataverse_admin
        self._dv_emulator = dataverse_emulator  # devhost Emulator object: its `faults` list
        self.per_kind = per_kind
        self.dataverse_served: Counter[str] = Counter()
        self.revocations = 0
        self._marketo_baseline: Counter[str] = Counter(marketo_admin.stats()["faults_injected"])
        self._asked: list[tuple[str, int]] = []
        self._asked_lock = threading.Lock()

    def plan_round(self, gap_s: tuple[float, float] = (0.05, 0.6)) -> list[Planned]:
        """A random handful of every kind for both services, shuffled, with every random
        choice drawn now (so the campaign's random sequence does not depend on timing)."""
        kinds = [("marketo", kind) for kind in MARKETO_KINDS for _ in range(self.rng.randint(0, self.per_kind))]
        kinds += [("dataverse", kind) for kind in DATAVERSE_KINDS for _ in range(self.rng.randint(0, self.per_kind))]
        self.rng.shuffle(kinds)
        return [Planned(service, kind, self.rng.uniform(*gap_s),
                        self.rng.uniform(1.0, 4.0) if kind == "slow" else 0.0, self.rng.randint(1, 3))
                for service, kind in kinds]

    def feed(self, plan: list[Planned], stop: threading.Event) -> None:
        """Arm the planned faults one at a time, a gap apart, so they hit many different
        calls rather than one call's whole retry budget; stops early on `stop`."""
        for item in plan:
            if stop.wait(item.gap_s):
                return
            self.inject(item)

    def inject(self, item: Planned) -> None:
        if item.service == "marketo":
            self.marketo.fault(item.kind, count=1, delay_s=item.delay_s)
        else:
            with self._asked_lock:
                self.dataverse.fault(item.kind, count=1, retry_after=item.retry_after, delay_s=item.delay_s)
                self._asked.append((item.kind, 1))

    def revoke_tokens(self) -> None:
        """Every Dataverse access token becomes invalid (the client must get a new one on 401)."""
        self.dataverse.revoke_tokens()
        self.revocations += 1

    def end_round(self) -> None:
        """Count what Dataverse served of this round's faults, then clear both services."""
        with self._asked_lock, self._dv_emulator.lock:
            left = [(f.kind, f.count or 0) for f in self._dv_emulator.faults]
        for (kind, asked), (left_kind, remaining) in zip(self._asked, left, strict=True):
            assert kind == left_kind
            self.dataverse_served[kind] += asked - remaining
        self._asked = []
        self.dataverse.clear_faults()
        self.marketo.clear_faults()

    def marketo_served(self) -> Counter[str]:
        now = Counter(self.marketo.stats()["faults_injected"])
        now.subtract(self._marketo_baseline)
        return +now
