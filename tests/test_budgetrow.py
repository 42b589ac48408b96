"""The shared budget's arithmetic (`shared.state.budgetrow`): pure, checked over any interleaving."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.clients.ratelimit import LeaseRequest
from shared.state import budgetrow
from shared.state.budgetrow import BudgetLimits, BudgetState

LIMITS = BudgetLimits(calls=90, window_s=20.0, concurrency=9, horizon_s=2.0, skew_s=0.0, slot_ttl_s=15.0)
# As deployed: blocks and slots last a minute while the row has ample room.
AMPLE = replace(LIMITS, long_s=60.0)


def ask(holder: str, n: int, *, calls: int = 10, slots: int = 0, in_use: int = 0,
        spent: dict[str, tuple[int, float]] | None = None) -> tuple[str, LeaseRequest]:
    return holder, LeaseRequest(f"{holder}.{n}", calls, slots, in_use, spent or {})


# One process's step: wait `dt`, then ask for `calls` (reporting how many of its last block it
# started), or report pressure.
steps = st.lists(st.tuples(st.floats(0, 8, allow_nan=False), st.integers(0, 3), st.integers(0, 30),
                           st.floats(0, 1), st.booleans()), max_size=120)


@dataclass
class Process:
    last: str | None = None
    granted: int = 0
    seq: int = 0
    slots: int = 0
    slots_until: float = 0.0
    at: float = 0.0  # when the current block was granted or last extended
    # (grant time, last start, calls): the block's calls all start in one window, the worst case
    # whether they are a total or a number per window.
    calls: list[tuple[float, float, int]] = field(default_factory=list)


def run(script: list[tuple[float, int, int, float, bool]], limits: BudgetLimits) -> tuple[list[Process], float]:
    state, now = BudgetState(), 1000.0
    procs = [Process() for _ in range(4)]
    for dt, who, want, spend_frac, press in script:
        now += dt
        p = procs[who]
        if press and want % 7 == 0:
            state = budgetrow.pressure(state, limits, now, retry_after=float(want % 3))
            continue
        spent: dict[str, tuple[int, float]] = {}
        report: tuple[float, float, int] | None = None
        # Some processes ask to extend their block (kept whole if it is), the others finish it.
        renew = p.last if p.last is not None and press else ""
        if p.last is not None:
            # The block's calls started somewhere between its grant and its horizon (or now);
            # report how many, and when the last one started.
            started = int(p.granted * spend_frac)
            first, last, _ = p.calls[-1]
            within = (min(now, last) - p.at) * spend_frac
            spent[p.last] = (started, within)
            report = (first, p.at + within, started)
        in_use = p.slots if now < p.slots_until else 0
        p.seq += 1
        out = budgetrow.lease(state, limits, f"p{who}", LeaseRequest(
            f"p{who}.{p.seq}", want, want % 5, min(in_use, want % 5), spent, renew=renew), now)
        state = out.state
        if out.answer.renewed:
            block = next(g for g in state.grants if g.id == renew)
            assert block.calls == p.granted and block.last == block.at + out.answer.spend_within_s
            p.calls[-1] = (p.calls[-1][0], block.last, p.granted)  # its calls per window, from its first grant
            p.at = block.at
        else:
            if report is not None:
                p.calls[-1], p.last = report, None
            if out.answer.calls:
                granted = [g for g in state.grants if g.id == f"p{who}.{p.seq}"]
                p.last, p.granted, p.at = f"p{who}.{p.seq}", out.answer.calls, granted[0].at
                assert granted[0].last == granted[0].at + out.answer.spend_within_s
                p.calls.append((granted[0].at, granted[0].last, out.answer.calls))
        p.slots, p.slots_until = out.answer.slots, now + out.answer.slot_ttl_s
        held = sum(s.count for s in state.slots.values() if s.expires > now)
        assert held <= limits.concurrency
    return procs, now


# Three full blocks, then three more just after the first leave the window: their calls can
# land in one window with the first's late calls unless the horizon is counted.
@example([(0.0, 0, 30, 1.0, False), (0.0, 1, 30, 1.0, False), (0.0, 2, 30, 1.0, False),
          (20.5, 3, 30, 1.0, False)], LIMITS)
# Four long blocks and five short ones; the long ones still count when the short ones have left.
@example([(0.0, 0, 10, 1.0, False), (0.0, 1, 10, 1.0, False), (0.0, 2, 20, 1.0, False),
          (0.0, 3, 50, 1.0, False), (8.0, 3, 30, 1.0, False), (8.0, 3, 30, 1.0, False),
          (8.0, 3, 30, 1.0, False)], AMPLE)
@settings(max_examples=400)
@given(steps, st.sampled_from([LIMITS, AMPLE]))
def test_no_sliding_window_ever_holds_more_calls_than_the_share(script: list[tuple[float, int, int, float, bool]],
                                                                limits: BudgetLimits) -> None:
    procs, _ = run(script, limits)
    # Worst case: each block's calls all start at the one instant that overfills a window
    # (any instant between its grant and its horizon or its report).
    blocks = [c for p in procs for c in p.calls]
    instants = {t for first, last, _ in blocks for t in (first, last)}
    for start in instants:
        end = start + limits.window_s
        inside = sum(n for first, last, n in blocks if first < end and last >= start)
        assert inside <= limits.calls


@given(steps, st.sampled_from([0.0, 12.0]))
def test_slots_in_use_never_exceed_the_concurrency_share(script: list[tuple[float, int, int, float, bool]],
                                                         long_s: float) -> None:
    run(script, BudgetLimits(calls=20, window_s=5.0, concurrency=3, horizon_s=1.0, skew_s=0.0, slot_ttl_s=4.0,
                             long_s=long_s))


def test_a_block_is_granted_until_the_span_is_full_and_then_again_when_it_frees() -> None:
    state, granted = BudgetState(), []
    for i in range(10):
        out = budgetrow.lease(state, LIMITS, *ask("a", i), now=100.0 + i)
        state = out.state
        granted.append(out.answer.calls)
    assert granted == [10] * 9 + [0]
    # The first block's calls may start until 102: room again a window later.
    last = budgetrow.lease(state, LIMITS, *ask("a", 99), now=109.0)
    assert last.answer.calls == 0 and abs(last.answer.retry_in - (122.0 - 109.0)) < 1e-6
    assert budgetrow.lease(state, LIMITS, *ask("a", 100), now=122.01).answer.calls == 10


def test_calls_a_process_did_not_start_go_back_to_everyone() -> None:
    state = BudgetState()
    for i in range(9):
        state = budgetrow.lease(state, LIMITS, *ask("a", i), now=100.0).state
    assert budgetrow.lease(state, LIMITS, *ask("b", 0), now=101.0).answer.calls == 0
    # "a" started only 3 calls of its last block: 7 come back for "b".
    state = budgetrow.lease(state, LIMITS, *ask("a", 9, calls=0, spent={"a.8": (3, 0.5)}), now=101.0).state
    assert budgetrow.lease(state, LIMITS, *ask("b", 1), now=101.0).answer.calls == 7


def test_a_block_finished_early_leaves_the_window_early() -> None:
    state = BudgetState()
    for i in range(9):
        state = budgetrow.lease(state, LIMITS, *ask("a", i), now=100.0).state
    # Every block's calls all started within 0.3 s: they leave the reach at 120.3, not 122.
    state = budgetrow.lease(state, LIMITS, *ask("a", 9, calls=0, spent={f"a.{i}": (10, 0.3) for i in range(9)}),
                            now=101.0).state
    assert budgetrow.lease(state, LIMITS, *ask("b", 0), now=120.2).answer.calls == 0
    assert budgetrow.lease(state, LIMITS, *ask("b", 1), now=120.31).answer.calls == 10


def test_a_crashed_holders_slots_come_back_when_they_expire() -> None:
    out = budgetrow.lease(BudgetState(), LIMITS, *ask("a", 0, calls=0, slots=9), now=100.0)
    assert out.answer.slots == 9
    waiting = budgetrow.lease(out.state, LIMITS, *ask("b", 0, calls=0, slots=2), now=105.0)
    assert waiting.answer.slots == 0 and 0 < waiting.answer.retry_in <= LIMITS.slot_poll_s
    later = budgetrow.lease(out.state, LIMITS, *ask("b", 1, calls=0, slots=2), now=115.0)
    assert later.answer.slots == 2


def test_a_holder_keeps_its_slots_in_use_and_gives_back_the_rest() -> None:
    state = budgetrow.lease(BudgetState(), LIMITS, *ask("a", 0, calls=0, slots=9), now=100.0).state
    state = budgetrow.lease(state, LIMITS, *ask("a", 1, calls=0, slots=2, in_use=2), now=101.0).state
    assert state.slots["a"].count == 2 and state.slots["a"].expires == 101.0 + LIMITS.slot_ttl_s
    assert budgetrow.lease(state, LIMITS, *ask("b", 0, calls=0, slots=9), now=101.0).answer.slots == 7


def test_pressure_halves_the_share_once_per_burst_and_calm_gives_it_back_step_by_step() -> None:
    state = budgetrow.pressure(BudgetState(), LIMITS, 100.0, None)
    assert budgetrow.call_cap(state, LIMITS, 100.0) == 45 and budgetrow.slot_cap(state, LIMITS, 100.0) == 4
    # Every instance reporting the same burst does not halve it again.
    state = budgetrow.pressure(state, LIMITS, 101.0, None)
    assert budgetrow.call_cap(state, LIMITS, 101.0) == 45
    state = budgetrow.pressure(state, LIMITS, 110.0, None)  # a later burst does
    assert budgetrow.call_cap(state, LIMITS, 110.0) == 22
    caps = [budgetrow.call_cap(state, LIMITS, 110.0 + LIMITS.calm_s * k) for k in range(9)]
    assert caps == [22, 31, 40, 49, 58, 67, 76, 85, 90]
    assert budgetrow.call_cap(BudgetState(), LIMITS, 0.0) == 90


def test_pressure_never_leaves_less_than_the_floor_or_less_than_one_call() -> None:
    state = BudgetState()
    for k in range(20):
        state = budgetrow.pressure(state, LIMITS, 100.0 + 10 * k, None)
    assert state.factor == LIMITS.floor and budgetrow.call_cap(state, LIMITS, 300.0) == 9
    tiny = BudgetLimits(calls=3, window_s=20.0, concurrency=1)
    assert budgetrow.call_cap(budgetrow.pressure(BudgetState(), tiny, 1.0, None), tiny, 1.0) == 1


def test_retry_after_stops_every_new_grant_until_it_has_passed() -> None:
    state = budgetrow.pressure(BudgetState(), LIMITS, 100.0, retry_after=30.0)
    blocked = budgetrow.lease(state, LIMITS, *ask("b", 0, slots=1), now=110.0)
    assert blocked.answer.calls == 0 and blocked.answer.slots == 0 and blocked.answer.retry_in == 20.0
    assert budgetrow.lease(state, LIMITS, *ask("b", 1, slots=1), now=130.0).answer.calls == 10


def test_a_lease_that_changes_nothing_needs_no_write() -> None:
    state = BudgetState()
    for i in range(9):
        state = budgetrow.lease(state, LIMITS, *ask("a", i), now=100.0).state
    assert budgetrow.lease(state, LIMITS, *ask("b", 0), now=101.0).changed is False


def test_while_half_the_share_is_free_blocks_and_slots_last_long() -> None:
    state, horizons = BudgetState(), []
    for i in range(5):
        out = budgetrow.lease(state, AMPLE, *ask("a", i, slots=1), now=100.0)
        state = out.state
        horizons.append((out.answer.calls, out.answer.spend_within_s, out.answer.ample))
    # 10, 20, .. 40 calls in reach stay under half of 90; the fifth block would reach 50.
    assert horizons == [(10, 60.0, True)] * 4 + [(10, 2.0, False)]
    assert [g.last for g in state.grants] == [160.0] * 4 + [102.0]
    assert state.slots["a"].expires == 160.0


def test_a_long_block_counts_against_every_window_it_can_reach() -> None:
    state = BudgetState()
    for i in range(4):
        state = budgetrow.lease(state, AMPLE, *ask("a", i), now=100.0).state
    for i in range(5):  # short blocks fill the rest of the share
        state = budgetrow.lease(state, AMPLE, *ask("b", i), now=100.0).state
    # Long after the short blocks left the window, the long ones (calls until 160) still count.
    assert budgetrow.lease(state, AMPLE, *ask("c", 0, calls=90), now=150.0).answer.calls == 50
    assert budgetrow.lease(state, AMPLE, *ask("c", 1, calls=90), now=180.01).answer.calls == 90


def test_slots_last_long_only_while_at_most_half_are_held() -> None:
    out = budgetrow.lease(BudgetState(), AMPLE, *ask("a", 0, calls=0, slots=4), now=100.0)
    assert out.answer.slot_ttl_s == 60.0 and out.state.slots["a"].expires == 160.0
    out = budgetrow.lease(out.state, AMPLE, *ask("b", 0, calls=0, slots=2), now=100.0)
    assert out.answer.slots == 2 and out.answer.slot_ttl_s == AMPLE.slot_ttl_s
    assert out.state.slots["b"].expires == 100.0 + AMPLE.slot_ttl_s


def test_under_pressure_nothing_lasts_long() -> None:
    state = budgetrow.pressure(BudgetState(), AMPLE, 100.0, None)
    out = budgetrow.lease(state, AMPLE, *ask("a", 0, slots=1), now=101.0)
    assert out.answer.calls == 10 and out.answer.spend_within_s == AMPLE.horizon_s and not out.answer.ample
    assert out.answer.slot_ttl_s == AMPLE.slot_ttl_s


def test_a_long_block_is_extended_while_room_stays_ample_and_finished_when_it_does_not() -> None:
    state = budgetrow.lease(BudgetState(), AMPLE, *ask("a", 0, slots=1), now=100.0).state
    out = budgetrow.lease(state, AMPLE, "a", LeaseRequest("a.1", 10, 1, 0, {"a.0": (4, 30.0)}, renew="a.0"), 161.0)
    # The same block, now until 221 (not a second one beside it), and its slot with it.
    assert out.answer.renewed and out.answer.calls == 10 and out.answer.spend_within_s == 60.0
    assert [(g.id, g.calls, g.last) for g in out.state.grants] == [("a.0", 10, 221.0)]
    assert out.state.slots["a"].expires == 221.0
    state = out.state
    for i in range(4):  # others fill the share past half
        state = budgetrow.lease(state, AMPLE, *ask("b", i), now=225.0).state
    out = budgetrow.lease(state, AMPLE, "a", LeaseRequest("a.2", 10, 1, 0, {"a.0": (4, 1.0)}, renew="a.0"), 230.0)
    # Not extended: finished as reported (4 calls, the last a second after its extension at 161)
    # and a short block granted.
    assert not out.answer.renewed and out.answer.spend_within_s == AMPLE.horizon_s
    assert [(g.id, g.calls, g.last) for g in out.state.grants if g.id.startswith("a")] == [
        ("a.0", 4, 162.0), ("a.2", 10, 232.0)]
