"""The benchmark's own arithmetic: `pytest bench/test_bench.py` (not part of `make test`)."""

from __future__ import annotations

import cProfile
import math
import pstats

from bench import profile, report
from bench.cost import lower_bound
from bench.latency import Edit, summarize
from bench.scale import forced_seconds, label
from bench.stats import percentiles


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values, (50, 95, 100)) == [50.0, 95.0, 100.0]
    assert percentiles([7.0], (50, 95)) == [7.0, 7.0]
    assert all(math.isnan(v) for v in percentiles([], (50,)))


def test_the_lower_bound_is_a_read_and_a_write_pass_at_each_sides_batch_size() -> None:
    assert lower_bound(1000) == {"marketo": 8, "dataverse": 2, "total": 10}
    assert lower_bound(1) == {"marketo": 2, "dataverse": 2, "total": 4}
    assert lower_bound(100_000)["marketo"] == 668


def test_the_rate_limit_forces_five_calls_a_second() -> None:
    assert forced_seconds(668) == 133.6
    assert (label(100_000), label(10_000), label(2500)) == ("100k", "10k", "2500")


def test_latency_summary_counts_unseen_edits_and_splits_directions() -> None:
    edits = [Edit("marketo", "a", "v", made=0.0, seen=3.0), Edit("dynamics", 1, "w", made=1.0, seen=11.0),
             Edit("dynamics", 2, "x", made=2.0)]
    out = summarize(edits, poll_s=5, duration_s=10)
    assert (out["latency.poll5.edits"], out["latency.poll5.unseen"]) == (3, 1)
    assert (out["latency.poll5.p50_s"], out["latency.poll5.max_s"]) == (3.0, 10.0)
    assert (out["latency.poll5.m2d.p95_s"], out["latency.poll5.d2m.p95_s"]) == (3.0, 10.0)
    assert out["latency.poll5.native_ratio"] == 30.0


def test_targets_judge_only_the_figures_measured() -> None:
    results = {"api_cost.d2m.bound_ratio": 1.8, "api_cost.d2m.naive_ratio": 111.1, "latency.poll5.p95_s": 5.6,
               "realtime.p95_ms_20_concurrent": float("nan")}
    judged = report.verdicts(results, report.targets(results, "100k", "10k"))
    assert judged["api_cost.d2m.bound_ratio"].startswith("PASS")
    assert judged["api_cost.d2m.naive_ratio"].startswith("FAIL")
    assert judged["latency.poll5.p95_s"].startswith("PASS")
    assert judged["realtime.p95_ms_20_concurrent"].startswith("FAIL")  # not measured is not a pass
    assert "api_cost.m2d.bound_ratio" not in judged


def test_the_events_figures_have_their_own_keys_and_targets() -> None:
    out = summarize([Edit("marketo", "a", "v", made=0.0, seen=1.5)], poll_s=300, duration_s=60, key="latency.events")
    assert (out["latency.events.p95_s"], out["latency.events.unseen"]) == (1.5, 0)
    results = {**out, "api_cost.events_burst_ratio": 4.4, "latency.events_dropped20.lost": 0}
    judged = report.verdicts(results, report.targets(results, "100k", "10k"))
    assert judged["latency.events.p95_s"].startswith("PASS")
    assert judged["api_cost.events_burst_ratio"].startswith("FAIL")
    assert judged["latency.events_dropped20.lost"].startswith("PASS")


def test_profile_attribution_credits_a_category_once_from_outside() -> None:
    from shared.rules import merge

    def glue() -> None:
        for _ in range(200):
            merge.merge([], "lead", {}, {}, {})

    profiler = cProfile.Profile()
    profiler.runcall(glue)
    spent = profile.attribute(pstats.Stats(profiler))
    assert spent["merge"] > 0
    assert spent["storage_links"] == spent["http_marketo"] == 0
