"""`leadsync resync`, run with typer's CliRunner against the real app in devhost.

The module's app starts with the default field map less `title`, so people linked here
have no agreed title; one test then adds `title` to the map (the app's settings and the
CLI's), previews the resync and applies it. The other tests change a mapped field on one
side without polling it, so only a resync can carry the change across.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from devhost.harness import Harness, by_hand, eventually, running
from shared import runtime
from shared.rules.fieldmap import DEFAULT_PATH
from shared.runtime import services
from shared.state.links import Link
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

pytestmark = pytest.mark.e2e
WIDE = {"COLUMNS": "250"}  # rich wraps tables at 80 columns when not on a terminal
FULL_MAP = json.loads(DEFAULT_PATH.read_text())
NO_TITLE_MAP = {**FULL_MAP, "fields": [f for f in FULL_MAP["fields"] if f["marketo"] != "title"]}


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with running(by_hand(LEADSYNC_FIELD_MAP=json.dumps(NO_TITLE_MAP))) as harness:
        yield harness


def leadsync(h: Harness, *args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={**h.stack.env, **WIDE, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def as_json(h: Harness, *args: str, env: dict[str, str] | None = None) -> Any:
    result = leadsync(h, *args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def email() -> str:
    return f"r{uuid.uuid4().hex[:10]}@example.com"


def linked(h: Harness, entity: str = "lead", **fields: Any) -> tuple[str, int]:
    """A Dynamics record the app linked to the Marketo person it created for it."""
    address = email()
    body = {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address, **fields}
    if entity == "lead":
        body["subject"] = "resync"
    record = h.dataverse.create(f"{entity}s", body)
    h.sync()
    (person,) = h.marketo.find_leads(address)
    return record[f"{entity}id"], int(person["id"])


def link(marketo_id: int) -> Link:
    found = services().links.get(marketo_id)
    assert found is not None
    return found


def writes(h: Harness) -> tuple[int, int]:
    dataverse = sum(v for k, v in h.dataverse.stats()["requests_by_operation"].items() if not k.startswith("GET"))
    return dataverse, int(h.marketo.stats()["calls_by_endpoint"].get("POST /rest/v1/leads.json", 0))


def marketo_reads(h: Harness) -> int:
    return int(h.marketo.stats()["calls_by_endpoint"].get("GET /rest/v1/leads.json", 0))


def queued() -> int:
    queues = services().queues
    return queues.depth(FROM_MARKETO) + queues.depth(FROM_DYNAMICS)


def synced_by(h: Harness, marketo_id: int, operation_ids: list[str]) -> bool:
    return any(e.kind == "synced" and e.operation_id in operation_ids for e in h.activity(f"m{marketo_id}"))


# -- a field added to the map ------------------------------------------------------------------
def test_a_field_added_to_the_map_is_previewed_without_writing_then_resynced(h: Harness) -> None:
    lead_id, lead_person = linked(h, "lead", jobtitle="VP Sales")
    contact_id, contact_person = linked(h, "contact", jobtitle="Buyer")
    h.marketo.update_lead(lead_person, title="CTO")  # not mapped yet: nothing carries it across
    h.sync()
    assert (h.dataverse.get("leads", lead_id) or {})["jobtitle"] == "VP Sales"
    for mid in (lead_person, contact_person):
        assert "title" not in link(mid).base

    env = {"LEADSYNC_FIELD_MAP": json.dumps(FULL_MAP)}  # title joins the map, the app's and the CLI's
    h.drain()
    runtime.configure({**os.environ, **h.stack.env, **env})
    try:
        before = (writes(h), {m: (link(m).base, len(h.activity(f"m{m}"))) for m in (lead_person, contact_person)})
        dry = as_json(h, "resync", "--field", "title", "--dry-run", env=env)
        assert dry["dry_run"] is True and dry["messages"] == 0 and dry["operation_ids"] == []
        people = {p["marketo_id"]: p for p in dry["people"]}
        assert {lead_person, contact_person} <= set(people) and dry["selected"] == len(dry["people"])
        changes = {m: [(c["field"], c["to"], c["winner"], c["why"]) for c in people[m]["changes"]]
                   for m in (lead_person, contact_person)}
        assert changes == {
            lead_person: [("title", "dynamics", "marketo", "default-rule")],  # both set: Marketo wins on leads
            contact_person: [("title", "marketo", "dynamics", "first-merge-blank")],  # a blank never overwrites
        }
        (lead_change,) = people[lead_person]["changes"]
        assert (lead_change["marketo"], lead_change["dynamics"], lead_change["agreed_before"]) == ("CTO", "VP Sales",
                                                                                                   False)
        assert people[lead_person]["outcome"] == "update"
        table = leadsync(h, "resync", "--field", "title", "--dry-run", env=env)
        assert table.exit_code == 0, table.output
        assert "dry run: nothing written" in table.stdout and "default rule, Marketo wins on leads" in table.stdout
        assert "a blank never overwrites" in table.stdout and f"lead:{lead_id}" in table.stdout
        assert queued() == 0
        h.drain()  # had the preview enqueued anything, the app would have written it by now
        assert (writes(h), {m: (link(m).base, len(h.activity(f"m{m}"))) for m in (lead_person, contact_person)}) \
            == before
        assert (h.dataverse.get("leads", lead_id) or {})["jobtitle"] == "VP Sales"
        assert (h.marketo.get_lead(contact_person) or {}).get("title") in (None, "")

        doc = as_json(h, "resync", "--field", "title", env=env)
        assert doc["dry_run"] is False and doc["selected"] >= 2 and doc["messages"] == len(doc["operation_ids"]) >= 1
        eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("jobtitle") == "CTO", timeout=60)
        eventually(lambda: (h.marketo.get_lead(contact_person) or {}).get("title") == "Buyer", timeout=60)
        eventually(lambda: all(synced_by(h, m, doc["operation_ids"]) for m in (lead_person, contact_person)),
                   timeout=60)
        h.drain()
        assert link(lead_person).base["title"] == "CTO" and link(contact_person).base["title"] == "Buyer"
        assert as_json(h, "resync", "--field", "title", "--dry-run", env=env)["selected"] == 0  # reached everyone
        assert (h.dataverse.get("contacts", contact_id) or {})["jobtitle"] == "Buyer"
    finally:
        h.drain()
        runtime.configure({**os.environ, **h.stack.env})


# -- one person, a list, everyone ----------------------------------------------------------------
def test_one_person_by_id_is_previewed_then_resynced_and_by_email_too(h: Harness) -> None:
    lead_id, person = linked(h)
    h.marketo.update_lead(person, city="Reykjavik")  # not polled: only a resync carries it
    dry = as_json(h, "resync", f"m{person}", "--dry-run")
    (p,) = dry["people"]
    assert (p["marketo_id"], p["entity"], p["dynamics_id"], p["outcome"]) == (person, "lead", lead_id, "update")
    assert [(c["field"], c["marketo"], c["to"], c["why"]) for c in p["changes"]] == [
        ("city", "Reykjavik", "dynamics", "changed-in-marketo")]
    assert queued() == 0

    doc = as_json(h, "resync", f"m{person}")
    assert (doc["selected"], doc["messages"]) == (1, 1)
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("address1_city") == "Reykjavik", timeout=60)
    eventually(lambda: synced_by(h, person, doc["operation_ids"]), timeout=60)

    h.dataverse.update("leads", lead_id, {"address1_postalcode": "101"})  # not polled either
    address = str((h.marketo.get_lead(person) or {})["email"])
    by_email = as_json(h, "resync", address.upper())
    assert by_email["selected"] == 1
    eventually(lambda: (h.marketo.get_lead(person) or {}).get("postalCode") == "101", timeout=60)


def test_a_list_of_people_goes_in_one_message_and_one_batched_read(h: Harness, tmp_path: Path) -> None:
    people = [linked(h) for _ in range(3)]
    for n, (lead_id, _) in enumerate(people):
        h.dataverse.update("leads", lead_id, {"address1_city": f"Town {n}"})  # not polled
    ids = tmp_path / "ids.txt"
    ids.write_text(f"# people to resync\nm{people[0][1]}\n\nlead:{people[1][0].upper()}  # by record\n")
    h.drain()
    reads = marketo_reads(h)
    doc = as_json(h, "resync", str(people[2][1]), "--file", str(ids))
    assert (doc["selected"], doc["messages"]) == (3, 1)
    for n, (_, person) in enumerate(people):
        eventually(lambda n=n, person=person: (h.marketo.get_lead(person) or {}).get("city") == f"Town {n}",
                   timeout=60)
    h.drain()
    assert marketo_reads(h) - reads == 1  # the applier read the three people in one call


def test_all_resyncs_every_linked_person(h: Harness) -> None:
    (lead_id, person), _ = linked(h), linked(h)
    h.marketo.update_lead(person, country="Iceland")  # not polled
    everyone = sum(1 for lk in services().links.all() if lk.entity and lk.state != "creating")
    h.drain()
    reads = marketo_reads(h)
    dry = as_json(h, "resync", "--all", "--dry-run")
    assert dry["selected"] == everyone > 1 and dry["counts"]["update"] >= 1
    assert marketo_reads(h) - reads == -(-everyone // 300)  # read as the applier reads: 300 people a call
    assert [p["outcome"] for p in dry["people"] if p["marketo_id"] == person] == ["update"]
    doc = as_json(h, "resync", "--all")
    assert doc["selected"] == everyone and doc["messages"] == -(-everyone // 300)
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("address1_country") == "Iceland", timeout=60)


# -- bad input --------------------------------------------------------------------------------------
def test_a_person_not_linked_is_a_clear_error_and_nothing_is_enqueued(h: Harness, tmp_path: Path) -> None:
    _, person = linked(h)
    h.drain()
    result = leadsync(h, "resync", f"m{person}", "m999999999", "nobody@example.com")
    assert result.exit_code == 1
    assert "m999999999: Marketo person 999999999 is not linked" in result.stderr
    assert "nobody@example.com: no linked Marketo person has this email" in result.stderr
    assert queued() == 0  # not even the one person who is linked

    empty = tmp_path / "ids.txt"
    empty.write_text("# nobody yet\n\n")
    for args, message in [
        (["resync", "banana"], "'banana' is not a Marketo lead id"),
        (["resync"], "say who to resync"),
        (["resync", "--all", f"m{person}"], "say who to resync"),
        (["resync", "--field", "nosuch"], "'nosuch' is not in the field map"),
        (["resync", "--file", "/nonexistent/ids.txt"], "--file /nonexistent/ids.txt: No such file or directory"),
        (["resync", "--file", str(empty)], f"--file {empty} names nobody"),
    ]:
        result = leadsync(h, *args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    assert queued() == 0
