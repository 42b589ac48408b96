"""Trigger campaigns that run a Call Webhook step: "Person is Created" and "Data Value Changes".

Sources: Adobe's Marketo webhook docs (URL, GET/POST, payload template with tokens, request token
encoding None/JSON/Form-Url, custom headers as the only auth, 30 s timeout, no retry, one call per
person) and a community note (at most 20 outstanding calls per instance; extras wait). Changes
through the REST API fire campaigns exactly like UI (admin) changes.

Emulator choices, [unverified] in Marketo's docs:
- A campaign runs every time its trigger fires ("each person can run through the flow every time"),
  once per change operation: an update that changes several listed fields makes one call, and the
  `{{trigger.*}}` tokens describe the first listed field that changed.
- Lead tokens are found by display name (`{{lead.Email Address}}`) or REST name (`{{lead.email}}`),
  case-insensitively. With JSON encoding, strings are quoted and escaped, numbers and booleans bare,
  an empty value or an unknown token is `null`; with None encoding the raw text (empty for none);
  with Form-Url encoding URL-encoded text. URL and header tokens are inserted as raw text.
- POST sends `Content-Type: application/json` for JSON encoding and
  `application/x-www-form-urlencoded` otherwise, unless a custom header sets it.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, urlsplit

from devhost.emulators.outbound import Call, Outbound

PERSON_CREATED = "Person is Created"
DATA_VALUE_CHANGES = "Data Value Changes"
ENCODINGS = ("json", "none", "form")
_TOKEN = re.compile(r"\{\{\s*(lead|trigger|campaign|system)\.([^}]*?)\s*\}\}", re.IGNORECASE)

# (kind, lead snapshot, changed fields as (name, old, new)); kind is PERSON_CREATED or DATA_VALUE_CHANGES
Listener = Callable[[str, dict[str, Any], list[tuple[str, Any, Any]]], None]
_LISTENERS: weakref.WeakKeyDictionary[Any, Listener] = weakref.WeakKeyDictionary()


def listen(store: Any, listener: Listener) -> None:
    """Kept outside the store's attributes, which snapshots pickle."""
    _LISTENERS[store] = listener


def emit(store: Any, kind: str, lead: dict[str, Any], changes: list[tuple[str, Any, Any]]) -> None:
    listener = _LISTENERS.get(store)
    if listener is not None:
        listener(kind, dict(lead), changes)


class CampaignError(ValueError):
    pass


@dataclass
class Webhook:
    url: str
    method: str = "POST"
    template: str = ""
    encoding: str = "json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Campaign:
    id: int
    name: str
    trigger: str
    fields: list[str]  # REST names, for Data Value Changes
    webhook: Webhook
    active: bool = True


class Triggers:
    def __init__(self, display_names: Callable[[], dict[str, str]]) -> None:
        self.display_names = display_names  # REST name → display name of every field
        self.outbound = Outbound("marketo", concurrency=20, timeout_s=30.0,
                                 allowed_faults=frozenset({"drop", "delay"}))
        self.lock = threading.Lock()
        self.campaigns: dict[int, Campaign] = {}
        self.next_id = 5001

    def reset(self) -> None:
        with self.lock:
            self.campaigns.clear()
        self.outbound.reset()

    # -- configuration -----------------------------------------------------------------------
    def add(self, doc: dict[str, Any]) -> Campaign:
        """{"name", "trigger": "Person is Created"|"Data Value Changes", "fields": [...],
        "webhook": {"url", "method", "template", "encoding", "headers"}}; CampaignError on bad input."""
        if not isinstance(doc, dict):
            raise CampaignError("body must be a JSON object")
        name, trigger, hook = doc.get("name"), doc.get("trigger"), doc.get("webhook")
        if not isinstance(name, str) or not name.strip():
            raise CampaignError("name is required")
        if trigger not in (PERSON_CREATED, DATA_VALUE_CHANGES):
            raise CampaignError(f"trigger must be '{PERSON_CREATED}' or '{DATA_VALUE_CHANGES}'")
        fields = [self._field(f) for f in doc.get("fields") or []]
        if trigger == DATA_VALUE_CHANGES and not fields:
            raise CampaignError("Data Value Changes needs at least one field")
        if trigger == PERSON_CREATED and fields:
            raise CampaignError("Person is Created takes no fields")
        if not isinstance(hook, dict):
            raise CampaignError("webhook is required")
        unknown = set(hook) - {"url", "method", "template", "encoding", "headers"}
        if unknown:
            raise CampaignError(f"unknown webhook settings {sorted(unknown)}")
        webhook = Webhook(url=str(hook.get("url") or ""), method=str(hook.get("method") or "POST").upper(),
                          template=str(hook.get("template") or ""), encoding=str(hook.get("encoding") or "json"),
                          headers=dict(hook.get("headers") or {}))
        parts = urlsplit(webhook.url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise CampaignError("webhook url must be an absolute http(s) URL")
        if webhook.method not in {"GET", "POST"}:
            raise CampaignError("webhook method must be GET or POST")
        if webhook.encoding not in ENCODINGS:
            raise CampaignError(f"webhook encoding must be one of {list(ENCODINGS)}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in webhook.headers.items()):
            raise CampaignError("webhook headers must map names to strings")
        with self.lock:
            campaign = Campaign(self.next_id, name, trigger, fields, webhook, bool(doc.get("active", True)))
            self.next_id += 1
            self.campaigns[campaign.id] = campaign
        return campaign

    def _field(self, name: Any) -> str:
        for rest, display in self.display_names().items():
            if isinstance(name, str) and name.casefold() in {rest.casefold(), display.casefold()}:
                return rest
        raise CampaignError(f"unknown field {name!r}")

    def remove(self, campaign_id: int) -> bool:
        with self.lock:
            return self.campaigns.pop(campaign_id, None) is not None

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [asdict(c) for c in self.campaigns.values()]

    # -- firing ------------------------------------------------------------------------------
    def fire(self, kind: str, lead: dict[str, Any], changes: list[tuple[str, Any, Any]]) -> None:
        with self.lock:
            campaigns = [c for c in self.campaigns.values() if c.active and c.trigger == kind]
        for campaign in campaigns:
            hit: tuple[str, Any, Any] | None = None
            if kind == DATA_VALUE_CHANGES:
                hit = next((c for c in changes if c[0] in campaign.fields), None)
                if hit is None:
                    continue
            self.outbound.submit(self._call(campaign, lead, hit))

    def _call(self, campaign: Campaign, lead: dict[str, Any], hit: tuple[str, Any, Any] | None) -> Call:
        hook = campaign.webhook
        scope = self._scope(campaign, lead, hit)
        headers = {k: render(v, scope, "none") for k, v in hook.headers.items()}
        body = b""
        if hook.method == "POST":
            body = render(hook.template, scope, hook.encoding).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json" if hook.encoding == "json" else \
                    "application/x-www-form-urlencoded"
        return Call(hook.method, render(hook.url, scope, "none"), headers, body, label=campaign.trigger)

    def _scope(self, campaign: Campaign, lead: dict[str, Any],
               hit: tuple[str, Any, Any] | None) -> dict[str, dict[str, Any]]:
        names = self.display_names()
        fields: dict[str, Any] = {}
        for rest, value in lead.items():
            fields[rest.casefold()] = value
            if rest in names:
                fields[names[rest].casefold()] = value
        trigger: dict[str, Any] = {"trigger name": campaign.trigger}
        if hit is not None:
            trigger.update({"attribute": names.get(hit[0], hit[0]), "old value": hit[1], "new value": hit[2]})
        now = datetime.now(UTC)
        return {"lead": fields, "trigger": trigger,
                "campaign": {"id": campaign.id, "name": campaign.name},
                "system": {"datetime": now.strftime("%Y-%m-%d %H:%M:%S"), "date": now.strftime("%Y-%m-%d")}}


def render(template: str, scope: dict[str, dict[str, Any]], encoding: str) -> str:
    """Replace every `{{kind.Name}}` token with its value, encoded as the webhook's setting says."""

    def one(m: re.Match[str]) -> str:
        value = scope.get(m.group(1).lower(), {}).get(m.group(2).strip().casefold())
        if encoding == "json":
            return json.dumps(value)
        text = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        return quote_plus(text) if encoding == "form" else text

    return _TOKEN.sub(one, template)
