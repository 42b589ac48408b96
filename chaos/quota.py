"""The quota phase: Marketo's daily quota runs out in the middle of edits on both sides, then
comes back after Marketo's reset (the emulator's clock passes midnight US Central).

After the campaign's rounds (or alone, with `--quota-only`), on the same stack and people:

1. edits on both sides (as a round makes them, collisions included);
2. both pollers enqueue the edits; at once the emulator's daily quota is set to today's
   calls + `calls_left`: the appliers run out a few calls into that work;
3. while paused: pollers and appliers keep being run, for `paused_s` (many times the app's
   re-check and the host's retry delay, so a message retried like any error would reach
   the poison queue), and new Marketo people are sent through the real-time webhook (503);
4. the emulator's clock passes the reset; the sync settles by itself (its re-check finds
   the quota back) and the webhook people are finished by the app, with no second call.

Checks, as flat keys in chaos/results.json: `quota.lost` (fields off the oracle),
`quota.duplicated` (emails held twice, or people missing on a side), `quota.poisoned`
(poison messages added by the phase), `quota.rule_violations` (collisions won by the wrong
side, or not logged). Figures: `quota.paused` (1 when the pause was seen),
`quota.realtime_503`, `quota.calls_while_paused`, `quota.seconds`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from chaos.campaign import Campaign
from chaos.checks import Check, duplicates, lost_updates, rule_violations
from chaos.infra import POISON_QUEUES
from devhost.harness import POLL_DATAVERSE, POLL_MARKETO
from shared.state.pause import PauseKind, PauseStore


@dataclass(frozen=True)
class QuotaPlan:
    calls_left: int = 2  # Marketo calls the appliers may still make before the 607s start
    paused_s: float = 60.0  # past 5 host retries 10 s apart: a 607 left to the host would be poisoned by then
    realtime: int = 2  # new Marketo people sent to the webhook while paused


def run_quota_phase(c: Campaign, number: int, plan: QuotaPlan | None = None) -> list[Check]:
    """Run the phase as round `number` on the campaign's stack; its checks."""
    plan = plan or QuotaPlan()
    started = time.monotonic()
    poison_before = _poisoned(c)
    c.oracle.begin_round(number)
    live, held = c.edit_round(number)
    if c.cfg.events:  # the oracle's collisions are two edits made before either is synced (chaos.events)
        c.events.hold()
    c.send_edits(live)
    c.send_edits(held)
    if c.cfg.events:
        c.events.clear()  # our own writes come back as events from here on, as deployed

    # Both polls read the edits with the quota still there; the appliers then run out of it
    # a few calls into the work just enqueued.
    c._run_poll(POLL_DATAVERSE)
    c._run_poll(POLL_MARKETO)
    c.marketo.set_limits(daily_quota=c.marketo.spend(0) + plan.calls_left)
    pauses = PauseStore(c.storage)
    c.log(f"quota: {plan.calls_left} Marketo calls left today; the appliers run into the 607s")
    paused_seen = False
    deadline = time.monotonic() + 120.0
    while not paused_seen and time.monotonic() < deadline:
        c._run_poll(POLL_DATAVERSE)
        c._run_poll(POLL_MARKETO)
        pause = pauses.current(fresh=True)
        paused_seen = pause is not None and pause.kind == PauseKind.QUOTA
    calls_at_pause = int(c.marketo.spend(0))
    c.log(f"quota: paused={paused_seen}; {plan.paused_s:.0f} s of polls and retries into the 607s")
    c.cfg.realtime_per_round, saved = plan.realtime, c.cfg.realtime_per_round
    threads = c.start_realtime(number)
    c.cfg.realtime_per_round = saved
    for thread in threads:
        thread.join()
    refused = c.tally.realtime.get("503", 0)
    until = time.monotonic() + plan.paused_s
    while time.monotonic() < until:
        c._run_poll(POLL_DATAVERSE)
        c._run_poll(POLL_MARKETO)
        time.sleep(1.0)
    calls_while_paused = int(c.marketo.spend(0)) - calls_at_pause
    poisoned_while_paused = _poisoned(c) - poison_before

    c.marketo.advance_to_daily_reset()  # the limits set above end with the day
    c.log("quota: the emulator's clock passed midnight US Central; settling")
    c.settle()
    c.finish_realtime()
    c.settle()
    if c.cfg.events:
        c.wait_events()  # late events must have changed nothing
        c.settle()
    c.oracle.end_round()
    c.collect_realtime()
    c.tally.round_mismatches.append(len(c.compare()))

    marketo, dynamics, rows = c.snapshot()
    lost = lost_updates(c, marketo, dynamics)
    dup = duplicates(c, marketo, rows)
    rules = rule_violations(c)
    poisoned = _poisoned(c) - poison_before
    lost_n = len(c.oracle.compare(marketo, dynamics))
    dup_n = len(dup.examples) if not dup.ok else 0
    rules_n = 0 if rules.ok else max(1, len(rules.examples))
    numbers = {"quota.lost": lost_n, "quota.duplicated": dup_n, "quota.poisoned": poisoned,
               "quota.rule_violations": rules_n, "quota.paused": int(paused_seen), "quota.realtime_503": refused,
               "quota.calls_while_paused": calls_while_paused, "quota.seconds": round(time.monotonic() - started)}
    c.log(f"quota: {numbers}")
    return [
        Check("quota: paused", paused_seen and refused > 0,
              f"607 pause seen: {paused_seen}; {refused} webhook calls answered 503; "
              f"{calls_while_paused} Marketo calls in {plan.paused_s:.0f} s of polls while paused"),
        Check("quota: lost", lost.ok, lost.figure, lost.examples, {"quota.lost": lost_n}),
        Check("quota: duplicated", dup.ok, dup.figure, dup.examples, {"quota.duplicated": dup_n}),
        Check("quota: poisoned", poisoned == 0 and poisoned_while_paused == 0,
              f"{poisoned} poison messages added ({poisoned_while_paused} while paused)", [],
              {"quota.poisoned": poisoned}),
        Check("quota: rule violations", rules_n == 0, rules.figure, rules.examples,
              {"quota.rule_violations": rules_n}),
        Check("quota: figures", True, f"{numbers['quota.seconds']} s for the phase", [],
              {k: v for k, v in numbers.items() if k in ("quota.paused", "quota.realtime_503",
                                                         "quota.calls_while_paused", "quota.seconds")}),
    ]


def _poisoned(c: Campaign) -> int:
    return sum(c.depths.depth(name) or 0 for name in POISON_QUEUES)
