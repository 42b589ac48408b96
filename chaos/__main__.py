"""`python -m chaos [--seed N] [--people N] [--rounds N] [--quick] [--fuzz-only] [--quota-only] [--no-events]`:
fuzz the webhook, run the campaign and its quota phase, print the summary table, exit 1 if any check fails."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos.campaign import Campaign, Config, Tally
from chaos.checks import Check, run_checks, table
from chaos.quota import run_quota_phase
from chaos.webhook_fuzz import FUZZ_EXAMPLES, figures, run_phase

RESULTS = Path(__file__).parent / "results.json"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=Config.seed)
    p.add_argument("--people", type=int, default=None, help="people seeded (default 2000; 150 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of edits (default 6; 2 with --quick)")
    p.add_argument("--quick", action="store_true", help="a small, fast run for development")
    p.add_argument("--workdir", type=Path, default=None, help="keep Azurite's data and the app's log here")
    p.add_argument("--workers", type=int, default=1, choices=range(1, 11), metavar="N",
                   help="the app's FUNCTIONS_WORKER_PROCESS_COUNT (default 1); a kill takes its workers too")
    p.add_argument("--fuzz-examples", type=int, default=None,
                   help=f"webhook fuzz requests (default {FUZZ_EXAMPLES}; 500 with --quick; 0 skips the phase)")
    p.add_argument("--fuzz-only", action="store_true", help="run only the webhook fuzz phase")
    p.add_argument("--quota-only", action="store_true",
                   help="seed and sync, then run only the quota phase (no fuzz, no rounds)")
    p.add_argument("--no-quota", action="store_true", help="leave out the quota phase")
    p.add_argument("--no-events", action="store_true",
                   help="leave both services' change events unwired (the campaign then syncs by polls alone)")
    args = p.parse_args(argv)
    if args.quota_only:
        args.fuzz_examples, args.rounds = 0, 0
    if args.fuzz_examples is None:
        args.fuzz_examples = 500 if args.quick else FUZZ_EXAMPLES
    if args.people is None:
        args.people = 150 if args.quick else Config.people
    if args.rounds is None:
        args.rounds = 2 if args.quick else Config.rounds
    if args.quota_only and args.no_quota:
        p.error("--quota-only and --no-quota contradict each other")
    if args.people < 1 or args.rounds < 0:
        p.error("--people must be at least 1 and --rounds at least 0")
    return args


def faults_table(c: Campaign, tally: Tally) -> str:
    rows: Counter[str] = Counter()
    for kind, n in c.faults.marketo_served().items():
        rows[f"Marketo {kind}"] += n
    for kind, n in c.faults.dataverse_served.items():
        rows[f"Dataverse {kind}"] += n
    rows["Dataverse token revocations"] = tally.revocations
    rows["host SIGKILLs"] = tally.kills
    rows["Azurite restarts"] = tally.azurite_restarts
    rows["malformed messages"] = len(tally.bad_messages)
    rows["unknown-record messages"] = tally.unknown_messages
    return "\n".join(f"  {k:<30} {v}" for k, v in sorted(rows.items()))


def fuzz_phase(examples: int, seed: int, log: Callable[[str], None]) -> Check:
    """Fuzz the webhook on a stack of its own (an empty Marketo: no valid body names a person)
    and record the figures in chaos/results.json."""
    result, seconds, leads = run_phase(examples=examples, seed=seed, log=log)
    record(figures(result, seconds, leads))
    ok = result.examples >= examples and result.server_error_count == 0 and result.mismatches == 0 and leads == 0
    return Check("webhook fuzz", ok, f"{result.examples} requests, {result.server_error_count} 5xx, "
                                     f"{result.mismatches} wrong answers, {leads} leads created",
                 (result.server_errors + result.wrong)[:10])


def record(numbers: dict[str, Any]) -> None:
    """Merge `numbers` into chaos/results.json (plain dotted keys, like the bench's)."""
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**saved, **numbers}, indent=2, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {line}", flush=True)

    fuzzed = [fuzz_phase(args.fuzz_examples, args.seed, log)] if args.fuzz_examples > 0 else []
    if args.fuzz_only:
        print(table(fuzzed) if fuzzed else "nothing to do: --fuzz-only with --fuzz-examples 0")
        return 0 if all(c.ok for c in fuzzed) else 1

    config = Config(seed=args.seed, people=args.people, rounds=args.rounds, workdir=args.workdir, log=log,
                    worker_processes=args.workers, events=not args.no_events)
    if args.quick:
        config.realtime_per_round = 2
    with Campaign(config) as campaign:
        tally = campaign.run()
        checks = fuzzed + ([] if args.quota_only else run_checks(campaign))
        if not args.quota_only:  # the quota phase alone writes its own keys only
            record({"realtime.people": tally.realtime_people + len(tally.realtime_missing)
                    + len(tally.realtime_unaccepted),
                    "realtime.claims_unfinished": len(tally.realtime_missing),
                    "realtime.unaccepted": len(tally.realtime_unaccepted),
                    "realtime.responses": dict(sorted(tally.realtime.items()))})
            if config.events:  # the sync's own checks, with both services' events wired and faulty (chaos/events.py)
                by_name = {check.name: check for check in checks}
                record({"events.lost": by_name["lost updates"].problems,
                        "events.duplicated": by_name["duplicates"].problems,
                        "events.rule_violations": by_name["rule violations"].problems, **campaign.events.figures()})
        if not args.no_quota:  # after the campaign's checks: its 607s are the phase's own, not the sync's
            checks += run_quota_phase(campaign, args.rounds + 1)
        print()
        print(f"LeadSync fault campaign: seed {args.seed}, {args.people} people, {args.rounds} rounds, "
              f"{tally.seconds['total']:.0f} s (seed + initial sync {tally.seconds['seed']:.0f} s)")
        print(f"edits: {tally.edits['marketo']} in Marketo, {tally.edits['dynamics']} in Dynamics, "
              f"{tally.collisions_made} same-field collisions; {tally.realtime_people} people through the webhook "
              f"(responses {dict(sorted(tally.realtime.items()))}); {tally.sync_cycles} poll+drain cycles")
        print(f"fields off the oracle after each round: {tally.round_mismatches}")
        print("faults served:")
        print(faults_table(campaign, tally))
        print()
        print(table(checks))
        numbers = {k: v for check in checks for k, v in check.numbers.items()}
        if numbers:
            saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            RESULTS.write_text(json.dumps({**saved, **numbers}, indent=2, sort_keys=True) + "\n")
        return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
