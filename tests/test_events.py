"""The event receivers and the drain, called as the Functions host calls them: a real
`func.HttpRequest` / `func.QueueMessage` in, the buffer and the work queues out (Azurite)."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from devhost.harness import eventually
from shared import runtime
from shared.state import eventbuffer
from shared.state.eventbuffer import DRAIN_QUEUE, LAST, MARKER, TABLE, DrainRequest, delete_row, lane_of, parse_drain
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, Work
from shared.sync.events import MAX_DATAVERSE_BODY, parse_dataverse
from tests.test_handlers import SECRET, app_env, registered  # noqa: F401 - app_env is a fixture

LEAD = "6d81597f-0f9f-e711-8122-000d3aa2331c"
TYPES = "http://schemas.microsoft.com/xrm/2011/Contracts"


def context(message: str = "Update", entity: str = "lead", record_id: str = LEAD) -> dict[str, Any]:
    """A RemoteExecutionContext as Dataverse posts it for an async PostOperation step (trimmed)."""
    target: dict[str, Any] = {"__type": f"Entity:{TYPES}", "Attributes": [
        {"key": "statuscode", "value": {"__type": f"OptionSetValue:{TYPES}", "Value": 2}},
        {"key": f"{entity}id", "value": record_id}], "EntityState": None, "FormattedValues": [], "Id": record_id,
        "KeyAttributes": [], "LogicalName": entity, "RelatedEntities": [], "RowVersion": None}
    if message == "Delete":
        target = {"__type": f"EntityReference:{TYPES}", "Id": record_id, "KeyAttributes": [], "LogicalName": entity,
                  "Name": None, "RowVersion": None}
    return {"BusinessUnitId": str(uuid.uuid4()), "CorrelationId": str(uuid.uuid4()), "Depth": 1,
            "InitiatingUserId": str(uuid.uuid4()), "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False, "IsInTransaction": False, "IsOfflinePlayback": False, "IsolationMode": 1,
            "MessageName": message, "Mode": 1, "OperationCreatedOn": "/Date(1506409448000-0700)/",
            "OperationId": str(uuid.uuid4()), "OrganizationId": str(uuid.uuid4()), "OrganizationName": "contoso",
            "OutputParameters": [], "OwningExtension": {"Id": str(uuid.uuid4()), "KeyAttributes": [],
                                                        "LogicalName": "sdkmessageprocessingstep",
                                                        "Name": f"lead-sync: {message} of {entity}",
                                                        "RowVersion": None},
            "PostEntityImages": [], "PreEntityImages": [], "PrimaryEntityId": record_id,
            "PrimaryEntityName": entity, "RequestId": str(uuid.uuid4()), "SecondaryEntityName": "none",
            "SharedVariables": [], "Stage": 40, "UserId": str(uuid.uuid4())}


def dv_request(body: bytes, *, secret: str | None = SECRET, **headers: str) -> func.HttpRequest:
    all_headers = {"content-type": "application/json", "x-ms-dynamics-organization": "contoso.crm.dynamics.com",
                   **headers}
    if secret is not None:
        all_headers["x-leadsync-secret"] = secret
    return func.HttpRequest("POST", "http://localhost/api/events/dataverse", headers=all_headers,
                            params={"code": "function-key"}, body=body)


def mk_request(body: bytes, *, secret: str | None = SECRET) -> func.HttpRequest:
    headers = {"content-type": "application/json", **({"x-leadsync-secret": secret} if secret is not None else {})}
    return func.HttpRequest("POST", "http://localhost/api/events/marketo", headers=headers, params={}, body=body)


def buffered() -> list[tuple[str, str]]:
    """Every row in this test's event buffer (markers included)."""
    table = runtime.services(checked=False).storage.table(TABLE)
    return sorted((r["PartitionKey"], r["RowKey"]) for r in table.list_entities())


def drain_all() -> list[Work]:
    """Run the drain for every message on the drain queue, as the host would; the work it sent."""
    svc = runtime.services(checked=False)
    for message in svc.storage.queue(DRAIN_QUEUE).receive_messages(visibility_timeout=30, max_messages=32):
        registered()["drain_events"](func.QueueMessage(id=message.id, body=message.content.encode(),
                                                       pop_receipt=message.pop_receipt))
        svc.storage.queue(DRAIN_QUEUE).delete_message(message)
    return _work_queued()


def _next_drain() -> DrainRequest:
    """The one drain message on the queue (waiting for it to be visible), taken off it."""
    queue = runtime.services(checked=False).storage.queue(DRAIN_QUEUE)
    (message,) = eventually(lambda: list(queue.receive_messages(visibility_timeout=30)), timeout=60)
    queue.delete_message(message)
    return parse_drain(message.content)


def _work_queued() -> list[Work]:
    """The work messages queued (taken off their queues)."""
    svc = runtime.services(checked=False)
    work: list[Work] = []
    for name in (FROM_MARKETO, FROM_DYNAMICS):
        for message in svc.storage.queue(name).receive_messages(max_messages=32):
            work.append(Work.from_json(message.content))
            svc.storage.queue(name).delete_message(message)
    return work


@pytest.fixture
def clean(app_env: dict[str, str]) -> None:  # noqa: F811 - the imported fixture
    svc = runtime.services(checked=False)
    for name in (DRAIN_QUEUE, FROM_MARKETO, FROM_DYNAMICS):
        svc.storage.queue(name).clear_messages()
    svc.events.delay_s = 0  # the drain message is visible at once: the test runs the drain itself
    svc.events.direct_max = 0  # the drain queues all its work, for the test to read


def test_the_receivers_and_the_drain_are_registered() -> None:
    assert {"dataverse_events_http", "marketo_events_http", "drain_events"} <= set(registered())


def test_a_dataverse_update_becomes_changed_work_with_the_id_only(clean: None) -> None:
    response = registered()["dataverse_events_http"](dv_request(json.dumps(context()).encode(),
                                                                **{"x-ms-dynamics-entity-name": "lead",
                                                                   "x-ms-dynamics-request-name": "Update"}))
    assert response.status_code == 202, response.get_body()
    assert json.loads(response.get_body())["id"] == LEAD
    assert buffered() == [(LAST, "dynamics-lead-changed"), ("dynamics-lead-changed", MARKER),
                          ("dynamics-lead-changed", LEAD)]
    (work,) = drain_all()
    assert (work.source, work.kind, work.entity, work.ids, work.reason) == ("dynamics", "changed", "lead", (LEAD,),
                                                                           "event")
    assert buffered() == [(LAST, "dynamics-lead-changed")]  # when the source last sent one: for the health page


def test_a_double_encoded_context_is_accepted(clean: None) -> None:
    contact = str(uuid.uuid4()).upper()
    body = json.dumps(json.dumps(context("Create", "contact", contact))).encode()
    assert registered()["dataverse_events_http"](dv_request(body)).status_code == 202
    (work,) = drain_all()
    assert (work.kind, work.entity, work.ids) == ("changed", "contact", (contact.lower(),))


def test_a_context_trimmed_for_size_is_accepted(clean: None) -> None:
    """Above 256 KB Dataverse drops the parameters and images and says so in a header: the id remains."""
    body = {k: v for k, v in context().items()
            if k not in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages")}
    response = registered()["dataverse_events_http"](dv_request(json.dumps(body).encode(),
                                                                **{"x-ms-dynamics-msg-size-exceeded": ""}))
    assert response.status_code == 202
    assert [w.ids for w in drain_all()] == [(LEAD,)]


@pytest.mark.parametrize("given,read", [
    ("A1B2C3D4-0000-4000-8000-00000000000F", "a1b2c3d4-0000-4000-8000-00000000000f"),
    (None, None), ("", None), ("not-a-guid", None), (7, None)])
def test_the_initiating_user_is_read_when_it_is_a_guid(given: Any, read: str | None) -> None:
    """Only an echo check uses it: a context without a usable one is still an event."""
    body = {**context(), "InitiatingUserId": given}
    assert parse_dataverse(json.dumps(body).encode()).initiated_by == read


def test_a_dataverse_delete_becomes_deleted_work(clean: None) -> None:
    response = registered()["dataverse_events_http"](dv_request(json.dumps(context("Delete")).encode()))
    assert response.status_code == 202
    (work,) = drain_all()
    assert (work.source, work.kind, work.entity, work.ids) == ("dynamics", "deleted", "lead", (LEAD,))


def test_a_marketo_event_becomes_changed_work(clean: None) -> None:
    response = registered()["marketo_events_http"](mk_request(b'{"leadId": 1042}'))
    assert response.status_code == 202
    (work,) = drain_all()
    assert (work.source, work.kind, work.ids) == ("marketo", "changed", (1042,))


@pytest.mark.parametrize("function,request_", [
    ("dataverse_events_http", dv_request(json.dumps(context()).encode(), secret=None)),
    ("dataverse_events_http", dv_request(json.dumps(context()).encode(), secret="wrong")),
    ("marketo_events_http", mk_request(b'{"leadId": 1}', secret=None)),
], ids=["dataverse-no-secret", "dataverse-wrong-secret", "marketo-no-secret"])
def test_an_unauthenticated_event_is_a_401_and_nothing_is_buffered(clean: None, function: str,
                                                                    request_: func.HttpRequest) -> None:
    response = registered()[function](request_)
    assert response.status_code == 401 and json.loads(response.get_body())["status"] == "unauthorized"
    assert buffered() == [] and drain_all() == []


def _oversized() -> bytes:
    body = context()
    body["SharedVariables"] = [{"key": "pad", "value": "x" * MAX_DATAVERSE_BODY}]
    return json.dumps(body).encode()


BAD_DATAVERSE = {
    "empty": (b"", "not JSON"),
    "not-json": (b"<xml/>", "not JSON"),
    "not-utf8": (b'{"MessageName": "\xff"}', "not UTF-8"),
    "oversized": (_oversized(), "larger than"),
    "a-list": (b"[1, 2]", "not a JSON object"),
    "deep": (b"[" * 100_000 + b"]" * 100_000, ""),
    "unknown-entity": (json.dumps(context(entity="account")).encode(), "PrimaryEntityName 'account'"),
    "unknown-message": (json.dumps(context("Assign")).encode(), "MessageName 'Assign'"),
    "bad-id": (json.dumps(context(record_id="6d81597f")).encode(), "is not a GUID"),
    "no-id": (json.dumps({**context(), "PrimaryEntityId": None}).encode(), "is not a GUID"),
    "double-encoded-not-json": (json.dumps("not json").encode(), "double-encoded body is not JSON"),
    "double-encoded-a-list": (json.dumps(json.dumps([context()])).encode(), "double-encoded body does not hold"),
    "triple-encoded": (json.dumps(json.dumps(json.dumps(context()))).encode(), "double-encoded body does not hold"),
}


@pytest.mark.parametrize("name", BAD_DATAVERSE)
def test_a_bad_dataverse_event_is_a_400_saying_why_and_nothing_is_buffered(clean: None, name: str) -> None:
    body, reason = BAD_DATAVERSE[name]
    response = registered()["dataverse_events_http"](dv_request(body))
    answer = json.loads(response.get_body())
    assert response.status_code == 400 and answer["status"] == "bad_request" and reason in answer["error"]
    assert buffered() == [] and drain_all() == []


def test_headers_that_disagree_with_the_body_are_a_400(clean: None) -> None:
    response = registered()["dataverse_events_http"](dv_request(json.dumps(context()).encode(),
                                                                **{"x-ms-dynamics-entity-name": "contact"}))
    assert response.status_code == 400 and "x-ms-dynamics-entity-name" in json.loads(response.get_body())["error"]
    assert buffered() == []


@pytest.mark.parametrize("body", [b"", b"{}", b'{"leadId": "12"}', b'{"leadId": 0}', b'{"leadId": 1, "x": 2}',
                                  b"x" * 5000])
def test_a_bad_marketo_event_is_a_400_and_nothing_is_buffered(clean: None, body: bytes) -> None:
    response = registered()["marketo_events_http"](mk_request(body))
    assert response.status_code == 400 and json.loads(response.get_body())["error"]
    assert buffered() == [] and drain_all() == []


BAD_MARKETO = {
    # A valid body but for its size: whitespace between tokens is JSON, so only the size is wrong.
    "oversized": (b'{"leadId": 1' + b" " * 5000 + b"}", "larger than"),
    # Marketo renders the template once: a JSON string holding the object is not its webhook.
    "double-encoded": (json.dumps(json.dumps({"leadId": 1})).encode(), 'one key "leadId"'),
    "a-list": (b'[{"leadId": 1}]', 'flat JSON object'),
}


@pytest.mark.parametrize("name", BAD_MARKETO)
def test_a_bad_marketo_event_is_a_400_saying_why_and_nothing_is_buffered(clean: None, name: str) -> None:
    body, reason = BAD_MARKETO[name]
    response = registered()["marketo_events_http"](mk_request(body))
    answer = json.loads(response.get_body())
    assert response.status_code == 400 and answer["status"] == "bad_request" and reason in answer["error"], answer
    assert buffered() == [] and drain_all() == []


def test_a_burst_of_a_thousand_events_becomes_a_few_work_messages(clean: None) -> None:
    """1,000 calls (400 people, some edited several times), from 8 callers at once: the drain
    sends each person once, 300 to a message."""
    people = list(range(5001, 5401))
    calls = [people[i % 400] for i in range(1000)]

    def call(person: int) -> int:
        return int(registered()["marketo_events_http"](mk_request(b'{"leadId": %d}' % person)).status_code)

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, calls)) == {202}
    svc = runtime.services(checked=False)
    assert svc.events.pending() == {"marketo-changed": 400}
    assert svc.storage.queue(DRAIN_QUEUE).get_queue_properties().approximate_message_count == 1
    work = drain_all()
    assert sorted(len(w.ids) for w in work) == [100, 300]
    assert sorted(i for w in work for i in w.ids) == people


def test_an_event_after_the_drain_started_schedules_another(clean: None) -> None:
    svc = runtime.services(checked=False)
    registered()["marketo_events_http"](mk_request(b'{"leadId": 7001}'))
    assert [w.ids for w in drain_all()] == [(7001,)]
    registered()["marketo_events_http"](mk_request(b'{"leadId": 7002}'))
    assert svc.storage.queue(DRAIN_QUEUE).get_queue_properties().approximate_message_count == 1
    assert [w.ids for w in drain_all()] == [(7002,)]


def test_the_sweep_drains_ids_whose_drain_message_was_lost(clean: None) -> None:
    svc = runtime.services(checked=False)
    registered()["marketo_events_http"](mk_request(b'{"leadId": 8001}'))
    svc.storage.queue(DRAIN_QUEUE).clear_messages()  # the drain message is lost: the marker stays
    assert svc.events.sweep(stale_s=3600) == []  # nothing old enough yet
    (drained,) = svc.events.sweep(stale_s=-5)
    assert (drained.lane, drained.ids, drained.messages) == ("marketo-changed", 1, 1)
    assert [w.ids for w in drain_all()] == [(8001,)]
    assert buffered() == [(LAST, "marketo-changed")]  # only when the source last sent one


def test_a_bad_drain_message_is_poisoned(clean: None) -> None:
    svc = runtime.services(checked=False)
    poison = svc.storage.queue(f"{DRAIN_QUEUE}-poison")
    poison.clear_messages()
    registered()["drain_events"](func.QueueMessage(id="d-1", body=b'{"lane": "marketo-deleted"}', pop_receipt="r"))
    assert [m.content for m in poison.receive_messages()] == ['{"lane": "marketo-deleted"}']
    poison.clear_messages()


def test_a_row_written_again_after_the_drain_read_it_is_left_for_the_next_drain(clean: None) -> None:
    """The drain deletes a row only if its ETag is the one it read: an event for the same
    record that landed meanwhile may describe a change the drain's work did not see."""
    svc = runtime.services(checked=False)
    lane = lane_of("marketo", "changed", None)
    svc.events.add(lane, [9001])
    table = svc.storage.table(TABLE)
    read = table.get_entity(lane.key, "9001")
    svc.events.add(lane, [9001])  # the same person again, after the read
    delete_row(table, lane.key, "9001", etag=read.metadata["etag"])
    assert (lane.key, "9001") in buffered()
    delete_row(table, lane.key, "9001", etag=table.get_entity(lane.key, "9001").metadata["etag"])
    assert (lane.key, "9001") not in buffered()


def test_when_storage_is_unreachable_an_event_is_a_503(app_env: dict[str, str]) -> None:  # noqa: F811
    nowhere = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
               "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
               "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1")
    runtime.configure({**app_env, "AzureWebJobsStorage": nowhere})
    response = registered()["marketo_events_http"](mk_request(b'{"leadId": 1042}'))
    assert response.status_code == 503 and json.loads(response.get_body())["status"] == "unavailable"


def _buffer_ids(lane_key: str, ids: range) -> None:
    svc = runtime.services(checked=False)
    svc.events.add(lane_of("marketo", "changed", None), list(ids))
    svc.storage.queue(DRAIN_QUEUE).clear_messages()  # the tests below run the drains themselves
    assert svc.events.pending() == {lane_key: len(ids)}


def test_a_busy_lanes_drain_stretches_its_window_and_keeps_every_id(clean: None) -> None:
    """A burst's first drain finds more than a trickle: it puts the marker back and schedules
    the next drain of the same window instead of sending a small work message."""
    svc = runtime.services(checked=False)
    svc.events.delay_s = 1
    _buffer_ids("marketo-changed", range(10001, 10021))
    opened = datetime.now(UTC)
    drained = svc.events.drain(DrainRequest("marketo-changed", opened), now=opened + timedelta(seconds=1))
    assert (drained.ids, drained.messages, drained.stretched) == (20, 0, True)
    assert svc.events.pending() == {"marketo-changed": 20}
    assert ("marketo-changed", MARKER) in buffered()  # receivers meanwhile rely on the drain scheduled
    queue = svc.storage.queue(DRAIN_QUEUE)
    assert queue.get_queue_properties().approximate_message_count == 1
    grew = opened + timedelta(seconds=1)
    request = _next_drain()
    assert request == DrainRequest("marketo-changed", opened, 20, grew)  # the same window
    # Nothing new at the next look: perhaps a stall, so the window stays open...
    drained = svc.events.drain(request, now=opened + timedelta(seconds=2))
    assert (drained.ids, drained.messages, drained.stretched) == (20, 0, True)
    request = _next_drain()
    assert request == DrainRequest("marketo-changed", opened, 20, grew)
    # ...until the lane has not grown for QUIET_S: the burst is over.
    drained = svc.events.drain(request, now=grew + timedelta(seconds=eventbuffer.QUIET_S))
    assert (drained.ids, drained.messages, drained.stretched) == (20, 1, False)
    assert [sorted(w.ids) for w in drain_all()] == [list(range(10001, 10021))]
    assert svc.events.pending() == {}


def test_a_bursts_window_sends_full_messages_and_leaves_the_rest_for_the_next(clean: None) -> None:
    """A window that ends with 320 ids sends one message of 300; the other 20 wait in a new
    window (marker and drain message) for the burst's next ids, losing none."""
    svc = runtime.services(checked=False)
    svc.events.delay_s = 1
    _buffer_ids("marketo-changed", range(20001, 20321))
    opened = datetime.now(UTC)
    drained = svc.events.drain(DrainRequest("marketo-changed", opened), now=opened + timedelta(seconds=1))
    assert (drained.ids, drained.messages, drained.held) == (300, 1, 20)
    (work,) = _work_queued()
    assert sorted(work.ids) == list(range(20001, 20301))
    assert svc.events.pending() == {"marketo-changed": 20}
    assert ("marketo-changed", MARKER) in buffered()
    request = _next_drain()
    assert request.opened is not None and request.seen == 0  # a new window's first look
    assert svc.events.drain(request, now=request.opened + timedelta(seconds=1)).stretched  # a burst's rate
    later = request.opened + timedelta(seconds=1 + eventbuffer.QUIET_S)
    drained = svc.events.drain(_next_drain(), now=later)
    assert (drained.ids, drained.messages, drained.held) == (20, 1, 0)  # the burst is over
    assert [sorted(w.ids) for w in _work_queued()] == [list(range(20301, 20321))]
    assert svc.events.pending() == {}


def test_a_trickle_is_drained_at_once(clean: None) -> None:
    svc = runtime.services(checked=False)
    svc.events.delay_s = 1
    _buffer_ids("marketo-changed", range(11001, 11004))
    opened = datetime.now(UTC)
    drained = svc.events.drain(DrainRequest("marketo-changed", opened), now=opened + timedelta(seconds=1))
    assert (drained.ids, drained.messages, drained.stretched) == (3, 1, False)
    assert [sorted(w.ids) for w in drain_all()] == [[11001, 11002, 11003]]


def test_the_drain_applies_a_small_lane_itself(clean: None) -> None:
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    _buffer_ids("marketo-changed", range(12001, 12004))
    applied: list[Work] = []
    drained = svc.events.drain("marketo-changed", apply=applied.append)
    assert (drained.ids, drained.messages, drained.applied) == (3, 0, 1)
    assert [sorted(w.ids) for w in applied] == [[12001, 12002, 12003]]
    assert drain_all() == [] and svc.events.pending() == {}  # no work message: one queue hop fewer


def test_while_the_drain_applies_its_rows_are_gone_and_its_work_waits_invisible(clean: None) -> None:
    """Another drain of the lane meanwhile reads nothing (a burst's slow apply would otherwise
    be applied again by every drain that runs before it ends); the held copy is withdrawn."""
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    _buffer_ids("marketo-changed", range(12101, 12104))
    queue = svc.storage.queue(FROM_MARKETO)
    seen: list[tuple[dict[str, int], int, list[Any]]] = []

    def apply(work: Work) -> None:
        visible = list(queue.peek_messages(max_messages=32))
        seen.append((svc.events.pending(), svc.queues.depth(FROM_MARKETO), visible))

    assert svc.events.drain("marketo-changed", apply=apply).applied == 1
    assert seen == [({}, 1, [])]  # no rows left; one work message, invisible
    assert svc.queues.depth(FROM_MARKETO) == 0  # withdrawn once applied


def test_a_drain_that_dies_mid_apply_leaves_its_work_to_the_queue(clean: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventbuffer, "DIRECT_HOLD_S", 1)
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    _buffer_ids("marketo-changed", range(12201, 12204))

    def die(work: Work) -> None:
        raise SystemExit("the host was killed")

    with pytest.raises(SystemExit):
        svc.events.drain("marketo-changed", apply=die)
    assert svc.events.pending() == {}
    works = eventually(_work_queued, timeout=60)  # visible once the hold ends
    assert [sorted(w.ids) for w in works] == [[12201, 12202, 12203]]


def test_an_event_while_the_drain_works_joins_its_window_and_the_next_drain_reads_it(
        clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The marker stays while the drain works: a receiver meanwhile only touches it (no drain
    of its own reads the rows being drained); the drain's last look opens the next window."""
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    _buffer_ids("marketo-changed", range(16001, 16004))
    scheduled: list[bool] = []
    send_held = svc.queues.send_held

    def receiver_meanwhile(item: Work, *, hold_s: int) -> Any:
        if not scheduled:  # one receiver call, during the first drain
            scheduled.append(svc.events.add(lane_of("marketo", "changed", None), [16009]))
        return send_held(item, hold_s=hold_s)

    monkeypatch.setattr(svc.queues, "send_held", receiver_meanwhile)
    applied: list[Work] = []
    assert svc.events.drain("marketo-changed", apply=applied.append).applied == 1
    assert scheduled == [False]  # the window was open: one request, no drain message of its own
    assert [sorted(w.ids) for w in applied] == [[16001, 16002, 16003]]
    assert svc.events.pending() == {"marketo-changed": 1}
    assert svc.events.drain(_next_drain(), apply=applied.append).ids == 1
    assert applied[-1].ids == (16009,) and svc.events.pending() == {}


def test_ids_whose_apply_in_the_drain_failed_go_to_a_work_message(clean: None) -> None:
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    _buffer_ids("marketo-changed", range(13001, 13004))

    def fail(work: Work) -> None:
        raise ConnectionError("Marketo is unreachable")

    drained = svc.events.drain("marketo-changed", apply=fail)
    assert (drained.ids, drained.messages, drained.applied) == (3, 1, 0)
    assert [sorted(w.ids) for w in drain_all()] == [[13001, 13002, 13003]]
    assert svc.events.pending() == {}


def test_the_drain_trigger_applies_a_small_lane_without_a_work_message(clean: None) -> None:
    """Through the registered drain: a Marketo person not linked yet is left alone by the
    applier, as from a work message; the ids are gone from the buffer and no message was sent."""
    svc = runtime.services(checked=False)
    svc.events.direct_max = 300
    registered()["marketo_events_http"](mk_request(b'{"leadId": 14001}'))
    assert drain_all() == []
    assert svc.events.pending() == {}


def test_an_event_while_a_drain_is_pending_costs_one_storage_request(clean: None) -> None:
    """A burst's events after the first: the id's row and the marker's touch in one
    transaction (table requests counted at the wire, on the storage client's HTTP session)."""
    svc = runtime.services(checked=False)
    lane = lane_of("marketo", "changed", None)
    assert svc.events.add(lane, [15001]) is True  # opens the window
    requests: list[str] = []
    hook = lambda response, *args, **kwargs: requests.append(response.request.method)  # noqa: E731
    svc.storage._session.hooks["response"].append(hook)
    try:
        assert svc.events.add(lane, [15002]) is False
    finally:
        svc.storage._session.hooks["response"].remove(hook)
    assert requests == ["POST"]  # one $batch
    assert svc.events.pending() == {"marketo-changed": 2}
    assert [sorted(w.ids) for w in drain_all()] == [[15001, 15002]]


def test_an_event_after_the_drain_deleted_the_marker_opens_a_new_window(clean: None) -> None:
    """The marker's touch fails when a drain has started (it deletes the marker before reading):
    nothing of that transaction is written, and the call schedules the next drain itself."""
    svc = runtime.services(checked=False)
    lane = lane_of("marketo", "changed", None)
    svc.events.add(lane, [16001])
    delete_row(svc.storage.table(TABLE), lane.key, MARKER)  # as a drain starting does
    svc.storage.queue(DRAIN_QUEUE).clear_messages()
    assert svc.events.add(lane, [16002]) is True
    assert ("marketo-changed", MARKER) in buffered()
    assert [sorted(w.ids) for w in drain_all()] == [[16001, 16002]]
