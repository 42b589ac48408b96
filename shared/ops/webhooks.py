"""`leadsync setup`: register the services' change events with the event receivers.

Dataverse: one `serviceendpoint` (contract 8, a webhook) and one `sdkmessageprocessingstep`
per message (Create, Update, Delete) and table (lead, contact), async PostOperation, made or
brought up to date through the Web API. Every row is found by its name first, so running
it again changes nothing but what differs (a new URL or key, a field added to the map).
Update steps carry `filteringattributes`: the mapped columns plus what the sync decides on
(the sync filter column, statecode for qualification), so an edit of another column never
calls.

Marketo: no API creates a webhook or sets a smart campaign's triggers and flow steps, so
`marketo_definition` returns the webhook and the trigger campaign to create by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.sax.saxutils import quoteattr

from shared.clients import odata
from shared.clients.dataverse import DataverseClient
from shared.errors import ConfigError
from shared.rules.fieldmap import FieldMap

WEBHOOK_CONTRACT = 8
AUTH_WEBHOOK_KEY = 4  # the value is sent as ?code=, which is what a function key is
AUTH_HTTP_HEADER = 5
MESSAGE_FORMAT_JSON = 2
STAGE_POST_OPERATION = 40
MODE_ASYNC = 1
MESSAGES = ("Create", "Update", "Delete")
ENTITIES = ("lead", "contact")
FUNCTION_KEY_HEADER = "x-functions-key"


@dataclass(frozen=True)
class Change:
    """One row `setup` looked at: what it is, its id, and whether it was created, updated or left."""

    table: str  # "serviceendpoint" | "sdkmessageprocessingstep"
    name: str
    id: str
    action: str  # "created" | "updated"


@dataclass
class Registration:
    endpoint: Change
    steps: list[Change] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": vars(self.endpoint), "steps": [vars(s) for s in self.steps]}


def endpoint_auth(url: str, key: str | None, secret: str | None) -> tuple[str, int, str]:
    """The endpoint's url (without `code`), authtype and authvalue for a function key and an
    optional shared secret; the key may also come as `?code=` in `url`."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError("--url", f"{url!r} is not an http(s) URL")
    query = parse_qsl(parts.query, keep_blank_values=True)
    key = key or next((v for k, v in query if k == "code"), None)
    bare = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "code"])))
    if not key:
        raise ConfigError("--key", "the function key of the events/dataverse function is needed (or ?code= in --url)")
    if secret:  # WebhookKey sends only ?code=: both values then go as headers (the host takes the key there too)
        settings = "".join(f"<setting name={quoteattr(n)} value={quoteattr(v)} />"
                           for n, v in ((FUNCTION_KEY_HEADER, key), ("x-leadsync-secret", secret)))
        return bare, AUTH_HTTP_HEADER, f"<settings>{settings}</settings>"
    return bare, AUTH_WEBHOOK_KEY, key


def filtering_attributes(fields: FieldMap, entity: str, sync_filter_field: str) -> str:
    """The columns whose change makes an Update step call: what the sync reads and decides on."""
    columns = [_logical(c) for c in fields.columns(entity)] + [sync_filter_field, "statecode"]
    return ",".join(sorted(dict.fromkeys(columns)))


def _logical(column: str) -> str:
    """A lookup's Web API name (`_x_value`) as the logical name Dataverse filters on (`x`)."""
    return column[1:-len("_value")] if column.startswith("_") and column.endswith("_value") else column


def register_dataverse(dv: DataverseClient, fields: FieldMap, url: str, *, key: str | None = None,
                       secret: str | None = None, sync_filter_field: str, name: str = "leadsync") -> Registration:
    """Create or update the webhook endpoint and its six steps; what was done to each."""
    bare, authtype, authvalue = endpoint_auth(url, key, secret)
    endpoint = {"name": name, "url": bare, "contract": WEBHOOK_CONTRACT, "authtype": authtype,
                "authvalue": authvalue, "messageformat": MESSAGE_FORMAT_JSON}
    registration = Registration(_put(dv, "serviceendpoints", "serviceendpointid", "serviceendpoint", endpoint))
    for message in MESSAGES:
        message_id = _one(dv, "sdkmessages", "sdkmessageid", odata.eq("name", message), message)
        for entity in ENTITIES:
            filter_id = _one(dv, "sdkmessagefilters", "sdkmessagefilterid",
                             odata.and_(odata.eq("primaryobjecttypecode", entity),
                                        odata.eq("_sdkmessageid_value", odata.Guid(message_id))),
                             f"{message} of {entity}")
            step: dict[str, Any] = {
                "name": f"{name}: {message} of {entity}", "stage": STAGE_POST_OPERATION, "mode": MODE_ASYNC,
                "rank": 1, "supporteddeployment": 0, "asyncautodelete": True,
                "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({registration.endpoint.id})",
                "sdkmessageid@odata.bind": f"/sdkmessages({message_id})",
                "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
            }
            if message == "Update":
                step["filteringattributes"] = filtering_attributes(fields, entity, sync_filter_field)
            registration.steps.append(_put(dv, "sdkmessageprocessingsteps", "sdkmessageprocessingstepid",
                                           "sdkmessageprocessingstep", step))
    return registration


def _put(dv: DataverseClient, entity_set: str, key: str, table: str, body: dict[str, Any]) -> Change:
    """Update the row named `body["name"]` to `body`, or create it."""
    found = dv.query(entity_set, odata.eq("name", body["name"]), [key])
    if found:
        dv.update(entity_set, found[0][key], body)
        return Change(table, body["name"], found[0][key].lower(), "updated")
    return Change(table, body["name"], dv.create(entity_set, body).lower(), "created")


def _one(dv: DataverseClient, entity_set: str, key: str, filter_: str, what: str) -> str:
    rows = dv.query(entity_set, filter_, [key], top=1)
    if not rows:
        raise ConfigError("DATAVERSE_URL", f"Dataverse has no {entity_set} row for {what}")
    return str(rows[0][key]).lower()


def marketo_definition(url: str, fields: FieldMap, *, key: str | None, secret: str | None) -> str:
    """The Marketo webhook and trigger campaign to create by hand, as text for an admin."""
    header_lines = [f"      {FUNCTION_KEY_HEADER}: {key or '<the function key of events/marketo>'}"]
    if secret:
        header_lines.append(f"      x-leadsync-secret: {secret}")
    attributes = ", ".join(fields.marketo_fields())
    return "\n".join([
        "Marketo has no API that creates a webhook or sets a smart campaign's triggers and flow:",
        "create these in Marketo Admin and Marketing Activities.",
        "",
        "1. Admin > Webhooks > New Webhook",
        "      Webhook Name:           LeadSync change event",
        f"      URL:                    {url}",
        "      Request Type:           POST",
        '      Template:               {"leadId": {{lead.Id}}}',
        "      Request Token Encoding: JSON",
        "      Response type:          JSON",
        "   Set Custom Header:",
        *header_lines,
        "",
        "2. Marketing Activities > a program > New Smart Campaign: \"LeadSync change events\"",
        "   Smart List (triggers):",
        f"      Data Value Changes, Attribute is any of: {attributes}",
        "   Flow:",
        "      Call Webhook: LeadSync change event",
        "   Schedule: Qualification Rules = each person can run through the flow every time; Activate.",
        "",
        "A new person is not an event: the \"Sync Person to Microsoft\" campaign (sync-person) creates",
        "its Dynamics lead; a change event for a person not linked yet is left to it.",
    ])
