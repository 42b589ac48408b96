"""Where an applier spends its time: one 300-person message applied in this process under cProfile.

`shared.sync.apply.apply_work` runs here against the same emulators and Azurite as the app.
Time is attributed to the LeadSync module a call entered from outside every category:
HTTP to Marketo or Dataverse (their clients, including JSON and retries), storage (links,
activity log, queues: Azure SDK calls to Azurite), mapping (fieldmap), merge, validation.
Storage is split into links, activity log and queues. What is left is the applier's own
glue (apply.py, report.py, fingerprints, logging). CPU per person (this process, and the
link and activity stores' thread pools alone) is reported beside the wall time: on a shared
machine it is the figure that compares.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.system import BenchSystem
from shared.config import Settings
from shared.runtime import ENTITY_SETS, Services
from shared.state.workqueue import Work
from shared.sync.apply import apply_work

SHARED = Path(__file__).resolve().parent.parent / "shared"
CATEGORIES = {
    "http_marketo": ("marketo.py", "ratelimit.py"),
    "http_dataverse": ("dataverse.py", "odata.py"),
    "storage_links": ("links.py",),
    "storage_activity": ("activity.py",),
    "storage_queues": ("storage.py", "workqueue.py", "cursors.py"),
    "mapping": ("fieldmap.py",),
    "merge": ("merge.py",),
    "validation": ("validation.py",),
}
TOP = 10
POOLS = ("links", "activity")  # the stores' thread pools, where the storage requests run


def _category(filename: str) -> str | None:
    path = Path(filename)
    if not path.is_relative_to(SHARED):  # the core's modules, in whichever layer they live
        return None
    for name, files in CATEGORIES.items():
        if path.name in files:
            return name
    return None


def attribute(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per category: time in a category's functions entered from outside every category."""
    spent = dict.fromkeys(CATEGORIES, 0.0)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for func, (_cc, _nc, _tt, _ct, callers) in raw.items():
        category = _category(func[0])
        if category is None:
            continue
        for caller, edge in callers.items():
            if _category(caller[0]) is None:
                spent[category] += edge[3]
    return spent


def measure(system: BenchSystem, pairs: list[tuple[str, int]]) -> dict[str, Any]:
    svc = Services.from_settings(Settings.from_env(system.env))
    svc.rules("lead")  # warm: Dynamics metadata, both tokens, connection pools
    svc.marketo.get_leads([pairs[0][1]], svc.marketo_fields())
    svc.dataverse.get_by_ids(ENTITY_SETS["lead"], [pairs[0][0]], svc.select("lead"))
    out: dict[str, Any] = {"profile.records": len(pairs)}
    stamp = uuid.uuid4().hex[:4]
    for i, (lead_id, _) in enumerate(pairs):
        system.dataverse.update("leads", lead_id, {"jobtitle": f"P{i}-{stamp}", "address1_city": "Leeds"})
    out.update(_profile(svc, "d2m", Work("dynamics", "changed", tuple(lid for lid, _ in pairs), "lead")))
    system.marketo.bulk([{"id": mid, "title": f"Q{i}-{stamp}"} for i, (_, mid) in enumerate(pairs)])
    out.update(_profile(svc, "m2d", Work("marketo", "changed", tuple(mid for _, mid in pairs))))
    svc.dataverse.close()
    return out


def _profile(svc: Services, name: str, work: Work) -> dict[str, Any]:
    profiler = cProfile.Profile()
    threads_before = _thread_cpu()
    cpu_started = time.process_time()
    started = time.perf_counter()
    outcomes = profiler.runcall(apply_work, svc, work)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    threads = _thread_cpu()
    stats = pstats.Stats(profiler)
    key = f"profile.{name}"
    out: dict[str, Any] = {f"{key}.wall_ms": round(wall * 1000, 1),
                           f"{key}.per_record_ms": round(wall * 1000 / len(work.ids), 2),
                           f"{key}.synced": outcomes.counts.get("synced", 0),
                           f"{key}.cpu_per_record_ms": round(cpu * 1000 / len(work.ids), 2)}
    for pool in POOLS:
        if pool in threads:
            spent_ms = (threads[pool] - threads_before.get(pool, 0.0)) * 1000
            out[f"{key}.cpu_per_record_ms.{pool}"] = round(spent_ms / len(work.ids), 2)
    spent = attribute(stats)
    groups = {"http": ("http_marketo", "http_dataverse"),
              "storage": ("storage_links", "storage_activity", "storage_queues")}
    for group, members in groups.items():
        out[f"{key}.pct.{group}"] = round(100 * sum(spent[m] for m in members) / wall, 1)
    for category, seconds in spent.items():
        out[f"{key}.pct.{category}"] = round(100 * seconds / wall, 1)
    # Recursion can attribute a little twice; what is left is never below zero.
    out[f"{key}.pct.other"] = round(max(0.0, 100 * (wall - sum(spent.values())) / wall), 1)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:TOP]
    for rank, ((filename, line, function), (_cc, calls, tottime, cumtime, _)) in enumerate(top, start=1):
        where = f"{_short(filename)}:{line}({function})"
        out[f"{key}.top.{rank}"] = f"{where} self {tottime * 1000:.1f} ms, cum {cumtime * 1000:.1f} ms, {calls} calls"
    return out


def _thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process's live threads, summed by name without digits (Linux only)."""
    names = {t.native_id: re.sub(r"[-_]?\d+", "", t.name) for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[str, float] = {}
    for tid, name in names.items():
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
