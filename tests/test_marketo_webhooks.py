"""Marketo emulator trigger campaigns: "Person is Created" / "Data Value Changes" running a Call Webhook step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from devhost.emulators.marketo import MarketoAdmin
from devhost.harness import eventually
from tests.marketo_fixtures import MarketoEnv
from tests.test_marketo_emulator import Rest
from tests.webhook_receiver import Received, Receiver

TEMPLATE = '{"id":{{lead.Id}},"email":{{lead.Email Address}},"first":{{lead.firstName}},' \
           '"field":{{trigger.Attribute}},"new":{{trigger.New Value}},"campaign":{{campaign.name}}}'


@pytest.fixture
def rest(marketo: MarketoEnv) -> Iterator[Rest]:
    caller = Rest(marketo)
    yield caller
    caller.http.close()


@pytest.fixture
def rx() -> Iterator[Receiver]:
    with Receiver() as receiver:
        yield receiver


def arrived(rx: Receiver, n: int) -> list[Received]:
    return eventually(lambda: (lambda c: c if len(c) >= n else None)(rx.snapshot()), timeout=60)


def settled(admin: MarketoAdmin) -> dict[str, Any]:
    return eventually(lambda: (lambda s: s if s["pending"] == 0 and s["in_flight"] == 0 else None)(
        admin.webhook_stats()), timeout=60)


def body(call: Received) -> dict[str, Any]:
    return dict(json.loads(call.body))


def test_created_and_changed_fire_with_rendered_tokens(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("New person", "Person is Created", url=rx.url + "/mkto?src={{campaign.id}}",
                       template=TEMPLATE, headers={"x-mkto-secret": "s3cr3t", "x-lead": "{{lead.Id}}"})
    admin.add_campaign("Email changed", "Data Value Changes", fields=["Email Address", "title"],
                       url=rx.url + "/mkto", template=TEMPLATE)
    lead = admin.create_lead(email="ada@example.com", firstName='Ada "the" \\ Countess\n')
    [created] = arrived(rx, 1)
    assert created.method == "POST" and created.path == "/mkto"
    assert created.headers["content-type"] == "application/json"
    assert created.headers["x-mkto-secret"] == "s3cr3t" and created.headers["x-lead"] == str(lead)
    campaigns = {c["name"]: c["id"] for c in admin.campaigns()}
    assert created.query == {"src": [str(campaigns["New person"])]}
    # String tokens are quoted and escaped (JSON encoding); numbers bare; no trigger field on creation.
    assert body(created) == {"id": lead, "email": "ada@example.com", "first": 'Ada "the" \\ Countess\n',
                             "field": None, "new": None, "campaign": "New person"}

    admin.update_lead(lead, phone="555")  # not a listed field: no call
    admin.update_lead(lead, title="CTO")
    changed = arrived(rx, 2)[1]
    assert body(changed)["field"] == "Job Title" and body(changed)["new"] == "CTO"
    stats = settled(admin)
    assert (stats["submitted"], stats["sent"], stats["attempts"]) == (2, 2, 2)
    assert len(rx.snapshot()) == 2


def test_rest_writes_fire_too(marketo: MarketoEnv, rest: Rest, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("created", "Person is Created", url=rx.url + "/c", template='{"id":{{lead.Id}}}')
    admin.add_campaign("changed", "Data Value Changes", fields=["email"], url=rx.url + "/u",
                       template='{"id":{{lead.Id}},"old":{{trigger.Old Value}}}')
    [result] = rest.sync([{"email": "rest@example.com", "firstName": "R"}], action="createOrUpdate")
    [call] = arrived(rx, 1)
    assert call.path == "/c" and body(call) == {"id": result["id"]}
    rest.sync([{"id": result["id"], "email": "new@example.com"}], action="updateOnly", lookupField="id")
    call = arrived(rx, 2)[1]
    assert call.path == "/u" and body(call) == {"id": result["id"], "old": "rest@example.com"}
    rest.sync([{"id": result["id"], "email": "new@example.com"}], action="updateOnly", lookupField="id")
    assert settled(admin)["submitted"] == 2  # an unchanged value is no change


def test_other_encodings_and_get(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("form", "Person is Created", url=rx.url + "/form", encoding="form",
                       template="email={{lead.Email Address}}&name={{lead.Last Name}}&x={{lead.Nope}}")
    admin.add_campaign("raw", "Person is Created", url=rx.url + "/raw", encoding="none",
                       template="<p>{{lead.Email Address}} {{lead.unsubscribed}}</p>",
                       headers={"Content-Type": "text/xml"})
    admin.add_campaign("get", "Person is Created", url=rx.url + "/get?id={{lead.Id}}", method="GET",
                       template="ignored")
    lead = admin.create_lead(email="a+b@example.com", lastName="O'Brien & Co", unsubscribed=False)
    calls = {c.path: c for c in arrived(rx, 3)}
    form = calls["/form"]
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form.body == b"email=a%2Bb%40example.com&name=O%27Brien+%26+Co&x="
    assert parse_qs(form.body.decode(), keep_blank_values=True)["name"] == ["O'Brien & Co"]
    assert calls["/raw"].body == b"<p>a+b@example.com false</p>" and calls["/raw"].headers["content-type"] == "text/xml"
    assert calls["/get"].method == "GET" and calls["/get"].query == {"id": [str(lead)]} and calls["/get"].body == b""


def test_no_retry_and_bulk_admin_edits(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("changed", "Data Value Changes", fields=["company"], url=rx.url, template='{"id":{{lead.Id}}}')
    ids = admin.bulk([{"email": f"p{i}@example.com"} for i in range(3)])
    rx.statuses.extend([503, 502, 500])
    admin.bulk([{"id": i, "company": "Acme"} for i in ids])
    calls = arrived(rx, 3)
    assert sorted(body(c)["id"] for c in calls) == sorted(ids)
    stats = settled(admin)
    assert (stats["attempts"], stats["retries"], stats["failed"], stats["sent"]) == (3, 0, 3, 0)
    assert len(rx.snapshot()) == 3


def test_faults_drop_and_delay(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("created", "Person is Created", url=rx.url, template='{"id":{{lead.Id}}}')
    admin.webhook_fault("drop")
    dropped = admin.create_lead(email="d@example.com")
    kept = admin.create_lead(email="k@example.com")
    assert [body(c)["id"] for c in arrived(rx, 1)] == [kept]
    assert settled(admin)["dropped"] == 1 and dropped not in [body(c)["id"] for c in rx.snapshot()]
    admin.webhook_fault("delay", delay_s=0.3)
    late = admin.create_lead(email="l@example.com")
    assert body(arrived(rx, 2)[1])["id"] == late
    assert settled(admin)["delayed"] == 1
    for bad in ("duplicate", "reorder"):  # Marketo's faults are drop and delay only
        with pytest.raises(httpx.HTTPStatusError):
            admin.webhook_fault(bad)
    admin.clear_webhook_faults()


def test_at_most_20_calls_in_flight(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    admin.add_campaign("created", "Person is Created", url=rx.url, template='{"id":{{lead.Id}}}')
    rx.gate.clear()  # the receiver holds every call: the 21st to 25th wait for a free slot
    ids = admin.bulk([{"email": f"c{i}@example.com"} for i in range(25)])
    arrived(rx, 20)
    stats = admin.webhook_stats()
    assert stats["in_flight"] == 20 and stats["pending"] == 25
    rx.gate.set()
    assert sorted(body(c)["id"] for c in arrived(rx, 25)) == sorted(ids)
    stats = settled(admin)
    assert (stats["max_in_flight"], stats["sent"]) == (20, 25)


def test_campaign_configuration_is_checked(marketo: MarketoEnv, rx: Receiver) -> None:
    admin = marketo.admin
    bad: list[dict[str, Any]] = [
        {"trigger": "Data Value Changes", "fields": ["noSuchField"]},
        {"trigger": "Data Value Changes", "fields": []},
        {"trigger": "Person is Created", "fields": ["email"]},
        {"trigger": "Lead is Visited"},
        {"trigger": "Person is Created", "url": "not a url"},
        {"trigger": "Person is Created", "method": "PUT"},
        {"trigger": "Person is Created", "encoding": "xml"},
    ]
    for case in bad:
        kw = {"url": rx.url, **{k: v for k, v in case.items() if k != "trigger"}}
        with pytest.raises(httpx.HTTPStatusError) as err:
            admin.add_campaign("x", case["trigger"], **kw)
        assert err.value.response.status_code == 400 and err.value.response.json()["error"]
    assert admin.campaigns() == []
    cid = admin.add_campaign("x", "Person is Created", url=rx.url)
    admin.delete_campaign(cid)
    with pytest.raises(httpx.HTTPStatusError):
        admin.delete_campaign(cid)
    admin.create_lead(email="none@example.com")
    assert settled(admin)["submitted"] == 0
