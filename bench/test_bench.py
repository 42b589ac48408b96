"""The benchmark's own arithmetic: `pytest bench/test_bench.py` (not part of `make test`)."""

from __future__ import annotations

import cProfile
import math
import pstats

import pytest

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


def test_forced_time_at_a_share_of_the_rate_limit() -> None:
    from bench.instances import forced_seconds_at, initial_sync_calls

    assert initial_sync_calls(100_000) == 668
    assert initial_sync_calls(10_000) == 68
    assert forced_seconds_at(668) == forced_seconds(668) == 133.6
    assert math.isclose(forced_seconds_at(68, 0.7), 68 / 3.5)  # what the 70 % a competitor leaves forces


def test_limit_answers_are_the_growth_of_each_emulators_refusals() -> None:
    from bench.instances import limit_answers

    marketo_before = {"responses_by_code": {"200": 10, "606": 2}}
    marketo_after = {"responses_by_code": {"200": 90, "606": 5, "615": 1}}
    dataverse_before = {"responses_by_status": {"200": 3}}
    dataverse_after = {"responses_by_status": {"200": 9, "429": 4}}
    assert limit_answers(marketo_before, marketo_after, dataverse_before, dataverse_after) == {
        "606": 3, "615": 1, "429": 4}


def test_storage_share_counts_the_budget_resources_of_all_requests() -> None:
    from bench.instances import storage_share

    assert storage_share({"leadsynclinks": 90, "$batch:leadsyncbudget": 4, "leadsyncBudget": 6}, "budget") == 0.1
    assert storage_share({"leadsynclinks": 10}, "budget") == 0.0
    assert math.isnan(storage_share({}, "budget"))


def test_the_storage_proxy_names_the_resource_a_request_addresses() -> None:
    from bench.storageproxy import resource_of

    assert resource_of(b"GET /devstoreaccount1/leadsynclinks(PartitionKey='a',RowKey='b') HTTP/1.1", b"") \
        == "leadsynclinks"
    assert resource_of(b"GET /devstoreaccount1/leadsync-from-dynamics/messages?numofmessages=32 HTTP/1.1", b"") \
        == "leadsync-from-dynamics"
    batch = (b"--changeset_1\r\nContent-Type: application/http\r\n\r\n"
             b"PUT http://127.0.0.1:10002/devstoreaccount1/leadsyncbudget(PartitionKey='m',RowKey='w') HTTP/1.1\r\n")
    assert resource_of(b"POST /devstoreaccount1/$batch HTTP/1.1", batch) == "$batch:leadsyncbudget"
    assert resource_of(b"POST /devstoreaccount1/$batch HTTP/1.1", b"") == "$batch"


def test_only_takes_known_phases() -> None:
    from bench.__main__ import PHASES, parse_phases

    assert parse_phases(None) == frozenset(PHASES)
    assert parse_phases("instances, competing") == {"instances", "competing"}
    for bad in ("instances,nope", ","):
        with pytest.raises(ValueError):
            parse_phases(bad)


def test_the_scale_out_targets() -> None:
    results = {"scale.instances4.vs_rate_limit": 1.31, "scale.instances4.self_inflicted_limit_errors": 0,
               "budget.storage_share": 0.05, "budget.competing.vs_rate_limit": 1.2}
    judged = report.verdicts(results, report.targets(results, "100k", "10k"))
    assert judged["scale.instances4.vs_rate_limit"].startswith("FAIL")
    assert judged["scale.instances4.self_inflicted_limit_errors"].startswith("PASS")
    assert judged["budget.storage_share"].startswith("FAIL")  # under 5 %, strictly
    assert judged["budget.competing.vs_rate_limit"].startswith("PASS")
