"""`leadsync setup`: the Web API requests that register Dataverse's webhook, checked at the wire
(an httpx.MockTransport playing the Web API's serviceendpoint / sdkmessage* tables; tokens
from the Dataverse emulator), and the Marketo definition printed for an admin.

The Dataverse emulator on this branch has no serviceendpoint / sdkmessageprocessingstep
tables yet, so there is no end-to-end test against it.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from devhost.emulators.dataverse import DataverseEmulator
from shared.clients.dataverse import DataverseClient
from shared.errors import ConfigError
from shared.ops import webhooks
from shared.rules import fieldmap
from tests.dataverse_fixtures import make_client
from tests.test_handlers import app_env  # noqa: F401 - a fixture

_CLAUSE = re.compile(r"(\w+) eq (?:'((?:[^']|'')*)'|([0-9a-f-]{36}))")
SETS = {"serviceendpoints": "serviceendpointid", "sdkmessages": "sdkmessageid",
        "sdkmessagefilters": "sdkmessagefilterid", "sdkmessageprocessingsteps": "sdkmessageprocessingstepid"}
LEAD_COLUMNS = ("address1_city,address1_country,address1_line1,address1_postalcode,address1_stateorprovince,"
                "companyname,emailaddress1,firstname,jobtitle,lastname,leadsourcecode,mobilephone,statecode,"
                "telephone1")


class FakeWebApi:
    """The four tables `setup` touches, as Dataverse's Web API answers them."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in SETS}
        self.requests: list[tuple[str, str]] = []
        for message in ("Create", "Update", "Delete", "Assign"):
            message_id = self._add("sdkmessages", {"name": message})
            for entity in ("lead", "contact", "account"):
                self._add("sdkmessagefilters", {"primaryobjecttypecode": entity, "_sdkmessageid_value": message_id})

    def _add(self, entity_set: str, row: dict[str, Any]) -> str:
        row_id = str(uuid.uuid4())
        self.rows[entity_set][row_id] = {**row, SETS[entity_set]: row_id}
        return row_id

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(httpx.URL(self.api).path).strip("/")
        self.requests.append((request.method, path))
        assert request.headers["authorization"].startswith("Bearer ")
        match = re.fullmatch(r"(\w+)(?:\(([0-9a-f-]{36})\))?", path)
        assert match and match[1] in SETS, path
        entity_set, row_id = match[1], match[2]
        if request.method == "GET":
            clauses = _CLAUSE.findall(request.url.params.get("$filter", ""))
            rows = [r for r in self.rows[entity_set].values()
                    if all(str(r.get(col)) == (text.replace("''", "'") if text else guid)
                           for col, text, guid in clauses)]
            top = int(request.url.params.get("$top", "5000"))
            return httpx.Response(200, json={"value": rows[:top]})
        body = json.loads(request.content)
        if request.method == "POST" and row_id is None:
            new_id = self._add(entity_set, body)
            return httpx.Response(204, headers={"OData-EntityId": f"{self.api}/{entity_set}({new_id})"})
        if request.method == "PATCH" and row_id in self.rows[entity_set]:
            assert request.headers["if-match"] == "*"  # an update never creates
            self.rows[entity_set][row_id].update(body)
            return httpx.Response(204, headers={"OData-EntityId": f"{self.api}/{entity_set}({row_id})"})
        return httpx.Response(404, json={"error": {"code": "0x80040217", "message": "not found"}})

    def ids_of(self, entity_set: str, **match: str) -> list[str]:
        return [i for i, r in self.rows[entity_set].items() if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def web_api(dataverse_emulator: DataverseEmulator) -> tuple[FakeWebApi, DataverseClient]:
    client = make_client(dataverse_emulator)
    fake = FakeWebApi(client.api)
    client.http = httpx.Client(transport=httpx.MockTransport(fake))
    return fake, client


def register(client: DataverseClient, url: str, **kw: Any) -> webhooks.Registration:
    return webhooks.register_dataverse(client, fieldmap.load(None), url, sync_filter_field="statecode", **kw)


def test_setup_creates_the_endpoint_and_six_steps(web_api: tuple[FakeWebApi, DataverseClient]) -> None:
    fake, client = web_api
    result = register(client, "https://app.example/api/events/dataverse", key="fn-key")
    (endpoint,) = fake.rows["serviceendpoints"].values()
    assert {k: endpoint[k] for k in ("name", "url", "contract", "authtype", "authvalue", "messageformat")} == {
        "name": "leadsync", "url": "https://app.example/api/events/dataverse", "contract": 8, "authtype": 4,
        "authvalue": "fn-key", "messageformat": 2}
    steps = fake.rows["sdkmessageprocessingsteps"]
    assert len(steps) == 6 and {c.action for c in [result.endpoint, *result.steps]} == {"created"}
    for message in ("Create", "Update", "Delete"):
        (message_id,) = fake.ids_of("sdkmessages", name=message)
        for entity in ("lead", "contact"):
            (filter_id,) = fake.ids_of("sdkmessagefilters", primaryobjecttypecode=entity,
                                       _sdkmessageid_value=message_id)
            (step,) = [s for s in steps.values() if s["name"] == f"leadsync: {message} of {entity}"]
            assert (step["stage"], step["mode"], step["supporteddeployment"], step["asyncautodelete"]) == (
                40, 1, 0, True)
            endpoint_bind = f"/serviceendpoints({endpoint['serviceendpointid']})"
            assert step["eventhandler_serviceendpoint@odata.bind"] == endpoint_bind
            assert step["sdkmessageid@odata.bind"] == f"/sdkmessages({message_id})"
            assert step["sdkmessagefilterid@odata.bind"] == f"/sdkmessagefilters({filter_id})"
            assert ("filteringattributes" in step) == (message == "Update")
    (lead_update,) = [s for s in steps.values() if s["name"] == "leadsync: Update of lead"]
    assert lead_update["filteringattributes"] == LEAD_COLUMNS
    (contact_update,) = [s for s in steps.values() if s["name"] == "leadsync: Update of contact"]
    assert "companyname" not in contact_update["filteringattributes"].split(",")  # mapped for leads only


def test_setup_again_updates_in_place(web_api: tuple[FakeWebApi, DataverseClient]) -> None:
    fake, client = web_api
    register(client, "https://app.example/api/events/dataverse", key="fn-key")
    fake.requests.clear()
    result = register(client, "https://new.example/api/events/dataverse?code=new-key")
    assert len(fake.rows["serviceendpoints"]) == 1 and len(fake.rows["sdkmessageprocessingsteps"]) == 6
    assert not [r for r in fake.requests if r[0] == "POST"]
    assert {c.action for c in [result.endpoint, *result.steps]} == {"updated"}
    (endpoint,) = fake.rows["serviceendpoints"].values()
    assert (endpoint["url"], endpoint["authvalue"]) == ("https://new.example/api/events/dataverse", "new-key")


def test_with_a_shared_secret_both_go_as_headers(web_api: tuple[FakeWebApi, DataverseClient]) -> None:
    fake, client = web_api
    register(client, "https://app.example/api/events/dataverse", key="k&1", secret='s"2')
    (endpoint,) = fake.rows["serviceendpoints"].values()
    assert endpoint["authtype"] == 5
    assert endpoint["authvalue"] == ('<settings><setting name="x-functions-key" value="k&amp;1" />'
                                     '<setting name="x-leadsync-secret" value=\'s"2\' /></settings>')


@pytest.mark.parametrize("url,key,setting", [("https://app.example/api/events/dataverse", None, "--key"),
                                             ("ftp://app.example/x", "k", "--url")])
def test_setup_without_a_key_or_with_a_bad_url_is_refused(web_api: tuple[FakeWebApi, DataverseClient], url: str,
                                                          key: str | None, setting: str) -> None:
    fake, client = web_api
    with pytest.raises(ConfigError) as caught:
        register(client, url, key=key)
    assert caught.value.setting == setting and fake.requests == []


def test_the_marketo_definition_names_the_webhook_and_its_trigger() -> None:
    result = CliRunner().invoke(cli, ["setup", "marketo-webhook", "--url", "https://app.example/api/events/marketo",
                                      "--key", "fn-key"], env={"LEADSYNC_WEBHOOK_SECRET": ""})
    assert result.exit_code == 0, result.output
    assert "Marketo has no API" in result.output
    assert '{"leadId": {{lead.Id}}}' in result.output and "x-functions-key: fn-key" in result.output
    assert "Data Value Changes, Attribute is any of: email, firstName" in result.output
    assert "x-leadsync-secret" not in result.output


def test_the_cli_refuses_a_setup_without_a_key_in_one_line(app_env: dict[str, str]) -> None:  # noqa: F811
    result = CliRunner().invoke(cli, ["setup", "dataverse-webhook", "--url", "https://app.example/api/events/dataverse"],
                                env={**app_env, "LEADSYNC_WEBHOOK_SECRET": ""})
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "leadsync: setting --key: the function key of the events/dataverse function is needed (or ?code= in --url)"]
