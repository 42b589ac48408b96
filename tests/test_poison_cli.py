"""Poison messages whatever their bytes: `leadsync failures` and `retry` list and handle a
message the host could not decode (not base64), and the app gives it an activity entry.

Through the real app in devhost: its queue listener moves a message that is not valid
base64 to `<queue>-poison` unchanged without running the function, as the Functions host
does with `messageEncoding: base64`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.queue import QueueClient
from typer.testing import CliRunner, Result

from cli.main import app
from devhost.harness import Harness, eventually, running
from devhost.stack import StackConfig
from shared.runtime import services
from shared.state.workqueue import FROM_MARKETO, Work
from shared.sync.poison import POISON_PERSON

pytestmark = pytest.mark.e2e
NEVER = "0 0 0 1 1 *"
POISON = f"{FROM_MARKETO}-poison"


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER})
    with running(config) as harness:
        yield harness


def leadsync(h: Harness, *args: str) -> Result:
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={"COLUMNS": "250"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    return result


def as_json(h: Harness, *args: str) -> Any:
    return json.loads(leadsync(h, *args, "--json").stdout)


def raw(h: Harness, queue: str) -> QueueClient:
    """A client with no message encoding: content exactly as stored."""
    return QueueClient.from_connection_string(h.stack.env["AzureWebJobsStorage"], queue)


def poisoned_raw(h: Harness, content: str) -> str:
    """Send `content` as stored bytes (no base64) to the work queue; the id of its poison copy."""
    raw(h, FROM_MARKETO).send_message(content)
    found = eventually(lambda: [m for m in raw(h, POISON).peek_messages(max_messages=32) if m.content == content],
                       timeout=30)
    return str(found[0].id)


SECRET_NAME = "Ottoline Quennell-Smythe"


def test_failures_and_retry_list_a_message_that_is_not_base64_and_leave_it(h: Harness) -> None:
    content = f"not base64! {SECRET_NAME} ottoline@example.com {uuid.uuid4().hex} \u00e9 \u2603"
    message_id = poisoned_raw(h, content)

    listed = {m["message_id"]: m for m in as_json(h, "failures")["poison"]}
    assert "not base64" in listed[message_id]["reason"]
    assert SECRET_NAME not in json.dumps(listed[message_id]) and "ottoline@" not in json.dumps(listed[message_id])
    assert "sha256" in listed[message_id]["body"]
    assert message_id in leadsync(h, "failures").stdout  # the table too

    dry = {p["message_id"]: p for p in as_json(h, "retry", "--poison", "--dry-run")["poison"]}
    assert dry[message_id]["outcome"] == "left" and "not base64" in dry[message_id]["note"]
    for flags in (("--poison",), ("--all",)):
        done = {p["message_id"]: p for p in as_json(h, "retry", *flags)["poison"]}
        assert done[message_id]["outcome"] == "left"
    stored = [m.content for m in raw(h, POISON).peek_messages(max_messages=32)]
    assert stored.count(content) == 1  # still there, unchanged, once


def test_a_work_message_sent_without_base64_is_retried_encoded_and_applied(h: Harness) -> None:
    address = f"p{uuid.uuid4().hex[:10]}@example.com"
    lead = h.dataverse.create("leads", {"firstname": "Poi", "lastname": "Son", "emailaddress1": address})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    h.marketo.update_lead(int(person["id"]), city="Tromsø")  # not polled: only the message carries it
    work = Work("marketo", "changed", (int(person["id"]),), reason="by hand")
    message_id = poisoned_raw(h, work.to_json())  # e.g. added in the portal without "encode in base64"

    listed = {m["message_id"]: m for m in as_json(h, "failures")["poison"]}
    assert "not base64" in listed[message_id]["reason"]
    outcomes = {p["message_id"]: p["outcome"] for p in as_json(h, "retry", "--poison")["poison"]}
    assert outcomes[message_id] == "moved"
    eventually(lambda: (h.dataverse.get("leads", lead["leadid"]) or {}).get("address1_city") == "Tromsø", timeout=30)


def test_the_app_gives_a_message_the_host_poisoned_an_activity_entry_without_its_content(h: Harness) -> None:
    content = f"%%% {SECRET_NAME} sven@example.com {uuid.uuid4().hex}"
    message_id = poisoned_raw(h, content)
    h.poll(dataverse=False)
    entries = [e for e in h.activity(POISON_PERSON) if e.details.get("poison_message_id") == message_id]
    assert len(entries) == 1 and entries[0].kind == "parked"
    assert "not base64" in entries[0].message and entries[0].details["queue"] == FROM_MARKETO
    assert SECRET_NAME not in json.dumps([entries[0].message, entries[0].details])
    assert "sven@" not in json.dumps([entries[0].message, entries[0].details])
    listed = {m["message_id"]: m for m in as_json(h, "failures")["poison"]}
    assert listed[message_id]["reason"] == entries[0].message

    h.poll(dataverse=False)  # noted once, and a message the app parked itself is not noted again
    # The parked entry masks the body's values, so it is found by the original message's id.
    sent = services().storage.queue(FROM_MARKETO).send_message(json.dumps({"v": 99, "marker": uuid.uuid4().hex}))
    eventually(lambda: [e for e in h.activity(POISON_PERSON) if e.details.get("message_id") == sent.id])
    h.poll(dataverse=False)
    mine = [e for e in h.activity(POISON_PERSON)
            if e.details.get("poison_message_id") == message_id or e.details.get("message_id") == sent.id]
    assert len(mine) == 2
