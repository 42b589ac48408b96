"""API cost per 1,000 changed people, each direction, against the lower bound and a naive flow.

One round per direction, measured as in tests/test_sync_e2e.py: change N linked people on
one side, run that side's poller once, drain the work queues; the call counters of both
emulators (their /_admin/stats) are read before and after. The echo of our own writes
(the other side's poller reading them back and dropping them) is measured too, as the
round's tail, and counted in the "all-in" figures the ratios use.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from bench.naive import Naive
from bench.system import BenchSystem, Counters, people_with, seed_leads

MARKETO_BATCH = 300  # records per Marketo read (filterValues) and per write (leads.json input)
DATAVERSE_BATCH = 1000  # operations per $batch; records per read page we credit the bound with


def lower_bound(n: int) -> dict[str, int]:
    """Fewest calls that can carry n changes one way: a read and a write pass on each side."""
    marketo = 2 * math.ceil(n / MARKETO_BATCH)
    dataverse = 2 * math.ceil(n / DATAVERSE_BATCH)
    return {"marketo": marketo, "dataverse": dataverse, "total": marketo + dataverse}


def linked_people(system: BenchSystem, n: int, label: str) -> tuple[str, list[tuple[str, int]]]:
    """n new Dataverse leads with last name `tag`, synced to Marketo: (tag, [(lead id, Marketo id)])."""
    tag = f"{label}{uuid.uuid4().hex[:6]}"
    records = [{"firstname": f"P{i}", "lastname": tag, "emailaddress1": f"{tag}-{i}@example.com",
                "subject": "bench"} for i in range(n)]
    ids = seed_leads(system, records)
    system.sync(2)
    people = people_with(system, tag)
    missing = n - len(people)
    if missing:
        raise RuntimeError(f"{missing} of {n} seeded leads did not reach Marketo")
    return tag, [(lead_id, people[r["emailaddress1"]]) for lead_id, r in zip(ids, records, strict=True)]


def _round(system: BenchSystem, *, marketo: bool) -> Counters:
    before = system.counters()
    system.poll(marketo=marketo, dataverse=not marketo)
    system.drain()
    return system.counters() - before


def measure(system: BenchSystem, n: int, naive_sample: int) -> dict[str, Any]:
    tag, pairs = linked_people(system, n, "cost")
    out: dict[str, Any] = {"api_cost.n": n, "api_cost.naive_sample": naive_sample}
    bound = lower_bound(n)
    out["api_cost.bound.marketo"], out["api_cost.bound.dataverse"] = bound["marketo"], bound["dataverse"]
    out["api_cost.bound.total"] = bound["total"]
    stamp = uuid.uuid4().hex[:4]

    # Dynamics -> Marketo
    for i, (lead_id, _) in enumerate(pairs):
        system.dataverse.update("leads", lead_id, {"jobtitle": f"D{i}-{stamp}"})
    d2m = _round(system, marketo=False)
    titles = {int(p["id"]): p.get("title") for p in system.marketo.all_leads()}
    wrong = sum(1 for i, (_, mid) in enumerate(pairs) if titles.get(mid) != f"D{i}-{stamp}")
    d2m_echo = _round(system, marketo=True)

    # Marketo -> Dynamics
    system.marketo.bulk([{"id": mid, "title": f"M{i}-{stamp}"} for i, (_, mid) in enumerate(pairs)])
    m2d = _round(system, marketo=True)
    leads = {r["leadid"]: r.get("jobtitle") for r in system.dataverse.find("leads", lastname=tag)}
    wrong += sum(1 for i, (lid, _) in enumerate(pairs) if leads.get(lid) != f"M{i}-{stamp}")
    m2d_echo = _round(system, marketo=False)
    out["api_cost.wrong_values"] = wrong

    naive = _naive(system, pairs[:naive_sample], stamp)
    for name, main, echo in (("d2m", d2m, d2m_echo), ("m2d", m2d, m2d_echo)):
        per_k = 1000 / n
        all_in = main.total + echo.total
        out[f"api_cost.{name}.marketo_calls"] = main.marketo_calls
        out[f"api_cost.{name}.dataverse_requests"] = main.dataverse_requests
        out[f"api_cost.{name}.echo_calls"] = echo.total
        out[f"api_cost.{name}.calls_per_1k"] = round(all_in * per_k, 1)
        naive_per_k = naive[name].total * 1000 / len(pairs[:naive_sample])
        out[f"api_cost.{name}.naive_calls_per_1k"] = round(naive_per_k, 1)
        out[f"api_cost.{name}.naive_ratio"] = round(naive_per_k / (all_in * per_k), 1)
        out[f"api_cost.{name}.bound_ratio"] = round(all_in / bound["total"], 2)
    return out


def _naive(system: BenchSystem, pairs: list[tuple[str, int]], stamp: str) -> dict[str, Counters]:
    """The naive flow over a sample of the same people; then let LeadSync absorb its edits."""
    flow = Naive(system.env)
    try:
        flow.marketo_headers()
        flow.dataverse_headers()  # tokens first: neither side counts them as API calls
        before = system.counters()
        flow.dynamics_to_marketo([(mid, {"title": f"ND{i}-{stamp}"}) for i, (_, mid) in enumerate(pairs)])
        d2m = system.counters() - before
        before = system.counters()
        flow.marketo_to_dynamics([(lid, {"jobtitle": f"NM{i}-{stamp}"}) for i, (lid, _) in enumerate(pairs)])
        m2d = system.counters() - before
    finally:
        flow.close()
    system.sync(2)  # LeadSync sees the naive flow's writes as edits: both sides agree, bases move
    return {"d2m": d2m, "m2d": m2d}
