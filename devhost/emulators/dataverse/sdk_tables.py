"""Webhook registration tables: serviceendpoint, sdkmessageprocessingstep(+image), sdkmessage, sdkmessagefilter.

They are ordinary Web API tables of the emulator's store (create, retrieve, query with $filter/$select,
PATCH, DELETE), plus the write rules below. Sources: Microsoft's entity references for serviceendpoint,
sdkmessageprocessingstep and sdkmessageprocessingstepimage, "Register a web hook", "Define table images".
Error codes for the rules the docs state without a code are [unverified]: 0x80040203 (invalid argument)
with a message naming the rule.
"""

from __future__ import annotations

import ipaddress
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

from .metadata import Attr, EntityDef
from .store import ApiError, Extension, Store

CONTRACT_WEBHOOK = 8
AUTH_WEBHOOKKEY, AUTH_HTTPHEADER, AUTH_HTTPQUERYSTRING = 4, 5, 6
MESSAGES = ("Create", "Update", "Delete")
OBJECT_TYPES = ("lead", "contact")
_NS = uuid.UUID("7d1bd0a4-5f6e-4c8a-9a53-1c0de7e0b001")  # stable ids, as a real org's are


def message_id(name: str) -> str:
    return str(uuid.uuid5(_NS, f"sdkmessage:{name}"))


def filter_id(message: str, entity: str) -> str:
    return str(uuid.uuid5(_NS, f"sdkmessagefilter:{message}:{entity}"))


def _s(name: str, length: int, level: str = "None") -> Attr:
    return Attr(name, "String", required_level=level, max_length=length, format_name="Text")


def _ro(attr: Attr) -> Attr:
    attr.valid_for_create = attr.valid_for_update = False
    return attr


def _common(key: str) -> list[Attr]:
    return [Attr(key, "Uniqueidentifier", required_level="SystemRequired", valid_for_update=False),
            _ro(Attr("createdon", "DateTime")), _ro(Attr("modifiedon", "DateTime")),
            _ro(Attr("versionnumber", "BigInt"))]


def _table(logical: str, entity_set: str, key: str, attrs: list[Attr]) -> EntityDef:
    all_attrs = _common(key) + attrs
    return EntityDef(logical, entity_set, key, {a.logical_name: a for a in all_attrs}, change_tracking=False)


def tables() -> list[tuple[EntityDef, list[dict[str, Any]]]]:
    endpoint = _table("serviceendpoint", "serviceendpoints", "serviceendpointid", [
        _s("name", 256, "SystemRequired"), _s("description", 2000), _s("url", 2000),
        Attr("contract", "Picklist", required_level="SystemRequired",
             options={1: "OneWay", 2: "Queue", 3: "Rest", 4: "TwoWay", 5: "Topic", 6: "Queue (Persistent)",
                      7: "EventHub", 8: "Webhook", 9: "EventGrid", 10: "ManagedDataLake"}),
        Attr("authtype", "Picklist", options={1: "ACS", 2: "SASKey", 3: "SASToken", 4: "WebhookKey",
                                              5: "HttpHeader", 6: "HttpQueryString", 7: "ConnectionString"}),
        _s("authvalue", 2048),
        Attr("messageformat", "Picklist", options={1: "BinaryXML", 2: "Json", 3: "TextXML"}),
    ])
    step = _table("sdkmessageprocessingstep", "sdkmessageprocessingsteps", "sdkmessageprocessingstepid", [
        _s("name", 256, "SystemRequired"), _s("description", 256), _s("configuration", 1_073_741_823),
        Attr("stage", "Picklist", required_level="SystemRequired",
             options={10: "Pre-validation", 20: "Pre-operation", 30: "Main operation", 40: "Post-operation"}),
        Attr("mode", "Picklist", required_level="SystemRequired", options={0: "Synchronous", 1: "Asynchronous"}),
        Attr("rank", "Integer", required_level="SystemRequired"),
        Attr("supporteddeployment", "Picklist", options={0: "Server Only", 1: "Microsoft Dynamics 365 Client "
                                                         "for Outlook Only", 2: "Both"}),
        _s("filteringattributes", 100_000),
        Attr("asyncautodelete", "Boolean", options={0: "No", 1: "Yes"}),
        Attr("statecode", "State", options={0: "Enabled", 1: "Disabled"}),
        Attr("statuscode", "Status", options={1: "Enabled", 2: "Disabled"}),
        Attr("eventhandler", "Lookup", binds={"eventhandler_serviceendpoint": "serviceendpoints"}),
        Attr("sdkmessageid", "Lookup", required_level="SystemRequired", binds={"sdkmessageid": "sdkmessages"}),
        Attr("sdkmessagefilterid", "Lookup", binds={"sdkmessagefilterid": "sdkmessagefilters"}),
    ])
    image = _table("sdkmessageprocessingstepimage", "sdkmessageprocessingstepimages",
                   "sdkmessageprocessingstepimageid", [
        _s("name", 256, "SystemRequired"), _s("entityalias", 256, "SystemRequired"), _s("description", 256),
        Attr("imagetype", "Picklist", required_level="SystemRequired", options={0: "PreImage", 1: "PostImage",
                                                                                2: "Both"}),
        _s("messagepropertyname", 256, "SystemRequired"), _s("attributes", 100_000),
        Attr("sdkmessageprocessingstepid", "Lookup", required_level="SystemRequired",
             binds={"sdkmessageprocessingstepid": "sdkmessageprocessingsteps"}),
    ])
    message = _table("sdkmessage", "sdkmessages", "sdkmessageid", [_ro(_s("name", 256))])
    mfilter = _table("sdkmessagefilter", "sdkmessagefilters", "sdkmessagefilterid", [
        _ro(_s("primaryobjecttypecode", 256)), _ro(_s("secondaryobjecttypecode", 256)),
        _ro(Attr("sdkmessageid", "Lookup", binds={"sdkmessageid": "sdkmessages"})),
    ])
    messages = [{"sdkmessageid": message_id(m), "name": m} for m in MESSAGES]
    filters = [{"sdkmessagefilterid": filter_id(m, e), "primaryobjecttypecode": e, "secondaryobjecttypecode": "none",
                "_sdkmessageid_value": message_id(m)} for m in MESSAGES for e in OBJECT_TYPES]
    job = _table("asyncoperation", "asyncoperations", "asyncoperationid", [
        _ro(_s("name", 256)), _ro(_s("message", 1_073_741_823)), _ro(_s("friendlymessage", 1_073_741_823)),
        _ro(Attr("operationtype", "Picklist", options={1: "System Event"})),
        _ro(Attr("statecode", "State", options={0: "Ready", 1: "Suspended", 2: "Locked", 3: "Completed"})),
        _ro(Attr("statuscode", "Status", options={0: "Waiting For Resources", 10: "Waiting", 20: "In Progress",
                                                  21: "Pausing", 22: "Canceling", 30: "Succeeded", 31: "Failed",
                                                  32: "Canceled"})),
        _ro(Attr("owningextensionid", "Lookup", binds={"owningextensionid_sdkmessageprocessingstep":
                                                       "sdkmessageprocessingsteps"})),
    ])
    return [(endpoint, []), (step, []), (image, []), (message, messages), (mfilter, filters), (job, [])]


def _bad(message: str) -> ApiError:
    return ApiError(400, "0x80040203", message)


def parse_settings(authvalue: str) -> list[tuple[str, str]]:
    """`<settings><setting name="K" value="V" /></settings>` → [(K, V)]; ApiError if malformed."""
    try:
        root = ET.fromstring(authvalue)
    except ET.ParseError as exc:
        raise _bad(f"authvalue must be a <settings> XML list for this authtype: {exc}") from exc
    pairs = [(s.get("name"), s.get("value")) for s in root]
    if root.tag != "settings" or not pairs or any(c.tag != "setting" for c in root) or \
            any(not k or v is None for k, v in pairs):
        raise _bad('authvalue must be <settings><setting name="..." value="..." /></settings> with at least '
                   'one setting.')
    return [(str(k), str(v)) for k, v in pairs]


def _check_url(url: str | None) -> None:
    if not url:
        raise _bad("The url is required for a Webhook service endpoint.")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _bad(f"The url '{url}' is not an absolute http(s) URL.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port not in {80, 443} and not _loopback(parts.hostname):
        # The service accepts only ports 80 and 443; loopback is exempt so local receivers can listen anywhere.
        raise _bad(f"The url '{url}' uses port {port}: only ports 80 and 443 are supported.")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(store: Store, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    if new is None:
        assert old is not None
        if any(s["_eventhandler_value"] == old["serviceendpointid"]
               for s in store.rows["sdkmessageprocessingsteps"].values()):
            raise _bad("The service endpoint has registered steps: delete them first.")
        return
    if new["contract"] != CONTRACT_WEBHOOK:
        raise _bad(f"contract {new['contract']} is not supported by the emulator: only 8 (Webhook).")
    if new["authtype"] not in {AUTH_WEBHOOKKEY, AUTH_HTTPHEADER, AUTH_HTTPQUERYSTRING}:
        raise _bad("A Webhook's authtype must be 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString).")
    if not new["authvalue"]:
        raise _bad("authvalue is required for a Webhook service endpoint.")
    if new["authtype"] != AUTH_WEBHOOKKEY:
        parse_settings(new["authvalue"])
    if new["messageformat"] is None:
        new["messageformat"] = 2
    _check_url(new["url"])


def _columns(store: Store, entity: str, text: str | None, what: str) -> None:
    readable = store.entities[entity].attrs
    for col in (c.strip() for c in (text or "").split(",")):
        if col and col not in readable:
            raise _bad(f"{what}: '{col}' is not a column of {entity}.")


def step_target(store: Store, step: dict[str, Any]) -> tuple[str, str]:
    """(message name, entity logical name) of a step."""
    msg = store.rows["sdkmessages"].get(step["_sdkmessageid_value"] or "")
    flt = store.rows["sdkmessagefilters"].get(step["_sdkmessagefilterid_value"] or "")
    if msg is None or flt is None:
        raise _bad("sdkmessageid and sdkmessagefilterid must name an existing message and filter.")
    if flt["_sdkmessageid_value"] != msg["sdkmessageid"]:
        raise _bad("The sdkmessagefilter does not belong to the step's sdkmessage.")
    return msg["name"], flt["primaryobjecttypecode"]


def check_step(store: Store, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    if new is None:
        assert old is not None
        for image in [i for i in store.rows["sdkmessageprocessingstepimages"].values()
                      if i["_sdkmessageprocessingstepid_value"] == old["sdkmessageprocessingstepid"]]:
            store.delete("sdkmessageprocessingstepimages", image["sdkmessageprocessingstepimageid"])
        return
    message, entity = step_target(store, new)
    if new["_eventhandler_value"] is None or new["_eventhandler_value"] not in store.rows["serviceendpoints"]:
        raise _bad("eventhandler_serviceendpoint@odata.bind must name an existing service endpoint.")
    if new["stage"] == 30:
        raise _bad("Stage 30 (Main operation) is reserved for the platform.")
    if new["mode"] == 1 and new["stage"] != 40:
        raise _bad("Asynchronous steps must be registered on stage 40 (PostOperation).")
    if new["filteringattributes"]:
        if message != "Update":
            raise _bad("filteringattributes apply to the Update message only.")
        _columns(store, entity, new["filteringattributes"], "filteringattributes")
    if old is not None and new["statecode"] != old["statecode"] and new["statuscode"] == old["statuscode"]:
        new["statuscode"] = 2 if new["statecode"] == 1 else 1  # the state's default status
    if (new["statecode"], new["statuscode"]) not in {(0, 1), (1, 2)}:
        raise _bad("statecode/statuscode must be 0/1 (Enabled) or 1/2 (Disabled).")
    if new["supporteddeployment"] is None:
        new["supporteddeployment"] = 0
    if new["asyncautodelete"] is None:
        new["asyncautodelete"] = False


def check_image(store: Store, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    if new is None:
        return
    step = store.rows["sdkmessageprocessingsteps"].get(new["_sdkmessageprocessingstepid_value"] or "")
    if step is None:
        raise _bad("sdkmessageprocessingstepid@odata.bind must name an existing step.")
    message, entity = step_target(store, step)
    pre, post = new["imagetype"] in {0, 2}, new["imagetype"] in {1, 2}
    if new["messagepropertyname"] not in ({"Target", "Id"} if message == "Create" else {"Target"}):
        raise _bad(f"messagepropertyname must be 'Target' for {message}.")
    if pre and message == "Create":
        raise _bad("A Create step cannot have a pre-image.")
    if post and message == "Delete":
        raise _bad("A Delete step cannot have a post-image.")
    if post and step["stage"] != 40:
        raise _bad("Post-images are available only on stage 40 (PostOperation).")
    _columns(store, entity, new["attributes"], "attributes")


def _read_only(store: Store, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
    raise ApiError(403, "0x80040220", "sdkmessage, sdkmessagefilter and asyncoperation rows are system data "
                   "and read-only.")


def extension() -> Extension:
    return Extension(tables=tables(), checks={
        "serviceendpoints": check_endpoint, "sdkmessageprocessingsteps": check_step,
        "sdkmessageprocessingstepimages": check_image, "sdkmessages": _read_only, "sdkmessagefilters": _read_only,
        "asyncoperations": _read_only,
    })
