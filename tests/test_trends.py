"""Trends: hourly samples on real Azurite (many instances, the turn of the hour, how often a
process writes), and end to end in devhost: after a sync with synced and failed people, the
health JSON and page show them, the API calls and the poll lag in the current hour."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devhost.harness import Harness, by_hand, eventually, running
from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.runtime import Services
from shared.state.cursors import MARKETO_CHANGES
from shared.state.heartbeat import HEARTBEAT_PREFIX, record_poll
from shared.state.storage import Storage
from shared.state.trends import Counters, HourSample, Recorder, TrendStore, hour_of
from shared.sync import sampling
from tests.marketo_fixtures import MarketoEnv
from tests.test_health import UNUSED_DATAVERSE, settings

HOUR = datetime(2026, 11, 30, 4, tzinfo=UTC)


class Clock:
    """A monotonic clock the test moves (the recorder's interval, not the hour, runs on it)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store(storage_connection_string: str, name_prefix: str) -> TrendStore:
    return TrendStore(Storage(storage_connection_string, table_prefix=name_prefix))


def test_rows_of_many_instances_in_one_hour_are_summed_not_overwritten(store: TrendStore) -> None:
    a, b = Recorder(store, instance="a"), Recorder(store, instance="b")
    assert a.note(HOUR + timedelta(minutes=5), Counters(30, 12), backlog=lambda: 4, lag={MARKETO_CHANGES: 31.0})
    assert b.note(HOUR + timedelta(minutes=6), Counters(7, 3), backlog=lambda: 9, lag={MARKETO_CHANGES: 64.5})
    got = store.hours(HOUR - timedelta(hours=23), HOUR)
    assert got == {HOUR: HourSample(HOUR, 37, 15, 9, {MARKETO_CHANGES: 64.5})}


def test_a_process_writes_an_hours_first_sample_at_once_then_at_most_every_interval(store: TrendStore) -> None:
    clock = Clock()
    depth_reads: list[int] = []

    def backlog() -> int:
        depth_reads.append(len(depth_reads))
        return 5 - len(depth_reads)

    rec = Recorder(store, instance="p", every_s=600, clock=clock)
    at = HOUR + timedelta(minutes=1)
    assert rec.note(at, Counters(10, 2), backlog=backlog)
    assert not rec.note(at + timedelta(minutes=1), Counters(25, 4), backlog=backlog)  # too soon: memory only
    assert store.hours(HOUR, HOUR)[HOUR].marketo_calls == 10
    clock.t += 600
    assert rec.note(at + timedelta(minutes=11), Counters(40, 9), backlog=backlog)
    assert store.hours(HOUR, HOUR)[HOUR] == HourSample(HOUR, 40, 9, 4, {})  # the larger of the two depths
    assert len(depth_reads) == 2  # the queues are read only for a write
    clock.t += 600
    assert not rec.note(at + timedelta(minutes=21), Counters(40, 9), backlog=backlog)  # nothing new: no write


def test_the_turn_of_the_hour_closes_the_old_row_and_counts_the_new_hour_from_there(store: TrendStore) -> None:
    clock = Clock()
    rec = Recorder(store, instance="p", every_s=600, clock=clock)
    assert rec.note(HOUR + timedelta(minutes=50), Counters(10, 1), lag={MARKETO_CHANGES: 30.0})
    assert not rec.note(HOUR + timedelta(minutes=55), Counters(15, 1))
    assert rec.note(HOUR + timedelta(minutes=61), Counters(22, 3), lag={MARKETO_CHANGES: 45.0})
    nxt = HOUR + timedelta(hours=1)
    assert store.hours(HOUR, nxt) == {HOUR: HourSample(HOUR, 22, 3, None, {MARKETO_CHANGES: 30.0}),
                                      nxt: HourSample(nxt, 0, 0, None, {MARKETO_CHANGES: 45.0})}
    # a clock that steps back into the old hour keeps counting into the new one
    clock.t += 600
    assert rec.note(HOUR + timedelta(minutes=59), Counters(30, 3))
    assert store.hours(nxt, nxt)[nxt].marketo_calls == 8


def test_the_page_reads_24_hours_in_one_range_and_no_further(store: TrendStore) -> None:
    for n, hours_back in enumerate((0, 5, 23, 24, 30)):
        Recorder(store, instance=f"i{n}").note(HOUR - timedelta(hours=hours_back), Counters(n + 1, 0))
    got = store.hours(HOUR - timedelta(hours=23), HOUR)
    assert sorted((h, s.marketo_calls) for h, s in got.items()) == [
        (HOUR - timedelta(hours=23), 3), (HOUR - timedelta(hours=5), 2), (HOUR, 1)]


# -- fed by the sync (shared.sync.sampling) ------------------------------------------------------
@pytest.fixture
def svc(storage_connection_string: str, name_prefix: str, marketo: MarketoEnv,
        marketo_client: Callable[..., MarketoClient]) -> Iterator[Services]:
    """Services on this test's tables, writing every sample at once."""
    conf = replace(settings(storage_connection_string, name_prefix, marketo.emu.base_url), trends_every_s=0)
    made = Services.from_settings(conf, marketo=marketo_client(),
                                  dataverse=DataverseClient(UNUSED_DATAVERSE, "t", "c", client_secret="s"))
    yield made
    made.dataverse.close()


def test_a_poll_measures_the_gap_since_the_previous_poll_even_by_another_instance(svc: Services) -> None:
    now = datetime.now(UTC)
    record_poll(svc.storage, MARKETO_CHANGES, 0, 0, at=now - timedelta(seconds=200))  # another instance's poll
    sampling.polled(svc, MARKETO_CHANGES, 4, 0)
    beat = svc.cursors.get(HEARTBEAT_PREFIX + MARKETO_CHANGES)
    assert beat is not None and json.loads(beat.value) == {"changed": 4, "deleted": 0}  # the heartbeat, as before
    sampling.polled(svc, MARKETO_CHANGES, 0, 0)  # this process's own next poll, moments later
    (sample,) = TrendStore(svc.storage).hours(now, now).values()
    assert 200 <= sample.lag[MARKETO_CHANGES] < 200 + 120  # the gap that mattered, not the short one after
    assert sample.backlog is not None and sample.backlog >= 0


def test_api_calls_the_process_makes_are_counted_in_its_hour(svc: Services) -> None:
    sampling.sample(svc)
    before = TrendStore(svc.storage).hours(datetime.now(UTC), datetime.now(UTC))
    svc.marketo.describe()
    sampling.sample(svc)
    now = datetime.now(UTC)
    after = TrendStore(svc.storage).hours(now, now)[hour_of(now)]
    earlier = before.get(hour_of(now))
    assert after.marketo_calls > (earlier.marketo_calls if earlier is not None else 0)
    assert after.dataverse_calls == 0  # Dataverse was never called


# -- end to end ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    # Every sample is written (no 10-minute wait), as the counts must be on the page at once.
    with running(by_hand(LEADSYNC_TRENDS_EVERY_S="0")) as harness:
        yield harness


def email() -> str:
    return f"t{uuid.uuid4().hex[:10]}@example.com"


def test_the_current_hour_shows_synced_and_failed_people_api_calls_and_poll_lag(h: Harness) -> None:
    before = _current(h)
    addresses = [email() for _ in range(3)]
    for n, address in enumerate(addresses):
        h.dataverse.create("leads", {"firstname": "Ada", "lastname": f"Trend{n}", "emailaddress1": address,
                                     "companyname": "Analytical", "subject": "web form"})
    h.sync()
    (person,) = h.marketo.find_leads(addresses[0])
    h.marketo.update_lead(int(person["id"]), lastName="L" * 60)  # Dynamics allows 50: the person fails
    h.sync()

    def since_before(c: dict[str, Any]) -> dict[str, Any]:
        # the hour may turn during the test: then the new hour's counts start from nothing
        return before if c["hour"] == before["hour"] else {k: 0 for k in before}

    hour = eventually(lambda: (c := _current(h))["synced"] >= since_before(c)["synced"] + 3 and c, timeout=120)
    before = since_before(hour)
    assert hour["failed"] >= before["failed"] + 1
    assert hour["marketo_calls"] > (before["marketo_calls"] or 0)
    assert hour["dataverse_calls"] > (before["dataverse_calls"] or 0)
    assert hour["waiting"] is not None and hour["poll_lag_s"] is not None and hour["poll_lag_s"] >= 0
    assert set(hour["lag_by_feed"]) >= {MARKETO_CHANGES, "dataverse-lead", "dataverse-contact"}

    page = httpx.get(f"{h.stack.app_url}/api/health", params={"code": h.stack.config.function_key}, timeout=60)
    assert page.status_code == 200
    for chart, what in (("synced", "synced"), ("failed", "failed"), ("marketo", "calls"), ("dataverse", "calls")):
        svg = re.search(rf'<svg class="chart[^"]*" id="trend-{chart}".*?</svg>', page.text, re.S)
        assert svg is not None, chart
        *_, last = re.findall(r'<rect class="col"[^>]* height="([0-9.]+)"[^>]*><title>([^<]*)</title>', svg.group())
        label = f"{hour['hour'][11:13]}:00 UTC"
        assert float(last[0]) > 0 and last[1].startswith(label) and last[1].endswith(what), (chart, last)


def _current(h: Harness) -> dict[str, Any]:
    resp = httpx.get(f"{h.stack.app_url}/api/health.json", headers={"x-functions-key": h.stack.config.function_key},
                     timeout=60)
    assert resp.status_code == 200, resp.text
    hours = resp.json()["trends"]["hours"]
    assert len(hours) == 24
    return dict(hours[-1])
