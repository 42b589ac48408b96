"""`leadsync failures` and `leadsync retry` for failures on people with no link, against the live devhost.

One system for the module (Azurite, both emulators, the app with live queue triggers; pollers
run on demand only), so a retried person can only sync through the work message `retry` sends.
"""

from __future__ import annotations

import csv
import io
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

pytestmark = pytest.mark.e2e
NEVER = "0 0 0 1 1 *"
WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER})
    with running(config) as harness:
        yield harness


def leadsync(h: Harness, *args: str) -> Result:
    result = CliRunner().invoke(app, ["--connection-string", h.stack.env["AzureWebJobsStorage"], *args],
                                env={**h.stack.env, **WIDE})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def as_json(h: Harness, *args: str) -> Any:
    result = leadsync(h, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def listed(h: Harness, *args: str) -> dict[str, dict[str, Any]]:
    return {f["ref"]: f for f in as_json(h, "failures", *args)["failures"]}


def email() -> str:
    return f"f{uuid.uuid4().hex[:10]}@example.com"


@pytest.fixture
def blank_email_lead(h: Harness) -> str:
    """A Dynamics lead with no email, polled: linking it failed, so it has no link."""
    lead = h.dataverse.create("leads", {"firstname": "No", "lastname": "Address", "subject": "failures"})
    h.sync(1)
    ref = f"lead:{lead['leadid'].lower()}"
    eventually(lambda: ref in listed(h), timeout=30)
    return str(lead["leadid"]).lower()


@pytest.fixture
def refused_in_real_time(h: Harness) -> int:
    """A Marketo person the webhook answered 422 for (first name longer than the lead's column)."""
    marketo_id = h.marketo.create_lead(email=email(), firstName="X" * 60, lastName="Long")
    response = h.sync_person(marketo_id)
    assert response.status_code == 422, response.text
    return marketo_id


def test_an_unlinked_lead_with_a_blank_email_is_listed_with_kind_side_field_and_fix(h: Harness,
                                                                                     blank_email_lead: str) -> None:
    ref = f"lead:{blank_email_lead}"
    row = listed(h)[ref]
    assert (row["kind"], row["side"], row["fields"], row["linked"]) == ("blank_email", "dynamics", ["emailaddress1"],
                                                                        False)
    assert (row["entity"], row["dynamics_id"], row["marketo_id"]) == ("lead", blank_email_lead, None)
    assert row["fix"] == "fill in the email in the Dynamics record: a person without one is never linked"
    assert "email is blank" in row["message"] and row["operation_id"]
    table = leadsync(h, "failures")
    assert table.exit_code == 0
    assert ref in table.stdout and "blank_email" in table.stdout and "fill in the email in the Dynamics" in table.stdout


def test_a_real_time_422_is_listed_on_the_marketo_side(h: Harness, refused_in_real_time: int) -> None:
    row = listed(h)[f"m{refused_in_real_time}"]
    assert (row["kind"], row["side"], row["fields"], row["linked"]) == ("too_long", "marketo", ["firstname"], False)
    assert row["marketo_id"] == refused_in_real_time and row["direction"] == "marketo->dynamics"
    assert row["fix"] == "shorten the value in Marketo, or lengthen the Dynamics column"


def test_filters_by_kind_side_field_and_time(h: Harness, blank_email_lead: str, refused_in_real_time: int) -> None:
    lead_ref, person_ref = f"lead:{blank_email_lead}", f"m{refused_in_real_time}"
    for args, want, not_want in [
        (("--kind", "blank_email"), lead_ref, person_ref),
        (("--kind", "too-long"), person_ref, lead_ref),
        (("--side", "marketo"), person_ref, lead_ref),
        (("--side", "dynamics"), lead_ref, person_ref),
        (("--field", "FirstName"), person_ref, lead_ref),
        (("--field", "emailaddress1", "--since", "1h"), lead_ref, person_ref),
    ]:
        refs = listed(h, *args)
        assert want in refs and not_want not in refs, args
    assert not {lead_ref, person_ref} & set(listed(h, "--since", "2999-01-01T00:00:00Z"))
    assert {lead_ref, person_ref} <= set(listed(h, "--since", "1h"))
    bad = leadsync(h, "failures", "--kind", "nope")
    assert bad.exit_code == 2 and "--kind 'nope' is not one of: blank_email" in bad.stderr
    bad = leadsync(h, "failures", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since 'yesterday'" in bad.stderr


def test_csv_and_json_exports_parse_and_agree(h: Harness, blank_email_lead: str, refused_in_real_time: int) -> None:
    out = leadsync(h, "failures", "--csv")
    assert out.exit_code == 0, out.output
    rows = {r["ref"]: r for r in csv.DictReader(io.StringIO(out.stdout))}
    doc = as_json(h, "failures")
    assert set(rows) == {f["ref"] for f in doc["failures"]}
    lead = rows[f"lead:{blank_email_lead}"]
    assert (lead["kind"], lead["side"], lead["fields"], lead["linked"]) == ("blank_email", "dynamics",
                                                                            "emailaddress1", "no")
    assert lead["fix"].startswith("fill in the email") and lead["at"]
    assert rows[f"m{refused_in_real_time}"]["marketo_id"] == str(refused_in_real_time)
    assert set(doc) >= {"failures", "parked", "poison", "poison_depth", "looked_since", "at"}
    assert "@" not in out.stdout


def test_retry_by_id_re_enqueues_the_lead_and_once_its_email_is_filled_in_it_syncs(h: Harness,
                                                                                  blank_email_lead: str) -> None:
    ref = f"lead:{blank_email_lead}"
    dry = as_json(h, "retry", ref, "--dry-run")
    assert dry["dry_run"] is True and dry["retried"] == [ref] and dry["operation_ids"] == []
    address = email()
    h.dataverse.update("leads", blank_email_lead, {"emailaddress1": address})  # the fix; nothing polls it
    doc = as_json(h, "retry", ref)
    assert doc["retried"] == [ref] and len(doc["operation_ids"]) == 1 and doc["not_retried"] == {}
    found = eventually(lambda: h.marketo.find_leads(address), timeout=60)
    link = eventually(lambda: services().links.by_dynamics("lead", blank_email_lead), timeout=30)
    assert link.marketo_id == int(found[0]["id"])
    assert any(e.operation_id == doc["operation_ids"][0] for e in h.activity(link.person))
    assert ref not in listed(h)


def test_retry_by_filter_sends_a_real_time_failure_through_the_create_once_fixed_in_marketo(
        h: Harness, refused_in_real_time: int) -> None:
    ref = f"m{refused_in_real_time}"
    dry = as_json(h, "retry", "--kind", "too_long", "--since", "1h", "--dry-run")
    assert ref in dry["retried"] and dry["operation_ids"] == []
    assert services().links.get(refused_in_real_time) is None  # a dry run writes nothing

    again = as_json(h, "retry", "--kind", "too_long", "--since", "1h")  # not fixed yet: it fails again, logged
    assert ref in again["retried"]
    eventually(lambda: [e.operation_id for e in h.activity(ref)][:1] == again["operation_ids"][-1:], timeout=60)
    row = listed(h)[ref]  # still listed, from the new failure entry
    assert row["kind"] == "too_long" and row["operation_id"] in again["operation_ids"]

    h.marketo.update_lead(refused_in_real_time, firstName="Short")
    doc = as_json(h, "retry", "--kind", "too_long", "--side", "marketo", "--since", "1h")
    assert ref in doc["retried"]
    link = eventually(lambda: (lk := services().links.get(refused_in_real_time)) and lk.state == "linked" and lk,
                      timeout=60)
    assert (h.dataverse.get("leads", str(link.dynamics_id)) or {}).get("firstname") == "Short"
    assert ref not in listed(h)


def test_retry_names_what_it_could_not_retry_and_refuses_text_naming_no_person(h: Harness) -> None:
    doc = as_json(h, "retry", "999999991", "--dry-run")
    assert doc["retried"] == [] and "no open failure" in doc["not_retried"]["999999991"]
    bad = leadsync(h, "retry", "someone@example.com")
    assert bad.exit_code == 2 and bad.stderr.startswith("leadsync: ")
    nothing = leadsync(h, "retry")
    assert nothing.exit_code == 2 and "--parked, --poison or --all" in nothing.stderr


def test_the_health_page_shows_a_failure_with_its_kind_side_and_fix(h: Harness, blank_email_lead: str) -> None:
    import httpx

    ref = f"lead:{blank_email_lead}"
    headers = {"x-functions-key": h.stack.config.function_key}
    body = httpx.get(f"{h.stack.app_url}/api/health.json", headers=headers, timeout=60).json()
    (row,) = [f for f in body["failures"] if f["person"] == ref]
    assert (row["failure"], row["side"], row["field"]) == ("blank_email", "dynamics", "emailaddress1")
    assert row["fix"] == "fill in the email in the Dynamics record: a person without one is never linked"
    page = httpx.get(f"{h.stack.app_url}/api/health", headers=headers, timeout=60).text
    assert ref in page and "<th>suggested fix</th>" in page
    assert "fill in the email in the Dynamics record: a person without one is never linked" in page


def test_a_dataverse_privilege_refusal_is_listed_with_the_grant_as_its_fix_and_retried(h: Harness) -> None:
    address = email()
    lead = h.dataverse.create("leads", {"firstname": "Priv", "lastname": "Ilege", "emailaddress1": address,
                                        "subject": "failures"})
    h.sync()
    (person,) = h.marketo.find_leads(address)
    ref = f"m{person['id']}"
    h.dataverse.http.request("POST", "/_admin/privileges", json={"deny": ["prvWriteLead"]}).raise_for_status()
    try:
        h.marketo.update_lead(int(person["id"]), title="Chief")
        h.sync(1)
        row = eventually(lambda: listed(h, "--kind", "dataverse_privilege").get(ref), timeout=30)
    finally:
        h.dataverse.http.request("DELETE", "/_admin/privileges").raise_for_status()
    assert (row["side"], row["linked"], row["dynamics_id"]) == ("dynamics", True, lead["leadid"].lower())
    assert "prvWriteLead" in row["message"]
    assert row["fix"] == ("grant the missing privilege (e.g. prvWriteLead) to the application user's security role "
                          "in Dynamics")
    doc = as_json(h, "retry", ref)
    assert doc["retried"] == [ref] and len(doc["operation_ids"]) == 1
    eventually(lambda: (h.dataverse.get("leads", lead["leadid"]) or {}).get("jobtitle") == "Chief", timeout=60)
    eventually(lambda: ref not in listed(h), timeout=30)


def test_poison_messages_are_listed_as_failures_and_retried_one_by_one(h: Harness) -> None:
    from shared.state.workqueue import FROM_MARKETO, Work

    queue = services().storage.queue(f"{FROM_MARKETO}-poison")
    first, second = (Work("marketo", "changed", (999_999_900 + n,), reason="poll") for n in (1, 2))
    for work in (first, second):
        queue.send_message(work.to_json())  # as the host does after the last delivery failed

    def poisoned() -> dict[str, dict[str, Any]]:
        rows = as_json(h, "failures", "--kind", "poison_message", "--side", "queue")["failures"]
        return {w.operation_id: f for w in (first, second) for f in rows if f"op={w.operation_id}" in f["message"]}

    rows = eventually(lambda: (found := poisoned()) and len(found) == 2 and found, timeout=30)
    row = rows[first.operation_id]
    assert row["ref"].startswith("leadsync-from-marketo-poison/") and row["side"] == "queue"
    assert row["fix"].startswith("read the reason: a readable message goes back")
    dry = as_json(h, "retry", row["ref"], "--dry-run")
    assert dry["retried"] == [row["ref"]] and set(poisoned()) == {first.operation_id, second.operation_id}
    doc = as_json(h, "retry", row["ref"])
    assert doc["retried"] == [row["ref"]]
    assert set(poisoned()) == {second.operation_id}  # only the one named moved
    as_json(h, "retry", "--kind", "poison_message")
    assert poisoned() == {}
