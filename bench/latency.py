"""Propagation latency: from an edit on one side to the value being readable on the other.

The app runs with both pollers on a real schedule. A load thread edits linked people at a
steady rate, alternating sides (Marketo people in one half of a pool, Dynamics leads in
the other, so no edit collides with another); a watcher reads both sides through the
emulators' admin APIs (uncounted) twice a second and stamps each edit when its value
appears on the other side. A person is edited again only once its last edit has arrived.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.stats import percentiles
from bench.system import BenchSystem

NATIVE_CYCLE_S = 300.0  # Marketo's native Dynamics sync: about 5 minutes between cycles
WATCH_EVERY_S = 0.5


@dataclass
class Edit:
    side: str  # where the edit was made: "marketo" | "dynamics"
    key: Any  # Marketo id or lead id, on the side it must arrive at
    value: str
    made: float
    seen: float | None = None


def measure(system: BenchSystem, pool: list[tuple[str, int]], *, poll_s: int, duration_s: float,
            edits_per_s: float) -> dict[str, Any]:
    """Run the load for `duration_s` with the app polling every `poll_s` on the linked people
    in `pool` (lead id, Marketo id); latency figures."""
    system.start_app(poll_s)
    edits = drive(system, pool, duration_s=duration_s, edits_per_s=edits_per_s, grace_s=2 * poll_s + 30)
    system.stop_app()
    return summarize(edits, poll_s, duration_s)


def drive(system: BenchSystem, pool: list[tuple[str, int]], *, duration_s: float, edits_per_s: float,
          grace_s: float) -> list[Edit]:
    """Edit the people in `pool` at `edits_per_s` for `duration_s` against the running app, then
    watch up to `grace_s` more for the edits still on their way; every edit, stamped when seen."""
    half = len(pool) // 2
    marketo_side, dynamics_side = pool[:half], pool[half:]
    edits: list[Edit] = []
    pending: dict[Any, Edit] = {}
    lock = threading.Lock()
    stop_load = threading.Event()
    stamp = uuid.uuid4().hex[:4]

    def pick(people: list[tuple[str, int]], side: str) -> tuple[str, int] | None:
        with lock:
            for _ in range(len(people)):
                person = people[0]
                people.append(people.pop(0))
                if (person[0] if side == "marketo" else person[1]) not in pending:
                    return person
        return None  # every person on this side still has an edit in flight: skip a beat

    def load() -> None:
        counter = itertools.count()
        sides = itertools.cycle([("marketo", list(marketo_side)), ("dynamics", list(dynamics_side))])
        next_at = time.monotonic()
        while not stop_load.is_set():
            side, people = next(sides)
            person = pick(people, side)
            if person is not None:
                lead_id, marketo_id = person
                value = f"{side[0]}{next(counter)}-{stamp}"
                made = time.monotonic()
                if side == "marketo":
                    system.marketo.update_lead(marketo_id, title=value)
                else:
                    system.dataverse.update("leads", lead_id, {"jobtitle": value})
                target = lead_id if side == "marketo" else marketo_id
                with lock:
                    edit = Edit(side, target, value, made)
                    edits.append(edit)
                    pending[target] = edit
            next_at += 1 / edits_per_s
            stop_load.wait(max(0.0, next_at - time.monotonic()))

    def watch_once() -> None:
        with lock:
            waiting = list(pending.values())
        if not waiting:
            return
        # One read per record waiting (a few at these rates), not a listing of every person:
        # the watcher's own work must stay small next to the app's on a shared CPU.
        now_titles: dict[Any, Any] = {}
        for edit in waiting:
            if edit.side == "marketo":
                now_titles[edit.key] = (system.dataverse.get("leads", edit.key) or {}).get("jobtitle")
            else:
                now_titles[edit.key] = (system.marketo.get_lead(edit.key) or {}).get("title")
        now = time.monotonic()
        with lock:
            for edit in waiting:
                if now_titles.get(edit.key) == edit.value:
                    edit.seen = now
                    pending.pop(edit.key, None)

    loader = threading.Thread(target=load, name="bench-load", daemon=True)
    started = time.monotonic()
    loader.start()
    while time.monotonic() - started < duration_s:
        watch_once()
        time.sleep(WATCH_EVERY_S)
    stop_load.set()
    loader.join()
    grace = time.monotonic() + grace_s
    while pending and time.monotonic() < grace:
        watch_once()
        time.sleep(WATCH_EVERY_S)
    return edits


def summarize(edits: list[Edit], poll_s: int, duration_s: float, key: str | None = None) -> dict[str, Any]:
    """The figures, under `key` (default `latency.poll<poll_s>`)."""
    key = key or f"latency.poll{poll_s}"
    seen = [e.seen - e.made for e in edits if e.seen is not None]
    out: dict[str, Any] = {f"{key}.edits": len(edits), f"{key}.unseen": len(edits) - len(seen),
                           f"{key}.edits_per_s": round(len(edits) / duration_s, 2), f"{key}.duration_s": duration_s}
    p = percentiles(seen, (50, 95, 100))
    out[f"{key}.p50_s"], out[f"{key}.p95_s"], out[f"{key}.max_s"] = (round(v, 1) for v in p)
    for side, name in (("marketo", "m2d"), ("dynamics", "d2m")):
        p95 = percentiles([e.seen - e.made for e in edits if e.seen is not None and e.side == side], (95,))[0]
        out[f"{key}.{name}.p95_s"] = round(p95, 1)
    out[f"{key}.native_ratio"] = round(NATIVE_CYCLE_S / out[f"{key}.p95_s"], 1) if seen else None
    return out

