"""`python -m bench [--quick] [--out FILE]`: the whole benchmark in one run; a table and results.json.

Phases, in order, on one system (Azurite and both emulators with their real limits, the
app in its own process): API cost per 1,000 changes each way (and a naive flow), the
applier's CPU profile, real-time create latency, propagation latency at a 30 s and a 5 s
poll, then initial sync and steady-state throughput at two sizes, then with change events
wired: latency, the cost of a burst, and a lossy event feed. `--only events` runs just the
last. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import cost, events, latency, profile, realtime, report, scale
from bench.system import BenchSystem

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Plan:
    cost_n: int = 1000
    naive_sample: int = 200
    realtime_sequential: int = 30
    realtime_per_caller: int = 3
    latency_pool: int = 200
    edits_per_s: float = 4.0
    poll30_s: float = 180.0
    poll5_s: float = 60.0
    scale_small: int = 10_000
    scale_big: int = 100_000
    scale_budget_s: float = 900.0  # per initial sync, from its poll
    events_burst: int = 5000  # edits in one burst, each way
    events_s: float = 60.0  # latency with events wired
    events_dropped_poll_s: int = 30  # the shortened poll that brings what the dropped events missed
    events_dropped_s: float = 60.0
    # The app's FUNCTIONS_WORKER_PROCESS_COUNT: one Python worker per core, as Azure's
    # Python performance guide suggests for CPU-bound apps.
    worker_processes: int = min(os.cpu_count() or 1, 10)


QUICK = Plan(naive_sample=40, realtime_sequential=10, realtime_per_caller=2, latency_pool=100, edits_per_s=2.0,
             poll30_s=60.0, poll5_s=30.0, scale_small=1000, scale_big=5000, scale_budget_s=300.0,
             events_burst=1000, events_s=30.0, events_dropped_poll_s=15, events_dropped_s=30.0)
PHASES = ("events",)  # what --only can run alone


def say(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {text}", file=sys.stderr, flush=True)


def _env(plan: Plan, quick: bool) -> dict[str, Any]:
    return {"env.mode": "quick" if quick else "full", "env.cpus": os.cpu_count(),
            "env.python": platform.python_version(), "env.worker_processes": plan.worker_processes,
            "env.loadavg_1m_start": round(os.getloadavg()[0], 2)}


def _events(system: BenchSystem, plan: Plan) -> dict[str, Any]:
    say(f"events: a burst of {plan.events_burst} edits each way, {plan.events_s:g} s at {plan.edits_per_s:g} "
        f"edits/s, {plan.events_dropped_s:g} s with 20 % dropped (poll every {plan.events_dropped_poll_s} s)")
    return events.measure(system, burst_n=plan.events_burst, pool_n=plan.latency_pool, duration_s=plan.events_s,
                          edits_per_s=plan.edits_per_s, dropped_poll_s=plan.events_dropped_poll_s,
                          dropped_s=plan.events_dropped_s)


def run_only(plan: Plan, quick: bool, phase: str) -> dict[str, Any]:
    """One phase alone on a fresh system (`--only`)."""
    assert phase in PHASES
    results = _env(plan, quick)
    started = time.monotonic()
    with BenchSystem(worker_processes=plan.worker_processes) as system:
        system.start_app(None)
        system.sync(1)
        results.update(_events(system, plan))
    results["env.loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    results["env.run_seconds"] = round(time.monotonic() - started, 1)
    return results


def run(plan: Plan, quick: bool, out: Path) -> dict[str, Any]:
    """Every phase in order; the results so far are written to `out` after each one, so a run
    that fails (or is stopped) late still leaves what it measured."""
    results = _env(plan, quick)
    started = time.monotonic()
    with BenchSystem(worker_processes=plan.worker_processes) as system:
        system.start_app(None)
        system.sync(1)  # first poll: both cursors start now
        say(f"api cost: {plan.cost_n} changes each way, naive flow on {plan.naive_sample}")
        results.update(cost.measure(system, plan.cost_n, plan.naive_sample))
        report.write(out, {**results, "env.partial": True}, {})
        say("profile: one 300-person message each way, in process")
        _, pairs = cost.linked_people(system, 300, "prof")
        results.update(profile.measure(system, pairs))
        report.write(out, {**results, "env.partial": True}, {})
        system.sync(2)
        say("real-time create")
        results.update(realtime.measure(system, plan.realtime_sequential, plan.realtime_per_caller))
        report.write(out, {**results, "env.partial": True}, {})
        system.sync(2)
        tag, pool = cost.linked_people(system, plan.latency_pool, "lat")
        for poll_s, seconds in ((30, plan.poll30_s), (5, plan.poll5_s)):
            say(f"latency: {seconds:g} s of {plan.edits_per_s:g} edits/s, polling every {poll_s} s")
            results.update(latency.measure(system, tag, pool, poll_s=poll_s, duration_s=seconds,
                                           edits_per_s=plan.edits_per_s))
            report.write(out, {**results, "env.partial": True}, {})
        small, big = scale.label(plan.scale_small), scale.label(plan.scale_big)
        say(f"scale: initial sync of {plan.scale_small} people")
        figures, _, pairs_small = scale.initial_sync(system, plan.scale_small, echo=True,
                                                     budget_s=plan.scale_budget_s)
        results.update(figures)
        report.write(out, {**results, "env.partial": True}, {})
        say(f"scale: steady state, {len(pairs_small)} changes in Marketo")
        results.update(scale.steady_state(system, list(pairs_small.values())))
        report.write(out, {**results, "env.partial": True}, {})
        say(f"scale: initial sync of {plan.scale_big} people")
        figures, _, _ = scale.initial_sync(system, plan.scale_big, echo=False, budget_s=plan.scale_budget_s)
        results.update(figures)
        report.write(out, {**results, "env.partial": True}, {})
        results[f"scale.initial_{big}_vs_rate_limit"] = results[f"scale.n{big}.vs_rate_limit"]
        results[f"scale.rss_ratio_{big}_{small}"] = round(
            results[f"scale.n{big}.rss_peak_mb"] / results[f"scale.n{small}.rss_peak_mb"], 2)
        report.write(out, {**results, "env.partial": True}, {})
        results.update(_events(system, plan))  # last: the webhooks it registers stay on
    results["env.loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    results["env.run_seconds"] = round(time.monotonic() - started, 1)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs, for development")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/results.json, or bench/results.quick.json with --quick)")
    parser.add_argument("--scale-budget", type=float, default=None, metavar="SECONDS",
                        help="longest wait for each initial sync (default 900, quick 300); "
                             "a sync cut short is extrapolated and marked incomplete")
    parser.add_argument("--only", choices=PHASES, default=None,
                        help="run just this phase, on a fresh system (events: bench/events.py)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="the app's FUNCTIONS_WORKER_PROCESS_COUNT (default: one per core, at most 10)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.workers is not None:
        plan = replace(plan, worker_processes=args.workers)
    if args.scale_budget is not None:
        plan = replace(plan, scale_budget_s=args.scale_budget)
    out = args.out or HERE / ("results.quick.json" if args.quick else "results.json")
    results = run_only(plan, args.quick, args.only) if args.only else run(plan, args.quick, out)
    small, big = scale.label(plan.scale_small), scale.label(plan.scale_big)
    judged = report.verdicts(results, report.targets(results, big, small))
    print(report.table(results, judged))
    report.write(out, results, judged)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
