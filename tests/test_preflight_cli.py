"""`leadsync check` against the live devhost, with each problem injected into the emulators.

Every injection goes through the emulators' admin APIs (as the real services would refuse
or describe things) and both emulators are reset after each test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from devhost.harness import Harness, running
from devhost.stack import StackConfig
from shared.runtime import ACTIVITY_TYPE_CURSOR, reset_services, services

pytestmark = pytest.mark.e2e
NEVER = "0 0 0 1 1 *"


@pytest.fixture(scope="module")
def stack() -> Iterator[Harness]:
    config = StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER})
    with running(config) as harness:
        yield harness


@pytest.fixture
def h(stack: Harness) -> Iterator[Harness]:
    yield stack
    stack.marketo.reset()
    stack.dataverse.reset()
    reset_services()
    services().cursors.delete(ACTIVITY_TYPE_CURSOR)  # the reset forgot the activity type the app made


def check(h: Harness, *args: str, env: dict[str, str] | None = None,
          connection: str | None = None) -> tuple[Result, list[str]]:
    result = CliRunner().invoke(
        app, ["--connection-string", connection or h.stack.env["AzureWebJobsStorage"], "check", *args],
        env={**h.stack.env, "COLUMNS": "250", **(env or {})})  # the app settings exported, as an operator would
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result, [line for line in result.stdout.splitlines() if line.startswith("PROBLEM ")]


def report(h: Harness, **kw: Any) -> dict[str, Any]:
    result, _ = check(h, "--json", **kw)
    return dict(json.loads(result.stdout))


def admin(h: Harness, service: str, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    http = h.marketo.http if service == "marketo" else h.dataverse.http
    base = h.marketo.base_url if service == "marketo" else ""
    http.request(method, f"{base}/_admin{path}", json=body).raise_for_status()


def test_a_healthy_setup_passes_with_todays_usage_and_length_warnings(h: Harness) -> None:
    result, problems = check(h)
    assert result.exit_code == 0, result.output
    assert problems == []
    assert "Marketo API calls today:" in result.stdout and "of 50000" in result.stdout
    listed, _ = check(h, "--warnings")
    # Dynamics' firstname holds 50 characters, Marketo's firstName 255: a warning, not a failure.
    assert any("lead.firstname holds 50" in line for line in listed.stdout.splitlines()
               if line.startswith("warning fields:"))


def test_wrong_marketo_credentials(h: Harness) -> None:
    result, problems = check(h, env={"MARKETO_CLIENT_ID": "not-the-app"})
    assert result.exit_code == 1
    assert len(problems) == 1 and problems[0].startswith("PROBLEM marketo-credentials:")
    assert "MARKETO_CLIENT_SECRET" in problems[0]


def test_wrong_dataverse_credentials(h: Harness) -> None:
    result, problems = check(h, env={"DATAVERSE_CLIENT_SECRET": "wrong"})
    assert result.exit_code == 1
    assert [p.split(":")[0] for p in problems] == ["PROBLEM dataverse-credentials"]


def test_a_marketo_endpoint_the_role_lacks_is_named_with_its_permission(h: Harness) -> None:
    admin(h, "marketo", "POST", "/permissions", {"deny": ["/rest/v1/activities/pagingtoken.json"]})
    result, problems = check(h)
    assert result.exit_code == 1
    assert problems == ["PROBLEM marketo-permissions: the API user may not call "
                        "GET /rest/v1/activities/pagingtoken.json (603 Access denied) -> give the API user's role "
                        "the Read-Write Activity permission (Admin > Users & Roles)"]


def test_a_mapped_marketo_field_that_is_gone(h: Harness) -> None:
    admin(h, "marketo", "DELETE", "/fields/title")
    problems = report(h)["problems"]
    assert [p["problem"] for p in problems] == ["Marketo has no field 'title'"]


def test_a_mapped_dataverse_column_that_is_gone(h: Harness) -> None:
    admin(h, "dataverse", "DELETE", "/metadata/contact/jobtitle")
    problems = report(h)["problems"]
    assert [p["problem"] for p in problems] == ["Dataverse contact has no column 'jobtitle'"]


def test_a_mapped_column_of_the_wrong_type(h: Harness) -> None:
    fmap = {"version": 1, "fields": [
        {"marketo": "email", "lead": "emailaddress1", "contact": "emailaddress1", "type": "email"},
        {"marketo": "firstName", "lead": "leadsourcecode"},
    ]}
    problems = report(h, env={"LEADSYNC_FIELD_MAP": json.dumps(fmap)})["problems"]
    assert [p["problem"] for p in problems] == ["Dataverse lead.leadsourcecode is Picklist, the map says string"]


def test_the_activity_type_back_in_draft(h: Harness) -> None:
    services().activity_type_id()  # the app creates, approves and remembers it on first use
    assert report(h)["ok"] is True
    admin(h, "marketo", "PATCH", "/activity-types/leadsyncEvent", {"status": "draft"})
    problems = report(h)["problems"]
    assert [(p["check"], p["problem"]) for p in problems] == [
        ("activity-type", "the custom activity type 'leadsyncEvent' is draft, not approved")]


def test_the_activity_type_the_app_uses_deleted(h: Harness) -> None:
    services().activity_type_id()
    h.marketo.reset()  # a new instance behind the same credentials: the remembered type is gone
    problems = report(h)["problems"]
    assert [p["check"] for p in problems] == ["activity-type"]
    assert "is gone" in problems[0]["problem"]


@pytest.mark.parametrize(("privilege", "what"), [
    ("prvReadLead", "read leads"),
    ("prvReadContact", "read contacts"),
    ("prvReadEntity", "read lead metadata"),
    ("prvReadEntity", "read the contact table definition"),
    ("prvReadAttribute", "read contact metadata"),
])
def test_a_missing_dataverse_privilege_is_named_with_its_grant(h: Harness, privilege: str, what: str) -> None:
    admin(h, "dataverse", "POST", "/privileges", {"deny": [privilege]})
    result, problems = check(h)
    assert result.exit_code == 1
    assert f"PROBLEM dataverse-privileges: the application user may not {what} ({privilege} missing) -> " \
           f"grant {privilege} (organization level) to the application user's security role" in problems


def test_change_tracking_off(h: Harness) -> None:
    admin(h, "dataverse", "POST", "/entities/contact/change-tracking", {"enabled": False})
    problems = report(h)["problems"]
    assert [(p["check"], p["problem"]) for p in problems] == [("change-tracking", "change tracking is off on contact")]


def test_no_quota_left_today(h: Harness) -> None:
    h.marketo.set_limits(daily_quota=1)
    problems = report(h)["problems"]
    assert [p["check"] for p in problems] == ["quota"]


def test_storage_unreachable(h: Harness) -> None:
    dead = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Zm9v;"
            "BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1;"
            "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;")
    result, problems = check(h, connection=dead)
    assert result.exit_code == 1
    assert [p.split(":")[0] for p in problems] == ["PROBLEM storage"], result.output
