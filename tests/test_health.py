"""Sync health: snapshots on real Azurite and the Marketo emulator, the endpoints through
devhost with keys enforced, and the page in a real headless Chromium.

Tables are isolated by prefix. The work queues have fixed names, so every test that looks
at depths clears them first (and last, for the tests that follow).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import pytest

from devhost.host import FunctionHost
from functions.health import bp as health_bp
from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.config import Secret, Settings
from shared.errors import Problem, QuotaExhausted
from shared.jsonable import to_jsonable
from shared.ops.health import DEGRADED, FAILING, OK, QUEUES, snapshot
from shared.ops.healthpage import render
from shared.ops.quota import MARKETO_DAILY_QUOTA
from shared.ops.schedules import schedule_interval
from shared.rules.merge import Collision, Side
from shared.runtime import Services
from shared.state import activity
from shared.state.activity import Entry
from shared.state.cursors import MARKETO_CHANGES, MARKETO_DELETES, dataverse_feed
from shared.state.eventbuffer import DRAIN_QUEUE, lane_of
from shared.state.heartbeat import record_poll
from shared.state.trends import Counters, HourSample, Recorder, TrendStore, hour_of
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, Work
from shared.sync.poison import park_bad_message
from shared.sync.report import Outcomes, flush
from tests.marketo_fixtures import MarketoEnv

# The doc's screenshot is rewritten only on request (`make screenshot`); a test run writes to tmp.
SCREENSHOT_SETTING = "LEADSYNC_HEALTH_SCREENSHOT"
CHROMIUM = Path("/usr/bin/chromium")
KEY = "health-test-key"
FEEDS = (MARKETO_CHANGES, MARKETO_DELETES, dataverse_feed("lead"), dataverse_feed("contact"))
UNUSED_DATAVERSE = "https://dataverse.invalid"  # never called: the health page reads storage and Marketo
# Values a person could be recognised by: they must never reach the page or the JSON.
PII = ("ada.lovelace@example.com", "ada.lovelace(at)example", "Lovelace", "Byron")


def settings(connection: str, prefix: str, marketo_url: str) -> Settings:
    return Settings(storage_connection=Secret(connection), marketo_base_url=marketo_url,
                    marketo_client_id="leadsync-test", marketo_client_secret=Secret("leadsync-test-secret"),
                    dataverse_url=UNUSED_DATAVERSE, dataverse_tenant_id="t", dataverse_client_id="c",
                    dataverse_client_secret=Secret("s"), table_prefix=prefix)


def clear_queues(svc: Services) -> None:
    for name in QUEUES:
        svc.storage.queue(name).clear_messages()


@pytest.fixture
def make_svc(storage_connection_string: str, name_prefix: str, marketo: MarketoEnv,
             marketo_client: Callable[..., MarketoClient]) -> Iterator[Callable[..., Services]]:
    """Services on this test's tables and the reset Marketo emulator; queues start empty."""
    made: list[Services] = []

    def make(**client_options: Any) -> Services:
        svc = Services.from_settings(settings(storage_connection_string, name_prefix, marketo.emu.base_url),
                                     marketo=marketo_client(**client_options),
                                     dataverse=DataverseClient(UNUSED_DATAVERSE, "t", "c", client_secret="s"))
        made.append(svc)
        clear_queues(svc)
        return svc

    yield make
    for svc in made:
        clear_queues(svc)
        svc.dataverse.close()


@pytest.fixture
def svc(make_svc: Callable[..., Services]) -> Services:
    return make_svc()


def all_polled(svc: Services, at: datetime | None = None) -> None:
    for n, feed in enumerate(FEEDS):
        record_poll(svc.storage, feed, changed=n, deleted=0, at=at)


def seed(svc: Services) -> None:
    """A busy, slightly unhappy system: what the page and the browser test look at."""
    all_polled(svc)
    svc.queues.send([Work("marketo", "changed", (1, 2)), Work("marketo", "changed", (3,)),
                     Work("dynamics", "changed", ("5f3b2a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",), "lead")])
    svc.storage.queue(f"{FROM_MARKETO}-poison").send_message('{"v": 99}')
    out = Outcomes("op-health")
    for person in ("m1001", "m1002", "m1003"):
        out.add(person, activity.SYNCED, "to Dynamics: jobtitle", direction="marketo->dynamics")
    collision = Collision("lastName", "Lovelace", "Byron", "King", Side.MARKETO, "marketo-wins")
    out.entries.append(out.collision_entry("m1042", "lead", collision))
    out.failed("m2077", activity.VALIDATION_FAILED,
               [Problem("emailaddress1", "format",
                        "emailaddress1 is not a valid email address: 'ada.lovelace(at)example'")],
               direction="marketo->dynamics", marketo_id=None, what="updating Dynamics lead")
    out.failed("m2078", activity.REJECTED,
               [Problem("", "rejected", "Marketo 1003: Value 'ada.lovelace@example.com' is not allowed")],
               direction="dynamics->marketo", marketo_id=None, what="updating the Marketo person")
    flush(svc, out)


def history(svc: Services, now: datetime) -> None:
    """A day behind the seeded hour, for the trend charts in the screenshot: a morning's
    initial sync, a few failures, a slow poll, and two hours no instance sampled."""
    current = hour_of(now)
    store = TrendStore(svc.storage)
    entries = []
    for back in range(1, 24):
        hour = current - timedelta(hours=back)
        if back in (16, 17):
            continue  # no instance ran: hatched
        busy = 9 <= back <= 12  # the initial sync
        synced = 1800 - back * 90 if busy else 20 + (back * 37) % 60
        store.write(HourSample(hour, 30 + synced // 6 + (back * 13) % 40, 120 + synced // 3 + (back * 7) % 50,
                               2400 - back * 150 if busy else (back * 5) % 9,
                               {MARKETO_CHANGES: 240.0 if back == 6 else 30.0 + back % 4,
                                MARKETO_DELETES: 300.0}), "a")
        entries.append(Entry("", activity.SYNCED, f"{synced} synced", at=hour + timedelta(minutes=30), count=synced))
        for n in range(back % 5 == 0 and 3 or back % 7 == 0):
            entries.append(Entry(f"m{3000 + back * 10 + n}", activity.VALIDATION_FAILED, "lastname is required",
                                 at=hour + timedelta(minutes=20 + n)))
    svc.activity.write(entries)


# -- snapshot ---------------------------------------------------------------------------
def test_a_quiet_system_that_polls_on_time_is_ok(svc: Services, marketo: MarketoEnv) -> None:
    all_polled(svc)
    snap = snapshot(svc)
    assert (snap.status, snap.reasons) == (OK, ())
    assert [f.feed for f in snap.feeds] == list(FEEDS)
    assert all(f.last_poll is not None and not f.lagging for f in snap.feeds)
    assert [(f.changed, f.deleted) for f in snap.feeds] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    # 30 s schedules: the 5-minute floor; deleted leads are read at most every 5 minutes: 3 x 300 s
    assert [f.limit_s for f in snap.feeds] == [300.0, 900.0, 300.0, 300.0]
    assert [(q.name, q.depth) for q in snap.queues] == [(FROM_MARKETO, 0), (FROM_DYNAMICS, 0),
                                                        (f"{FROM_MARKETO}-poison", 0), (f"{FROM_DYNAMICS}-poison", 0)]
    assert (snap.last_hour.synced, snap.last_day.failed, snap.collisions, snap.failures) == (0, 0, (), ())
    assert snap.quota.limit == MARKETO_DAILY_QUOTA
    assert snap.quota.used == marketo.admin.stats()["counted_calls"] and snap.quota.error is None


def test_lag_is_measured_from_the_last_poll_even_when_the_cursor_did_not_move(svc: Services) -> None:
    cursor = svc.cursors.save(MARKETO_CHANGES, "token-1", previous=None)  # saved once, an hour before `now`
    now = cursor.updated_at + timedelta(hours=1)
    all_polled(svc, at=now - timedelta(seconds=40))  # later polls that found nothing
    snap = snapshot(svc, now=now)
    feed = snap.feeds[0]
    assert (feed.feed, feed.lag_s, feed.limit_s, feed.lagging) == (MARKETO_CHANGES, 40.0, 300.0, False)


def test_a_poller_lagging_past_five_minutes_is_failing(svc: Services) -> None:
    now = datetime.now(UTC)
    all_polled(svc, at=now)
    record_poll(svc.storage, dataverse_feed("contact"), 0, 0, at=now - timedelta(minutes=12))
    snap = snapshot(svc, now=now)
    assert snap.status == FAILING
    assert [r.text for r in snap.reasons] == ["dataverse-contact last polled 12 min ago (limit 5 min)"]
    assert [f.lagging for f in snap.feeds] == [False, False, False, True]


def test_the_lag_limit_follows_a_slower_schedule(svc: Services) -> None:
    now = datetime.now(UTC)
    all_polled(svc, at=now - timedelta(minutes=12))
    env = {"MARKETO_POLL_SCHEDULE": "0 */5 * * * *", "DATAVERSE_POLL_SCHEDULE": "00:02:00"}
    snap = snapshot(svc, now=now, env=env)
    assert [(f.limit_s, f.lagging) for f in snap.feeds] == [(900.0, False), (900.0, False),
                                                            (360.0, True), (360.0, True)]
    assert snap.status == FAILING


def test_a_feed_that_never_polled_is_failing_and_the_cursor_stands_in_for_a_missing_heartbeat(
        svc: Services) -> None:
    cursor = svc.cursors.save(dataverse_feed("lead"), "delta-1", previous=None)
    for feed in (MARKETO_CHANGES, MARKETO_DELETES):
        record_poll(svc.storage, feed, 0, 0)
    snap = snapshot(svc, now=cursor.updated_at + timedelta(seconds=5))
    lead, contact = snap.feeds[2], snap.feeds[3]
    assert (lead.last_poll, lead.lag_s, lead.changed, lead.lagging) == (cursor.updated_at, 5.0, None, False)
    assert (contact.last_poll, contact.lagging) == (None, True)
    assert (snap.status, [r.text for r in snap.reasons]) == (FAILING, ["dataverse-contact has not polled yet"])


def test_a_schedule_that_runs_less_than_daily_is_not_judged(svc: Services) -> None:
    all_polled(svc, at=datetime.now(UTC) - timedelta(days=3))
    snap = snapshot(svc, env={"MARKETO_POLL_SCHEDULE": "0 0 0 1 1 *", "DATAVERSE_POLL_SCHEDULE": "0 0 3 * * 1"})
    assert [f.limit_s for f in snap.feeds] == [None] * 4
    assert snap.status == OK


@pytest.mark.parametrize(("schedule", "seconds"), [
    ("*/30 * * * * *", 30), ("*/5 * * * * *", 5), ("0 */5 * * * *", 300), ("0 0 * * * *", 3600),
    ("0,10 * * * * *", 50), ("0 0 9-17 * * *", 16 * 3600), ("00:00:45", 45), ("01:30:00", 5400),
    ("0 0 0 1 1 *", None), ("0 0 0 * * MON", None), ("nonsense", None), ("00:00:00", None),
])
def test_schedule_interval_is_the_longest_gap_between_runs(schedule: str, seconds: int | None) -> None:
    gap = schedule_interval(schedule)
    assert (gap.total_seconds() if gap is not None else None) == seconds


def test_counts_cover_the_last_hour_and_the_last_day(svc: Services) -> None:
    all_polled(svc)
    seed_outcomes = Outcomes("op-now")
    for person in ("m1", "m2", "m3"):
        seed_outcomes.add(person, activity.SYNCED, "to Marketo: phone")
    seed_outcomes.add("m4", activity.CREATED, "created Dynamics lead")
    flush(svc, seed_outcomes)
    now = datetime.now(UTC)
    svc.activity.write([Entry("m5", activity.SYNCED, "to Marketo: city", at=now - timedelta(hours=3)),
                        Entry("m6", activity.REJECTED, "updating Dynamics lead failed", at=now - timedelta(hours=3)),
                        Entry("m7", activity.COLLISION, "city changed on both sides", at=now - timedelta(hours=5)),
                        Entry("m8", activity.SYNCED, "too old to count", at=now - timedelta(hours=25))])
    snap = snapshot(svc)
    hour, day = snap.last_hour, snap.last_day
    assert (hour.synced, hour.failed, hour.parked, hour.collisions) == (4, 0, 0, 0)
    assert (day.synced, day.failed, day.parked, day.collisions) == (5, 1, 0, 1)
    assert day.by_kind == {"collision": 1, "created": 1, "rejected": 1, "synced": 4}
    assert snap.counts_complete and snap.status == OK  # the failure is older than an hour


def test_failures_poison_and_collisions_are_listed_by_person_key_without_values(svc: Services) -> None:
    seed(svc)
    snap = snapshot(svc)
    assert snap.status == DEGRADED
    assert [r.text for r in snap.reasons] == ["1 message on leadsync-from-marketo-poison",
                                              "2 record failures in the last hour"]
    assert [q.depth for q in snap.queues] == [2, 1, 1, 0]
    assert (snap.last_hour.synced, snap.last_hour.failed, snap.last_hour.collisions) == (3, 2, 1)
    (collision,) = snap.collisions
    assert (collision.person, collision.field, collision.message) == (
        "m1042", "lastName", "changed on both sides; Marketo wins (marketo-wins rule)")
    assert [(f.person, f.kind, f.field, f.message) for f in snap.failures] == [
        ("m2078", "rejected", "", "updating the Marketo person failed: Marketo 1003: Value [value] is not allowed"),
        ("m2077", "validation_failed", "emailaddress1",
         "updating Dynamics lead failed: emailaddress1 is not a valid email address: [value]"),
    ]
    text = json.dumps(snap.to_dict()) + render(snap)
    assert not [value for value in PII if value in text]


def test_trends_merge_every_instances_samples_with_the_activity_by_hour_and_what_is_seen_now(
        svc: Services) -> None:
    seed(svc)
    now = datetime.now(UTC)
    current, earlier = hour_of(now), hour_of(now) - timedelta(hours=3)
    store = TrendStore(svc.storage)
    store.write(HourSample(earlier, 120, 40, 7, {MARKETO_CHANGES: 95.0, MARKETO_DELETES: 330.0}), "a")
    store.write(HourSample(earlier, 30, 2, 2, {MARKETO_CHANGES: 31.0}), "b")
    Recorder(store, instance="c").note(now, Counters(9, 4), lag={dataverse_feed("lead"): 29.0})
    svc.activity.write([Entry("m9", activity.SYNCED, "to Marketo: city", at=earlier + timedelta(minutes=5)),
                        Entry("m9", activity.REJECTED, "refused", at=earlier + timedelta(minutes=6))])
    hours = snapshot(svc, now=now).trends.hours  # type: ignore[union-attr]
    assert len(hours) == 24 and (hours[0].hour, hours[-1].hour) == (current - timedelta(hours=23), current)
    by_hour = {h.hour: h for h in hours}
    old = by_hour[earlier]
    assert (old.synced, old.failed, old.waiting, old.marketo_calls, old.dataverse_calls, old.poll_lag_s) == (
        1, 1, 7, 150, 42, 95.0)  # the deleted-leads feed's planned 5-minute gap is not lag
    assert old.lag_by_feed == {MARKETO_CHANGES: 95.0, MARKETO_DELETES: 330.0}
    now_ = by_hour[current]
    assert (now_.synced, now_.failed, now_.waiting, now_.marketo_calls, now_.dataverse_calls) == (3, 2, 3, 9, 4)
    assert now_.poll_lag_s is not None and now_.poll_lag_s >= 29.0
    quiet = by_hour[current - timedelta(hours=1)]
    assert (quiet.synced, quiet.waiting, quiet.marketo_calls, quiet.poll_lag_s) == (0, None, None, None)


def test_a_poisoned_message_parks_an_entry_that_counts_as_parked(svc: Services) -> None:
    all_polled(svc)
    park_bad_message(svc, FROM_DYNAMICS, b'{"v": 2}', "schema version 2 is not 1", message_id="msg-1")
    snap = snapshot(svc)
    assert (snap.last_hour.parked, snap.last_hour.failed) == (1, 1)
    assert snap.queues[3].depth == 1
    assert [(f.person, f.kind, f.message) for f in snap.failures] == [
        ("poison", "parked", "bad message on leadsync-from-dynamics: schema version 2 is not 1")]


def test_to_dict_is_plain_json(svc: Services) -> None:
    seed(svc)
    snap = snapshot(svc)
    body = json.loads(json.dumps(snap.to_dict()))
    assert body["status"] == "degraded"
    assert body["reasons"][0] == {"level": "degraded", "text": "1 message on leadsync-from-marketo-poison"}
    assert body["feeds"][0]["feed"] == MARKETO_CHANGES and body["feeds"][0]["lagging"] is False
    assert body["feeds"][0]["last_poll"].endswith("Z")
    assert body["queues"][2] == {"name": "leadsync-from-marketo-poison", "depth": 1, "poison": True}
    assert body["last_hour"]["failed"] == 2 and body["collisions"][0]["person"] == "m1042"
    assert body["quota"]["limit"] == 50_000 and body["quota"]["fraction"] == body["quota"]["used"] / 50_000


# -- Marketo quota ----------------------------------------------------------------------
def test_an_unreachable_marketo_makes_the_quota_unknown_not_the_page_fail(
        make_svc: Callable[..., Services], marketo: MarketoEnv) -> None:
    svc = make_svc(max_attempts=2)
    all_polled(svc)
    marketo.admin.fault("http503", count=10, path_prefix="/rest/v1/stats")
    snap = snapshot(svc)
    assert (snap.quota.used, snap.quota.fraction, snap.status) == (None, None, OK)
    assert snap.quota.error is not None and "503" in snap.quota.error


def test_an_exhausted_marketo_quota_is_failing(make_svc: Callable[..., Services], marketo: MarketoEnv) -> None:
    svc = make_svc(max_attempts=1)
    all_polled(svc)
    svc.marketo.describe()  # a token and one counted call
    marketo.admin.set_limits(daily_quota=1)
    snap = snapshot(svc)
    assert (snap.quota.exhausted, snap.quota.fraction, snap.status) == (True, 1.0, FAILING)
    paused = svc.pauses.current(fresh=True)  # a 607 the page meets pauses the sync for every instance
    assert paused is not None and paused.code == "607"
    assert [r.text for r in snap.reasons] == [paused.describe()]
    assert paused.describe().startswith("paused until ") and paused.describe().endswith(
        "because Marketo daily quota (607)")


def test_a_stored_pause_is_shown_without_asking_marketo_and_ends_at_its_reset(
        svc: Services, marketo: MarketoEnv) -> None:
    all_polled(svc)
    now = datetime.now(UTC)
    paused = svc.pauses.quota_exhausted(QuotaExhausted("Daily quota '50000' reached", now + timedelta(hours=3)))
    calls = marketo.admin.stats()["counted_calls"]
    snap = snapshot(svc, now=now)
    assert snap.status == FAILING and [r.text for r in snap.reasons] == [paused.describe()]
    assert snap.paused is not None and snap.to_dict()["paused"]["until"] == to_jsonable(paused.until)
    assert marketo.admin.stats()["counted_calls"] == calls
    after_reset = snapshot(svc, now=now + timedelta(hours=3))
    assert after_reset.paused is None and not any("paused" in r.text for r in after_reset.reasons)


def test_the_quota_is_read_at_most_once_per_five_minutes_per_client(svc: Services, marketo: MarketoEnv) -> None:
    all_polled(svc)
    first = snapshot(svc).quota.used
    calls = marketo.admin.stats()["counted_calls"]
    assert [snapshot(svc).quota.used for _ in range(3)] == [first] * 3
    assert marketo.admin.stats()["counted_calls"] == calls


# -- the endpoints through devhost --------------------------------------------------------
def app_settings(marketo: MarketoEnv, prefix: str) -> dict[str, str]:
    # Dataverse at an address that resolves nowhere: the page must load while Dataverse is down.
    return {"MARKETO_BASE_URL": marketo.emu.base_url, "MARKETO_CLIENT_ID": marketo.emu.client_id,
            "MARKETO_CLIENT_SECRET": marketo.emu.client_secret, "DATAVERSE_URL": UNUSED_DATAVERSE,
            "DATAVERSE_TENANT_ID": "t", "DATAVERSE_CLIENT_ID": "c", "DATAVERSE_CLIENT_SECRET": "s",
            "LEADSYNC_TABLE_PREFIX": prefix}


def health_host(connection: str, env: dict[str, str]) -> FunctionHost:
    app = func.FunctionApp()
    app.register_functions(health_bp)
    return FunctionHost(app, connection_string=connection, host_json={"version": "2.0"}, function_key=KEY,
                        env=env, log=lambda line: None)


@pytest.fixture
def served(storage_connection_string: str, name_prefix: str, marketo: MarketoEnv,
           make_svc: Callable[..., Services]) -> Iterator[tuple[FunctionHost, Services]]:
    """The health blueprint in devhost, configured through app settings as in Azure; seeded."""
    svc = make_svc()
    seed(svc)
    with health_host(storage_connection_string, app_settings(marketo, name_prefix)) as host:
        yield host, svc


def test_the_json_endpoint_needs_the_function_key(served: tuple[FunctionHost, Services]) -> None:
    host, _ = served
    with httpx.Client(base_url=host.http_url, timeout=30) as http:
        assert http.get("/api/health.json").status_code == 401
        assert http.get("/api/health.json", headers={"x-functions-key": "wrong"}).status_code == 401
        assert http.get("/api/health", params={"format": "json"}).status_code == 401
        by_header = http.get("/api/health.json", headers={"x-functions-key": KEY})
        by_code = http.get("/api/health", params={"format": "json", "code": KEY})
    for resp in (by_header, by_code):
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
        assert resp.headers["cache-control"] == "no-store"
        body = resp.json()
        assert body["status"] == "degraded"
        assert [q["depth"] for q in body["queues"]] == [2, 1, 1, 0]
        assert [f["person"] for f in body["failures"]] == ["m2078", "m2077"]
        hours = body["trends"]["hours"]
        assert len(hours) == 24 and hours[-1]["hour"] == to_jsonable(hour_of(datetime.fromisoformat(body["at"])))
        assert (hours[-1]["synced"], hours[-1]["failed"], hours[-1]["waiting"]) == (3, 2, 3)
        assert not [value for value in PII if value in resp.text]


def test_the_page_is_self_contained_escaped_html(served: tuple[FunctionHost, Services]) -> None:
    host, svc = served
    svc.activity.write([Entry("m3000", activity.REJECTED, "Dynamics 0x80040203: <script>alert(1)</script>")])
    with httpx.Client(base_url=host.http_url, timeout=30) as http:
        assert http.get("/api/health").status_code == 401
        resp = http.get("/api/health", params={"code": KEY})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    html = resp.text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not [marker for marker in ("http://", "https://", "src=", "<link") if marker in html]
    assert 'http-equiv=refresh content="30"' in html
    assert not [value for value in PII if value in html]


def test_the_page_in_a_real_browser(served: tuple[FunctionHost, Services], tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: run scripts/ensure-chromium.sh (the Makefile does)")
    from playwright.sync_api import expect, sync_playwright

    host, svc = served
    history(svc, datetime.now(UTC))
    screenshot = Path(os.environ.get(SCREENSHOT_SETTING) or tmp_path / "health.png")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            resp = page.goto(f"{host.http_url}/api/health?code={KEY}")
            assert resp is not None and resp.status == 200
            expect(page.locator("#status")).to_have_text("DEGRADED")
            expect(page.locator(".reasons")).to_contain_text("1 message on leadsync-from-marketo-poison")
            queue_rows = page.locator("#queues tbody tr")
            expect(queue_rows).to_have_count(4)
            expect(queue_rows.filter(has_text="leadsync-from-marketo-poison").locator(".depth")).to_have_text("1")
            expect(queue_rows.nth(0).locator(".depth")).to_have_text("2")
            collision = page.locator("#collisions tbody tr").filter(has_text="m1042")
            expect(collision).to_be_visible()
            expect(collision).to_contain_text("Marketo wins")
            failure = page.locator("#failures tbody tr").filter(has_text="m2077")
            expect(failure).to_contain_text("is not a valid email address")
            expect(page.locator("#feeds tbody tr")).to_have_count(4)
            charts = page.locator("#trends svg.chart")
            expect(charts).to_have_count(6)
            for chart, title in (("synced", "3 synced"), ("failed", "2 failed"), ("waiting", "3 waiting")):
                bar = page.locator(f"#trend-{chart} rect.col").last  # the current hour, on the right
                expect(bar.locator("title")).to_contain_text(title)
                assert float(bar.get_attribute("height") or 0) > 0
                assert (bar.bounding_box() or {"height": 0})["height"] > 0  # drawn, not only in the markup
            expect(page.locator("#trend-synced title").first).to_have_text("Synced, last 24 hours by hour")
            # drawn to scale (no page style overrides a bar's height): the initial sync's peak fills
            # the chart, this hour's 3 people are a sliver of it
            drawn = [(box or {"height": 0.0})["height"] for box in
                     (bar.bounding_box() for bar in page.locator("#trend-synced rect.col").all())]
            chart_box = page.locator("#trend-synced").bounding_box()
            assert chart_box is not None and max(drawn) > chart_box["height"] * 0.9
            assert 0 < drawn[-1] < max(drawn) / 20
            assert page.locator("#feeds tr.bad").count() == 0
            assert not [value for value in PII if value in page.content()]
            assert errors == []  # e.g. no Content-Security-Policy violations
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def test_a_bad_setting_is_named_on_the_page_and_in_the_json(storage_connection_string: str,
                                                            marketo: MarketoEnv) -> None:
    env = {**app_settings(marketo, "leadsync"), "LEADSYNC_TABLE_PREFIX": "9lives"}
    with health_host(storage_connection_string, env) as host, \
            httpx.Client(base_url=host.http_url, headers={"x-functions-key": KEY}, timeout=30) as http:
        as_json = http.get("/api/health.json")
        page = http.get("/api/health")
    assert as_json.status_code == 503 and as_json.json() == {
        "status": "unknown",
        "error": "setting LEADSYNC_TABLE_PREFIX: must be letters and digits, starting with a letter",
    }
    assert page.status_code == 503 and "setting LEADSYNC_TABLE_PREFIX" in page.text


def test_the_backlog_counts_the_people_waiting_and_the_eta_follows_the_last_hours_pace(svc: Services) -> None:
    seed(svc)  # 3 work messages holding 4 ids; 5 people handled in the last hour (3 synced, 2 failed)
    snap = snapshot(svc)
    assert snap.backlog is not None
    assert (snap.backlog.people, snap.backlog.messages, snap.backlog.exact) == (4, 3, True)
    assert (snap.backlog.handled_last_hour, snap.backlog.rate_per_h) == (5, 5.0)
    assert snap.backlog.eta_s == pytest.approx(4 * 3600 / 5)
    assert "Backlog: <b>4</b> people waiting &middot; ETA <b>~48 min</b> at 5 people/h (last hour)" in render(snap)
    assert snap.to_dict()["backlog"]["text"] == "4 people waiting (3 work messages); ETA ~48 min at 5 people/h " \
                                                "(last hour)"


def test_a_backlog_nobody_works_on_has_no_eta_and_hidden_messages_are_counted_at_most_a_batch(
        svc: Services) -> None:
    all_polled(svc)
    # Deferred by a pause: invisible, so their ids cannot be peeked.
    svc.queues.send([Work("marketo", "changed", (1, 2)), Work("marketo", "changed", (3,))], delay_s=600)
    svc.events.add(lane_of("marketo", "changed", None), [77, 78])
    snap = snapshot(svc)
    assert snap.backlog is not None
    assert (snap.backlog.people, snap.backlog.exact) == (2 * svc.settings.batch_size + 2, False)
    assert snap.backlog.rate_per_h is None and snap.backlog.eta_s is None
    assert (f"Backlog: <b>about {2 * svc.settings.batch_size + 2:,}</b> people waiting &middot; ETA <b>—</b> "
            "(nothing handled in the last hour)") in render(snap)


def test_the_event_buffer_shows_what_waits_and_when_each_source_last_sent(svc: Services) -> None:
    before = snapshot(svc)
    assert before.events is not None and before.events.waiting == {} and before.events.last_received == {}
    assert "never" in render(before)
    start = datetime.now(UTC)
    try:
        svc.events.add(lane_of("marketo", "changed", None), [11, 12])
        svc.events.add(lane_of("dynamics", "changed", "lead"), ["5f3b2a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"])
        snap = snapshot(svc)
    finally:
        svc.storage.queue(DRAIN_QUEUE).clear_messages()  # nobody drains here
    assert snap.events is not None and snap.events.waiting == {"marketo-changed": 2, "dynamics-lead-changed": 1}
    assert sorted(snap.events.last_received) == ["dynamics", "marketo"]
    assert all(start - timedelta(seconds=5) <= at <= snap.at for at in snap.events.last_received.values())
    assert snap.to_dict()["events"]["last_received"]["marketo"].endswith("Z")
    page = render(snap)
    assert "id=change-events" in page and "<td class=name>Marketo campaign</td><td class='num depth'>2</td>" in page
