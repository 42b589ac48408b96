"""The registered functions called as the Functions host calls them: a real `func.HttpRequest`
or `func.QueueMessage` in, the response or the queue's state out.

The functions come from `function_app.app` through the public azure.functions API (what
the host indexes), and run on settings handed over with `runtime.configure`, against
Azurite and both emulators.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest

from devhost.emulators.dataverse import DataverseEmulator
from function_app import app
from shared import runtime
from shared.config import Settings
from shared.runtime import Services
from shared.state import activity
from shared.state.budget import TableAllowance
from shared.state.workqueue import FROM_MARKETO
from shared.sync.poison import POISON_PERSON
from tests.marketo_fixtures import MarketoEnv

SECRET = "handler-test-secret"


@functools.cache
def registered() -> dict[str, Callable[..., Any]]:
    """Every function of the app by name, as the host indexes them (once: indexing twice is refused)."""
    return {str(fn.get_function_name()): fn.get_user_function() for fn in app.get_functions()}


@pytest.fixture
def app_env(storage_connection_string: str, name_prefix: str, marketo: MarketoEnv,
            dataverse: tuple[DataverseEmulator, Any]) -> Iterator[dict[str, str]]:
    """App settings for this test's tables and the reset emulators, handed to the app."""
    emu, _ = dataverse
    env = {"AzureWebJobsStorage": storage_connection_string, "LEADSYNC_TABLE_PREFIX": name_prefix,
           "MARKETO_BASE_URL": marketo.emu.base_url, "MARKETO_CLIENT_ID": marketo.emu.client_id,
           "MARKETO_CLIENT_SECRET": marketo.emu.client_secret, "DATAVERSE_URL": emu.base_url,
           "DATAVERSE_TENANT_ID": emu.tenant, "DATAVERSE_CLIENT_ID": emu.client_id,
           "DATAVERSE_CLIENT_SECRET": emu.client_secret, "DATAVERSE_AUTHORITY_HOST": emu.base_url,
           "DATAVERSE_CA_BUNDLE": emu.ca_path, "LEADSYNC_WEBHOOK_SECRET": SECRET}
    runtime.configure(env)
    try:
        yield env
    finally:
        runtime.configure(None)


def post(body: bytes, **headers: str) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://localhost/api/sync-person", headers=headers, params={}, body=body)


def test_every_trigger_is_registered() -> None:
    assert set(registered()) == {"poll_marketo_changes", "poll_dataverse_changes", "apply_from_marketo",
                                 "apply_from_dynamics", "sync_person_http", "health_page", "health_json",
                                 "dataverse_events_http", "marketo_events_http", "drain_events"}


def test_the_webhook_refuses_a_request_without_the_secret(app_env: dict[str, str]) -> None:
    response = registered()["sync_person_http"](post(b'{"leadId": 1}'))
    assert response.status_code == 401 and response.mimetype == "application/json"
    assert json.loads(response.get_body())["status"] == "unauthorized"


@pytest.mark.parametrize("body", [b"", b"not json", b'{"leadId": "x"}', b'{"leadId": -1}', b"[1]"])
def test_a_bad_webhook_body_is_a_400_saying_why(app_env: dict[str, str], body: bytes) -> None:
    response = registered()["sync_person_http"](post(body, **{"x-leadsync-secret": SECRET}))
    assert response.status_code == 400 and response.mimetype == "application/json"
    answer = json.loads(response.get_body())
    assert answer["status"] == "bad_request" and answer["error"]


def test_a_webhook_for_a_person_marketo_does_not_have_is_answered(app_env: dict[str, str]) -> None:
    response = registered()["sync_person_http"](post(b'{"leadId": 987654}', **{"x-leadsync-secret": SECRET}))
    answer = json.loads(response.get_body())
    assert 400 <= response.status_code < 500 and answer["operationId"]


def test_a_bad_queue_message_is_poisoned_with_its_reason(app_env: dict[str, str]) -> None:
    svc = runtime.services()
    poison = svc.storage.queue(f"{FROM_MARKETO}-poison")
    poison.clear_messages()
    body = b'{"v": 99, "ids": [1]}'
    message = func.QueueMessage(id="msg-1", body=body, pop_receipt="r")
    try:
        registered()["apply_from_marketo"](message)
        assert [m.content for m in poison.receive_messages()] == [body.decode()]
        (entry,) = svc.activity.for_person(POISON_PERSON)
        assert entry.kind == activity.PARKED and entry.details["message_id"] == "msg-1"
        assert f"bad message on {FROM_MARKETO}" in entry.message
    finally:
        poison.clear_messages()


def test_the_health_json_names_a_bad_setting(app_env: dict[str, str]) -> None:
    runtime.configure({**app_env, "LEADSYNC_TABLE_PREFIX": "9lives"})
    request = func.HttpRequest("GET", "http://localhost/api/health.json", headers={}, params={}, body=b"")
    response = registered()["health_json"](request)
    assert response.status_code == 503
    assert json.loads(response.get_body()) == {
        "status": "unknown",
        "error": "setting LEADSYNC_TABLE_PREFIX: must be letters and digits, starting with a letter",
    }


def test_the_health_page_loads_without_dataverse(app_env: dict[str, str]) -> None:
    runtime.configure({**app_env, "DATAVERSE_URL": "https://dataverse.invalid"})
    request = func.HttpRequest("GET", "http://localhost/api/health", headers={}, params={}, body=b"")
    response = registered()["health_page"](request)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert b"<title>LeadSync health: failing</title>" in response.get_body()  # no poller has run yet


# -- the composition root ------------------------------------------------------------------
def test_the_health_page_and_the_sync_share_one_set_of_services(app_env: dict[str, str]) -> None:
    page = runtime.services(checked=False)
    assert runtime.services() is page is runtime.services(checked=False)


def test_every_build_in_a_process_draws_on_one_marketo_budget(app_env: dict[str, str]) -> None:
    settings = Settings.from_env(app_env)
    first, second = Services.from_settings(settings), Services.from_settings(settings)
    try:
        assert first.marketo.budget is second.marketo.budget is runtime.services(checked=False).marketo.budget
        assert first.dataverse.budget is second.dataverse.budget is not None
        # ... and that budget is the one every instance shares, kept in the deployment's storage.
        source = first.marketo.budget.source
        assert isinstance(source, TableAllowance) and source.resource == "marketo"
        assert source.limits.calls == 90 and source.limits.concurrency == 9
    finally:
        first.close()
        second.close()


def test_new_settings_close_the_services_built_on_the_old_ones(app_env: dict[str, str], name_prefix: str) -> None:
    old = runtime.services(checked=False)
    runtime.configure({**app_env, "LEADSYNC_TABLE_PREFIX": name_prefix + "b"})
    new = runtime.services(checked=False)
    assert new is not old and new.settings.table_prefix == name_prefix + "b"
    with pytest.raises(RuntimeError):  # its thread pools are shut down
        old.lookups.submit(print)
    with pytest.raises(RuntimeError):
        old.links.get_many([1, 2])

