"""Scale-out: one initial sync on K app instances, and one beside a competing integration.

Each measurement runs on a fresh system (Azurite and both emulators with their real limits,
so neither run inherits the other's tables, people or rate window). K app processes, each
`bench.apphost` with its worker processes, share that one Azurite and those emulators, as K
Function App instances share one storage account and one Marketo subscription. Their
storage requests go through a counting proxy (`bench.storageproxy`), so the budget's own
share of them is measured outside the app. The first instance runs the pollers on demand;
every instance's queue triggers take work from the same queues.

An initial sync of N Dynamics leads into Marketo is timed as in `bench.scale`: seed, poll
Dataverse once, wait until the queues drain and all N people exist in Marketo (or the time
budget runs out: then `seconds` is extrapolated from the rate reached and `complete` is
false). Against it: the time Marketo's rate limit forces on `2 × ⌈N/300⌉` calls at the share
of 100 calls / 20 s left to LeadSync (all of it here; 70 % beside a competitor spending 30 %),
and the 606/615 (Marketo) and 429 (Dataverse) answers the sync received.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from bench.competing import Competitor
from bench.scale import MARKETO_CALLS_PER_S, sync_until
from bench.storageproxy import StorageProxy
from bench.system import BenchSystem, _process_tree_cpu, people_with, seed_leads, spawn_app, stop_process
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

MARKETO_LIMIT_CODES = ("606", "615")
DATAVERSE_LIMIT_STATUS = "429"


def forced_seconds_at(calls: int, share: float = 1.0) -> float:
    """Least time `calls` Marketo calls take at `share` of 100 calls / 20 s, at a steady rate."""
    return calls / (MARKETO_CALLS_PER_S * share)


def initial_sync_calls(n: int) -> int:
    """Marketo calls an initial sync of n new people needs at least: a read and a write per 300."""
    return 2 * math.ceil(n / 300)


def limit_answers(marketo_before: dict[str, Any], marketo_after: dict[str, Any],
                  dataverse_before: dict[str, Any], dataverse_after: dict[str, Any]) -> dict[str, int]:
    """Rate and concurrency refusals each emulator gave between two of its stats snapshots."""
    def grew(before: dict[str, Any], after: dict[str, Any], key: str, code: str) -> int:
        return int(after.get(key, {}).get(code, 0)) - int(before.get(key, {}).get(code, 0))

    out = {code: grew(marketo_before, marketo_after, "responses_by_code", code) for code in MARKETO_LIMIT_CODES}
    out[DATAVERSE_LIMIT_STATUS] = grew(dataverse_before, dataverse_after, "responses_by_status",
                                       DATAVERSE_LIMIT_STATUS)
    return out


def storage_share(by_resource: dict[str, int], marker: str) -> float:
    """The part of all storage requests that went to resources whose name contains `marker`
    (for a table `$batch`, the table it writes); NaN when there were none."""
    total = sum(by_resource.values())
    if total == 0:
        return math.nan
    return sum(n for name, n in by_resource.items() if marker in name.lower()) / total


@dataclass(frozen=True)
class SyncRun:
    n: int
    instances: int
    worker_processes: int
    budget_s: float
    competing_share: float = 0.0  # of Marketo's rate limit, spent by another integration during the sync
    budget_marker: str = "budget"


def measure(run: SyncRun, say: Callable[[str], None]) -> dict[str, Any]:
    """One initial sync of run.n people on run.instances app processes; plain figures (no key prefix)."""
    with BenchSystem(worker_processes=run.worker_processes) as system:
        proxy = StorageProxy(system.env["AzureWebJobsStorage"])
        system.env["AzureWebJobsStorage"] = proxy.connection
        others: list[Any] = []
        competitor: Competitor | None = None
        try:
            system.start_app(None)
            system.sync(1)  # first poll: both cursors start now
            tag = f"i{uuid.uuid4().hex[:6]}"
            say(f"  seeding {run.n} leads; starting {run.instances - 1} more app instance(s)")
            seed_leads(system, [{"firstname": f"I{i}", "lastname": tag, "emailaddress1": f"{tag}-{i}@example.com",
                                 "companyname": "Scale Ltd", "subject": "bench"} for i in range(run.n)])
            others = [spawn_app(system.app_env(None), system.log_path, system.function_key)[0]
                      for _ in range(run.instances - 1)]
            if run.competing_share:
                competitor = Competitor(system.env["MARKETO_BASE_URL"], system.env["MARKETO_CLIENT_ID"],
                                        system.env["MARKETO_CLIENT_SECRET"], run.competing_share).start()
                time.sleep(20)  # a full rate window of the other integration's calls before the sync starts
            return _timed_sync(system, proxy, run, tag, others, competitor)
        finally:
            if competitor is not None:
                competitor.stop()
            for process in others:  # all asked at once: each finishes its messages in flight before it exits
                _ask_to_quit(process)
            for process in others:
                stop_process(process)
            system.stop_app()
            proxy.stop()


def _timed_sync(system: BenchSystem, proxy: StorageProxy, run: SyncRun, tag: str, others: list[Any],
                competitor: Competitor | None) -> dict[str, Any]:
    pids = [p.pid for p in [system.app, *others] if p is not None]
    cpu_before = sum(_process_tree_cpu(pid) for pid in pids)
    proxy_cpu_before = _process_tree_cpu(proxy.process.pid)
    marketo_before, dataverse_before = system.marketo.stats(), system.dataverse.stats()
    competitor_before = (competitor.calls, competitor.limit_errors) if competitor else (0, 0)
    proxy.reset()
    started = time.monotonic()
    deadline = started + run.budget_s
    people = sync_until(system, tag, run.n, deadline)
    elapsed = time.monotonic() - started
    storage = proxy.stats()
    marketo_after, dataverse_after = system.marketo.stats(), system.dataverse.stats()
    other_calls, other_errors = ((competitor.calls - competitor_before[0],
                                  competitor.limit_errors - competitor_before[1]) if competitor else (0, 0))
    cpu_app = sum(_process_tree_cpu(pid) for pid in pids) - cpu_before
    cpu_proxy = _process_tree_cpu(proxy.process.pid) - proxy_cpu_before
    if len(people) < run.n:
        people = people_with(system, tag)
    complete = len(people) >= run.n
    refused = limit_answers(marketo_before, marketo_after, dataverse_before, dataverse_after)
    forced = forced_seconds_at(initial_sync_calls(run.n), 1.0 - run.competing_share)
    seconds = elapsed if complete else elapsed * run.n / max(1, len(people))
    by_resource: dict[str, int] = storage["by_resource"]
    out: dict[str, Any] = {
        "complete": complete, "seconds": round(seconds, 1), "people_in_marketo": len(people),
        "rate_limit_forced_s": round(forced, 1), "vs_rate_limit": round(seconds / forced, 2),
        "marketo_calls": int(marketo_after["counted_calls"]) - int(marketo_before["counted_calls"]) - other_calls,
        "dataverse_requests": int(dataverse_after["total_requests"]) - int(dataverse_before["total_requests"]),
        "marketo_606": refused["606"], "marketo_615": refused["615"], "dataverse_429": refused["429"],
        "limit_errors": refused["606"] + refused["615"] + refused["429"] - other_errors,
        "poisoned": sum(_depth(system, q + "-poison") for q in (FROM_DYNAMICS, FROM_MARKETO)),
        "storage_requests": int(storage["total"]),
        "budget_storage_requests": sum(v for k, v in by_resource.items() if run.budget_marker in k.lower()),
        "storage_share": storage_share(by_resource, run.budget_marker),
        "storage_top": ", ".join(f"{name} {count}" for name, count in
                                 sorted(by_resource.items(), key=lambda item: -item[1])[:8]),
        "cpu_ms_per_person_app": round(cpu_app * 1000 / max(1, len(people)), 2),
        "cpu_s_storage_proxy": round(cpu_proxy, 1),  # the measuring's own cost, on the same two cores
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }
    if competitor is not None:
        out.update({"other_calls": other_calls, "other_limit_errors": other_errors})
    if not complete:
        out["stopped_after_s"] = round(elapsed, 1)
    return out


def _ask_to_quit(process: Any) -> None:
    try:
        process.stdin.write("quit\n")
        process.stdin.flush()
    except (BrokenPipeError, ValueError):  # it has exited already (ValueError: stdin closed)
        pass


def _depth(system: BenchSystem, queue: str) -> int:
    try:
        return system.queues.depth(queue)
    except ResourceNotFoundError:  # a poison queue nobody created yet holds nothing
        return 0


def instances_figures(k: int, figures: dict[str, Any]) -> dict[str, Any]:
    """`scale.instances<K>.*` keys, with the limit errors named as the sync's own."""
    out = {f"scale.instances{k}.{name}": value for name, value in figures.items()
           if name not in ("limit_errors", "storage_share")}
    out[f"scale.instances{k}.self_inflicted_limit_errors"] = figures["limit_errors"]
    out[f"scale.instances{k}.budget_storage_share"] = _share(figures["storage_share"])
    return out


def competing_figures(figures: dict[str, Any]) -> dict[str, Any]:
    return {f"budget.competing.{name}": (_share(value) if name == "storage_share" else value)
            for name, value in figures.items()}


def _share(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)
