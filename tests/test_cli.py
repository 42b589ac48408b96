"""`leadsync`, the operator's CLI, run with typer's CliRunner against the real app in devhost.

One system for the module (Azurite, both emulators, the app with live queue triggers and
pollers run on demand); each test makes its own people with unique emails and reads the
CLI's `--json` output, and its tables where a person would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from devhost.harness import Harness, eventually, running
from devhost.stack import StackConfig
from shared.runtime import services
from shared.state.workqueue import FROM_MARKETO, Work

pytestmark = pytest.mark.e2e
NEVER = "0 0 0 1 1 *"
WIDE = {"COLUMNS": "250"}  # rich wraps tables at 80 columns when not on a terminal


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER})
    with running(config) as harness:
        yield harness


def leadsync(h: Harness, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """The CLI as an operator runs it: the app settings exported in its environment."""
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={**h.stack.env, **WIDE, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def as_json(h: Harness, *args: str) -> Any:
    result = leadsync(h, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def email() -> str:
    return f"c{uuid.uuid4().hex[:10]}@example.com"


def new_linked_lead(h: Harness, **fields: Any) -> tuple[str, int, str]:
    address = email()
    lead = h.dataverse.create("leads", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": address,
                                        "subject": "cli", **fields})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    return lead["leadid"], int(person["id"]), address


def dataverse_writes(h: Harness) -> int:
    return sum(v for k, v in h.dataverse.stats()["requests_by_operation"].items() if not k.startswith("GET"))


def marketo_writes(h: Harness) -> int:
    return int(h.marketo.stats()["calls_by_endpoint"].get("POST /rest/v1/leads.json", 0))


def link_count() -> int:
    return sum(1 for _ in services().links.all())


# -- status -------------------------------------------------------------------------------
def test_status_shows_health_cursors_queue_depths_and_outcome_counts(h: Harness) -> None:
    new_linked_lead(h)
    doc = as_json(h, "status")
    feeds = {f["name"]: f for f in doc["feeds"]}
    assert feeds["marketo-leadchanges"]["last_moved"] and feeds["dataverse-lead"]["last_moved"]
    assert feeds["dataverse-lead"]["last_poll"] and feeds["dataverse-lead"]["lagging"] is False
    queues = {q["name"]: q for q in doc["queues"]}
    assert set(queues) == {"leadsync-from-marketo", "leadsync-from-dynamics", "leadsync-from-marketo-poison",
                           "leadsync-from-dynamics-poison"}
    assert queues["leadsync-from-marketo-poison"]["poison"] is True
    assert doc["links"] >= 1 and doc["last_hour"]["created"] >= 1 and doc["last_day"]["created"] >= 1
    assert doc["health"]["status"] in ("ok", "degraded", "failing") and doc["health"]["quota"]["used"] >= 0
    table = leadsync(h, "status")
    assert table.exit_code == 0
    assert "Status: " in table.stdout and "Marketo quota: " in table.stdout
    assert doc["backlog"]["people"] == 0 and doc["backlog"]["handled_last_hour"] >= 1
    assert "Backlog: 0 people waiting (0 work messages); ETA now at " in table.stdout
    assert "leadsync-from-dynamics-poison" in table.stdout and "marketo-leadchanges" in table.stdout
    assert "@" not in table.stdout


def test_status_with_storage_alone_still_shows_queues_cursors_and_counts(h: Harness) -> None:
    full = as_json(h, "status")
    for result in (leadsync(h, "status", "--storage-only", "--json"),
                   leadsync(h, "status", "--json", env={"MARKETO_BASE_URL": None})):
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["health"] is None
        assert [q["name"] for q in doc["queues"]] == [q["name"] for q in full["queues"]]
        assert doc["links"] == full["links"] and doc["last_day"]["created"] >= 1
        assert all(f["last_moved"] for f in doc["feeds"])
        assert doc["backlog"]["people"] == full["backlog"]["people"] and doc["backlog"]["text"]
    unset = leadsync(h, "status", env={"MARKETO_BASE_URL": None})
    assert "setting MARKETO_BASE_URL" in unset.stderr and "Links: " in unset.stdout


# -- failures and retry --parked -----------------------------------------------------------
@pytest.fixture
def rejected(h: Harness) -> Iterator[tuple[str, int]]:
    """A linked lead whose Marketo title Dynamics rejected (its column was shortened meanwhile)."""
    lead_id, marketo_id, _ = new_linked_lead(h)
    h.marketo.update_lead(marketo_id, title="Warm")  # the app reads Dynamics' rules while they are normal
    h.sync(1)
    h.dataverse.set_metadata("lead", "jobtitle", max_length=5)
    try:
        h.marketo.update_lead(marketo_id, title="Chief Analyst")
        h.sync(1)
        yield lead_id, marketo_id
    finally:
        h.dataverse.set_metadata("lead", "jobtitle", max_length=100)


def test_failures_lists_a_parked_person_with_the_reason_and_no_email(h: Harness, rejected: tuple[str, int]) -> None:
    lead_id, marketo_id = rejected
    doc = as_json(h, "failures")
    (parked,) = [p for p in doc["parked"] if p["marketo_id"] == marketo_id]
    assert (parked["entity"], parked["dynamics_id"], parked["kind"]) == ("lead", lead_id, "rejected")
    assert "maximum allowed length" in parked["reason"] and parked["retry_pending"] is False
    table = leadsync(h, "failures")
    assert str(marketo_id) in table.stdout and "maximum allowed length" in table.stdout
    assert "@" not in table.stdout


def test_retry_parked_unparks_and_re_enqueues_so_a_fixed_cause_syncs(h: Harness, rejected: tuple[str, int]) -> None:
    lead_id, marketo_id = rejected
    h.dataverse.set_metadata("lead", "jobtitle", max_length=100)  # an admin fixed Dynamics
    h.sync(1)  # nothing changed on either side: the person stays parked
    assert services().links.get(marketo_id).state == "parked"  # type: ignore[union-attr]
    dry = as_json(h, "retry", "--parked", "--person", str(marketo_id), "--dry-run")
    assert dry["parked"] == [marketo_id] and dry["operation_ids"] == []
    assert services().links.get(marketo_id).parked_fingerprint is not None  # type: ignore[union-attr]

    doc = as_json(h, "retry", "--parked", "--person", str(marketo_id))
    assert doc["parked"] == [marketo_id] and len(doc["operation_ids"]) == 1
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("jobtitle") == "Chief Analyst", timeout=30)
    link = eventually(lambda: (lk := services().links.get(marketo_id)) and lk.state == "linked" and lk)
    assert link.base["title"] == "Chief Analyst" and link.parked_fingerprint is None
    eventually(lambda: [e.operation_id for e in h.activity(f"m{marketo_id}") if e.kind == "synced"][:1]
               == doc["operation_ids"])
    assert all(p["marketo_id"] != marketo_id for p in as_json(h, "failures")["parked"])


# -- poison ---------------------------------------------------------------------------------
def test_failures_and_retry_poison_move_a_readable_message_back_and_leave_a_bad_one(h: Harness) -> None:
    lead_id, marketo_id, _ = new_linked_lead(h)
    h.marketo.update_lead(marketo_id, city="Reykjavik")  # not polled: only the message below carries it
    storage = services().storage
    work = Work("marketo", "changed", (marketo_id,), reason="poll")
    storage.queue(f"{FROM_MARKETO}-poison").send_message(work.to_json())  # as the host does after 5 failures
    marker = uuid.uuid4().hex
    storage.queue(FROM_MARKETO).send_message(json.dumps({"v": 99, "marker": marker}))
    eventually(lambda: any(marker in m["body"] for m in as_json(h, "failures")["poison"]), timeout=30)

    listed = {m["body"]: m for m in as_json(h, "failures")["poison"]}
    good = listed[work.to_json()]
    bad = next(m for body, m in listed.items() if marker in body)
    assert good["queue"] == bad["queue"] == "leadsync-from-marketo-poison"
    assert f"op={work.operation_id}" in good["reason"] and "retries exhausted" in good["reason"]
    assert "schema version 99" in bad["reason"]

    doc = as_json(h, "retry", "--poison")
    outcomes = {p["message_id"]: p["outcome"] for p in doc["poison"]}
    assert outcomes[good["message_id"]] == "moved" and outcomes[bad["message_id"]] == "left"
    eventually(lambda: (h.dataverse.get("leads", lead_id) or {}).get("address1_city") == "Reykjavik", timeout=30)
    eventually(lambda: any(e.operation_id == work.operation_id and e.kind == "synced"
                           for e in h.activity(f"m{marketo_id}")))  # the log is written after the writes
    remaining = [m["body"] for m in as_json(h, "failures")["poison"]]
    assert work.to_json() not in remaining and any(marker in body for body in remaining)


# -- backfill -------------------------------------------------------------------------------
def test_backfill_dry_run_writes_nothing_then_backfill_links_the_pair_by_email(h: Harness) -> None:
    address = email()
    marketo_id = h.marketo.create_lead(email=address.upper(), firstName="Grace", lastName="Hopper",
                                       title="Marketing says", city="Arlington")
    contact = h.dataverse.create("contacts", {"firstname": "Grace", "lastname": "Hopper", "emailaddress1": address,
                                              "jobtitle": "Sales says"})  # not polled: nobody linked it yet
    contact_id = contact["contactid"]
    before = (link_count(), dataverse_writes(h), marketo_writes(h))

    dry = as_json(h, "backfill", "--dry-run")
    assert dry["dry_run"] is True and dry["scanned"]["contact"] >= 1
    (new,) = [n for n in dry["linked"] if n["dynamics_id"] == contact_id]
    assert (new["marketo_id"], new["entity"]) == (marketo_id, "contact")
    diffs = {d["field"]: (d["marketo"], d["dynamics"], d["winner"]) for d in new["differences"]}
    assert diffs == {"title": ("Marketing says", "Sales says", "dynamics"),
                     "city": ("Arlington", None, "marketo")}  # contacts: Dynamics wins; a blank never does
    assert (link_count(), dataverse_writes(h), marketo_writes(h)) == before
    assert services().links.get(marketo_id) is None and h.activity(f"m{marketo_id}") == []
    table = leadsync(h, "backfill", "--dry-run")
    assert table.exit_code == 0 and "dry run" in table.stdout and str(marketo_id) in table.stdout

    doc = as_json(h, "backfill", "--entity", "contact")
    assert [n["marketo_id"] for n in doc["linked"] if n["dynamics_id"] == contact_id] == [marketo_id]
    assert len(doc["operation_ids"]) >= 1
    link = services().links.by_dynamics("contact", contact_id)
    assert link is not None and link.marketo_id == marketo_id
    eventually(lambda: (h.marketo.get_lead(marketo_id) or {}).get("title") == "Sales says", timeout=30)
    eventually(lambda: (h.dataverse.get("contacts", contact_id) or {}).get("address1_city") == "Arlington")
    again = as_json(h, "backfill", "--dry-run", "--entity", "contact")
    assert all(n["dynamics_id"] != contact_id for n in again["linked"])  # linked now: nothing to do


def test_backfill_without_app_settings_fails_in_one_line_naming_the_setting(h: Harness) -> None:
    result = leadsync(h, "backfill", env={"MARKETO_BASE_URL": None})
    assert result.exit_code == 2
    assert result.stderr.strip() == "leadsync: setting MARKETO_BASE_URL: is required but not set"
    assert "leadsync-dev-secret" not in result.output


# -- explain --------------------------------------------------------------------------------
def test_explain_shows_the_link_base_values_and_activity_newest_first(h: Harness) -> None:
    lead_id, marketo_id, address = new_linked_lead(h, jobtitle="Countess")
    h.dataverse.update("leads", lead_id, {"jobtitle": "Enchantress of Numbers"})
    h.sync()
    doc = as_json(h, "explain", f"lead:{lead_id.upper()}")
    assert doc["link"]["marketo_id"] == marketo_id and doc["link"]["dynamics_id"] == lead_id
    assert doc["link"]["state"] == "linked"
    assert doc["link"]["base"]["title"] == "Enchantress of Numbers" and doc["link"]["base"]["email"] == address
    kinds = [e["kind"] for e in doc["activity"]]
    assert kinds[0] == "synced" and "created" in kinds
    stamps = [e["at"] for e in doc["activity"]]
    assert stamps == sorted(stamps, reverse=True)
    table = leadsync(h, "explain", str(marketo_id))
    assert table.exit_code == 0
    assert "Enchantress of Numbers" in table.stdout and f"lead:{lead_id}" in table.stdout
    assert "created" in table.stdout and "synced" in table.stdout


def test_usage_errors_are_one_line_with_exit_status_2(h: Harness) -> None:
    bad = leadsync(h, "explain", "someone@example.com")
    assert bad.exit_code == 2 and bad.stderr.startswith("leadsync: ") and len(bad.stderr.splitlines()) == 1
    nothing = leadsync(h, "retry")
    assert nothing.exit_code == 2 and "--parked, --poison or --all" in nothing.stderr
    no_storage = CliRunner().invoke(app, ["status"], env={"AzureWebJobsStorage": None})
    assert no_storage.exit_code == 2 and "--connection-string" in no_storage.stderr
