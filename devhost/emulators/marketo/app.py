"""The emulator's HTTP surface: identity, REST (with Marketo's limits and injected faults), admin.

Everything runs on one asyncio loop, so handlers that do not await are atomic and need no
locks; slow responses (`latency_s`, the "slow" fault) are `asyncio.sleep`s that keep a
request "in flight", which is how the 10-call concurrency limit (615) becomes observable.

Order of checks for a /rest call (each step's source in brackets):
  URI > 8 KB → HTTP 414, body > 1 MB → HTTP 413        [Adobe error-codes.md, HTTP-level]
  injected faults (admin API)                           [emulator only]
  10 calls in flight → 615
  access token: 600 none / 601 invalid / 602 expired
    - the `access_token` query parameter is ignored, so a call carrying only that gets 600
      "Empty access token": Adobe removes query-string support, after which the
      parameter is simply not read; 601 would claim a token was sent and was wrong.
    - 600/601/602 are not counted against rate or quota  [Adobe error-codes.md, asterisked]
  100 calls / 20 s sliding → 606; 50,000 / day (US Central day) → 607
    606/607/615 responses themselves ARE counted: Adobe does not asterisk them.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from devhost.emulators.marketo.store import (
    CHANGE_DATA_VALUE,
    DEFAULT_READ_FIELDS,
    DELETE_LEAD,
    NEW_LEAD,
    Activity,
    Clock,
    RecordSkip,
    Store,
    decode_token,
    encode_token,
    parse_iso,
)
from devhost.emulators.marketo.triggers import Triggers, listen

CENTRAL = ZoneInfo("America/Chicago")
JSON_TYPE = "application/json;charset=UTF-8"
DAY = 86400.0


@dataclass
class Limits:
    """Every knob of the emulator. Defaults are Marketo's real values. None = off."""

    rate_calls: int | None = 100
    rate_window_s: float = 20.0
    concurrency: int | None = 10
    daily_quota: int | None = 50_000
    max_body_bytes: int | None = 1_048_576
    max_uri_bytes: int | None = 8192
    token_ttl_s: float = 3600.0
    retention_changes_s: float = 90 * DAY
    retention_deletes_s: float = 14 * DAY
    short_pages_every: int = 0  # k >= 2: every k-th activity page is empty, another one short
    latency_s: float = 0.0  # added to every REST call (makes concurrency observable)
    scan_limit: int = 2000  # raw log entries one activity page may read (real pages can be short)
    max_batch: int = 300

    def update(self, changes: dict[str, Any]) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown limits: {sorted(unknown)}")
        return replace(self, **changes)


class ApiError(Exception):
    """A call-level failure: HTTP 200, success false, errors[0] = this."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Fault:
    kind: str
    count: int | None = None
    rate: float | None = None
    delay_s: float = 0.0
    path_prefix: str = "/rest"


@dataclass
class Stats:
    calls_by_endpoint: Counter[str] = field(default_factory=Counter)
    responses_by_code: Counter[str] = field(default_factory=Counter)
    faults_injected: Counter[str] = field(default_factory=Counter)
    total_calls: int = 0
    counted_calls: int = 0
    identity_calls: int = 0


@dataclass
class Call:
    """One authenticated REST call as the handlers see it."""

    method: str
    path: str
    params: dict[str, str]
    body: bytes
    content_type: str
    user: str
    groups: dict[str, str]

    def param(self, name: str) -> str:
        return self.params.get(name, "").strip()

    def required(self, name: str) -> str:
        value = self.param(name)
        if not value:
            raise ApiError("701", f"{name} cannot be blank")
        return value

    def json(self) -> Any:
        if not self.content_type.lower().startswith("application/json"):
            raise ApiError("612", "Invalid Content Type")
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError("609", "Invalid JSON") from None


Handler = Callable[["Emulator", Call], dict[str, Any]]


class Emulator:
    """The whole emulated instance: configuration, store, tokens, counters, faults."""

    def __init__(self, client_id: str, client_secret: str, limits: Limits) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.default_limits = limits
        # Campaigns fire from whatever store is current (reset replaces it); display names for tokens.
        self.triggers = Triggers(lambda: {f.name: f.display for f in self.store.fields.values()})
        self.reset()

    def reset(self) -> None:
        self.limits = replace(self.default_limits)
        self.clock = Clock()
        self.store = Store(self.clock)
        self.triggers.reset()
        listen(self.store, self.triggers.fire)
        self.tokens: dict[str, float] = {}  # token -> expiry (emulator timestamp)
        self.current_token: str | None = None
        self.window: deque[float] = deque()
        self.in_flight = 0
        self.daily: dict[str, Counter[str]] = {}
        self.stats = Stats()
        self.faults: list[Fault] = []
        self.denied: set[str] = set()  # REST path prefixes the API user's role has no permission for (603)
        self.page_counter = 0
        self.request_counter = 0
        self.rng = random.Random(1234)

    @property
    def scope(self) -> str:
        return f"{self.client_id}@emulator.marketo.local"

    def request_id(self) -> str:
        self.request_counter += 1
        return f"{self.rng.randrange(0x10000):04x}#{self.request_counter:011x}"

    def envelope(self, result: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"requestId": self.request_id(), "success": True}
        if result is not None:
            out["result"] = result
        out.update(extra)
        return out

    def failure(self, code: str, message: str) -> dict[str, Any]:
        return {"requestId": self.request_id(), "success": False, "errors": [{"code": code, "message": message}]}

    def day(self) -> str:
        return self.clock.now().astimezone(CENTRAL).date().isoformat()

    def count(self, user: str) -> None:
        self.window.append(self.clock.timestamp())
        self.daily.setdefault(self.day(), Counter())[user] += 1
        self.stats.counted_calls += 1

    # ---- identity

    def issue_token(self) -> tuple[str, int]:
        now = self.clock.timestamp()
        token = self.current_token
        if token is None or self.tokens[token] <= now:
            token = f"{uuid.uuid4()}:int"
            self.tokens[token] = now + self.limits.token_ttl_s
            self.current_token = token
        return token, max(0, int(self.tokens[token] - now))

    def check_token(self, request: Request) -> str | None:
        """None if the token is good, else the 60x code. The query parameter is never read."""
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return "600"
        expiry = self.tokens.get(header[7:].strip())
        if expiry is None:
            return "601"
        if expiry <= self.clock.timestamp():
            return "602"
        return None

    # ---- faults

    def pick_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if not path.startswith(fault.path_prefix):
                continue
            if fault.count is not None:
                if fault.count <= 0:
                    continue
                fault.count -= 1
                return fault
            if fault.rate is not None and self.rng.random() < fault.rate:
                return fault
        return None


# --------------------------------------------------------------------------- REST handlers


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _field_names(emu: Emulator, text: str, default: tuple[str, ...] | None = None) -> list[str]:
    names = _split(text) if text else list(default or ())
    for name in names:
        if name not in emu.store.fields:
            raise ApiError("1006", f"Field '{name}' not found")
    return names


def paging_token(emu: Emulator, call: Call) -> dict[str, Any]:
    since = parse_iso(call.required("sinceDatetime"))
    if since is None:
        raise ApiError("704", "Invalid date format")
    return emu.envelope(nextPageToken=encode_token(since, emu.store.position_at(since)))


def _activity_page(
    emu: Emulator, call: Call, retention_s: float, wanted: Callable[[Activity], bool],
    render: Callable[[Activity], dict[str, Any]] = Activity.item,
) -> dict[str, Any]:
    decoded = decode_token(call.required("nextPageToken"))
    if decoded is None:
        raise ApiError("701", "Invalid nextPageToken")  # code unverified
    asof, position = decoded
    now = emu.clock.now()
    cutoff = now - timedelta(seconds=retention_s)
    if asof < cutoff:
        raise ApiError("701", "nextPageToken expired")  # code unverified: Adobe documents none
    try:
        batch = int(call.param("batchSize") or emu.limits.max_batch)
    except ValueError:
        raise ApiError("1003", "Invalid batchSize") from None
    batch = max(1, min(batch, emu.limits.max_batch))  # Marketo caps at 300 (unverified: error vs cap)
    emu.page_counter += 1
    k = emu.limits.short_pages_every
    if k >= 2 and emu.page_counter % k == 0:
        batch = 0
    elif k >= 2 and emu.page_counter % k == k // 2:
        batch = max(1, batch // 3)
    found, new_position = emu.store.scan(
        position, lambda a: a.date >= cutoff and wanted(a), batch, emu.limits.scan_limit
    )
    more = new_position < len(emu.store.log)
    if not more:
        new_asof = now
    elif new_position > position:
        new_asof = emu.store.log[new_position - 1].date
    else:
        new_asof = asof
    return emu.envelope(
        [render(a) for a in found],
        nextPageToken=encode_token(new_asof, new_position),
        moreResult=more,
        warnings=[],
    )


def _lead_ids(call: Call) -> set[int] | None:
    text = call.param("leadIds")
    if not text:
        return None
    try:
        ids = {int(v) for v in _split(text)}
    except ValueError:
        raise ApiError("1003", "Invalid leadIds") from None
    if len(ids) > 30:
        raise ApiError("1003", "leadIds may hold at most 30 ids")
    return ids


def lead_changes(emu: Emulator, call: Call) -> dict[str, Any]:
    names = set(_field_names(emu, call.required("fields")))
    ids = _lead_ids(call)

    def wanted(a: Activity) -> bool:
        if ids is not None and a.lead_id not in ids:
            return False
        return a.type_id == NEW_LEAD or (a.type_id == CHANGE_DATA_VALUE and a.fields[0]["name"] in names)

    return _activity_page(emu, call, emu.limits.retention_changes_s, wanted)


def deleted_leads(emu: Emulator, call: Call) -> dict[str, Any]:
    return _activity_page(emu, call, emu.limits.retention_deletes_s, lambda a: a.type_id == DELETE_LEAD)


def get_leads(emu: Emulator, call: Call) -> dict[str, Any]:
    store = emu.store
    filter_type = call.required("filterType")
    values = _split(call.required("filterValues"))
    if len(values) > emu.limits.max_batch:
        raise ApiError("1003", f"filterValues may hold at most {emu.limits.max_batch} values")
    if filter_type not in store.fields:
        raise ApiError("1006", f"Field '{filter_type}' not found")
    if not store.fields[filter_type].searchable:
        raise ApiError("1011", f"Field '{filter_type}' not supported")
    names = _field_names(emu, call.param("fields"), DEFAULT_READ_FIELDS)
    matches: list[int] = []
    seen: set[int] = set()
    for value in values:
        for lead_id in store.find(filter_type, value):
            if lead_id not in seen:
                seen.add(lead_id)
                matches.append(lead_id)
    if len(matches) > 1000:
        raise ApiError("1003", "Too many results match the filter")
    offset = 0
    if call.param("nextPageToken"):
        decoded = decode_token(call.param("nextPageToken"))
        if decoded is None:
            raise ApiError("701", "Invalid nextPageToken")
        offset = decoded[1]
    batch = max(1, min(int(call.param("batchSize") or emu.limits.max_batch), emu.limits.max_batch))
    page = matches[offset : offset + batch]
    items = []
    for lead_id in page:
        lead = store.leads[lead_id]
        item = {"id": lead_id}
        item.update({n: lead[n] for n in names if lead.get(n) is not None})
        items.append(item)
    extra: dict[str, Any] = {}
    if offset + batch < len(matches):
        extra = {"nextPageToken": encode_token(emu.clock.now(), offset + batch), "moreResult": True}
    return emu.envelope(items, **extra)


ACTIONS = {"createOnly", "updateOnly", "createOrUpdate", "createDuplicate"}


def sync_leads(emu: Emulator, call: Call) -> dict[str, Any]:
    body = call.json()
    if not isinstance(body, dict):
        raise ApiError("609", "Invalid JSON")
    action = body.get("action") or "createOrUpdate"
    if action not in ACTIONS:
        raise ApiError("1003", f"Invalid action '{action}'")
    lookup = body.get("lookupField") or "email"
    records = body.get("input")
    if not records or not isinstance(records, list):
        raise ApiError("701", "input cannot be blank")
    if len(records) > emu.limits.max_batch:
        raise ApiError("1003", f"input may hold at most {emu.limits.max_batch} records")
    results = []
    for record in records:
        try:
            if not isinstance(record, dict):
                raise RecordSkip("1003", "Invalid data")
            results.append(emu.store.sync(action, lookup, record, body.get("partitionName")))
        except RecordSkip as skip:
            results.append({"status": "skipped", "reasons": [{"code": skip.code, "message": skip.message}]})
    return emu.envelope(results)


def partitions(emu: Emulator, call: Call) -> dict[str, Any]:
    """Get Lead Partitions: `[{"id":1,"name":"Default","description":...}]`."""
    return emu.envelope([dict(p) for p in emu.store.partitions])


def describe(emu: Emulator, call: Call) -> dict[str, Any]:
    return emu.envelope([f.describe() for f in emu.store.fields.values()])


def create_type(emu: Emulator, call: Call) -> dict[str, Any]:
    body = call.json()
    if not isinstance(body, dict):
        raise ApiError("609", "Invalid JSON")
    try:
        atype = emu.store.create_type(body)
    except RecordSkip as exc:
        raise ApiError(exc.code, exc.message) from None
    return emu.envelope([atype.item(emu.clock.now())])


def _type(emu: Emulator, call: Call) -> Any:
    atype = emu.store.types.get(call.groups["api"])
    if atype is None:
        raise ApiError("1013", "Activity type not found")
    return atype


def approve_type(emu: Emulator, call: Call) -> dict[str, Any]:
    atype = _type(emu, call)
    if atype.status == "approved":
        raise ApiError("709", "Activity type has no draft to approve")
    atype.status = "approved"
    return emu.envelope([atype.item(emu.clock.now())])


def add_type_attributes(emu: Emulator, call: Call) -> dict[str, Any]:
    atype = _type(emu, call)
    body = call.json()
    attributes = body.get("attribute") or body.get("attributes") if isinstance(body, dict) else None
    if not attributes:
        raise ApiError("701", "attribute cannot be blank")
    for attr in attributes:
        if not attr.get("apiName") or not attr.get("name"):
            raise ApiError("1003", "attribute needs apiName and name")
        if attr["apiName"] not in {a["apiName"] for a in atype.attributes}:
            atype.attributes.append({"apiName": attr["apiName"], "name": attr["name"],
                                     "dataType": attr.get("dataType", "string")})
    if atype.status == "approved":
        atype.status = "draft"  # editing an approved type makes a new draft (Adobe activities.md)
    return emu.envelope([atype.item(emu.clock.now())])


def list_types(emu: Emulator, call: Call) -> dict[str, Any]:
    return emu.envelope([t.item(emu.clock.now()) for t in emu.store.types.values()])


def add_activities(emu: Emulator, call: Call) -> dict[str, Any]:
    body = call.json()
    items = body.get("input") if isinstance(body, dict) else None
    if not items or not isinstance(items, list):
        raise ApiError("701", "input cannot be blank")
    if len(items) > emu.limits.max_batch:
        raise ApiError("1003", f"input may hold at most {emu.limits.max_batch} records")
    results = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise RecordSkip("1003", "Invalid data")
            results.append(emu.store.add_custom(item))
        except RecordSkip as skip:
            results.append({"status": "skipped", "errors": [{"code": skip.code, "message": skip.message}]})
    return emu.envelope(results)


def usage(emu: Emulator, call: Call) -> dict[str, Any]:
    day = emu.day()
    users = emu.daily.get(day, Counter())
    return emu.envelope([{
        "date": day,
        "total": sum(users.values()),
        "users": [{"userId": u, "count": n} for u, n in sorted(users.items())],
    }])


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (m, re.compile(p + r"$"), h)
    for m, p, h in [
        ("GET", r"/rest/v1/activities/pagingtoken\.json", paging_token),
        ("GET", r"/rest/v1/activities/leadchanges\.json", lead_changes),
        ("GET", r"/rest/v1/activities/deletedleads\.json", deleted_leads),
        ("GET", r"/rest/v1/leads\.json", get_leads),
        ("POST", r"/rest/v1/leads\.json", sync_leads),
        ("GET", r"/rest/v1/leads/describe\.json", describe),
        ("GET", r"/rest/v1/leads/partitions\.json", partitions),
        ("POST", r"/rest/v1/activities/external/type\.json", create_type),
        ("POST", r"/rest/v1/activities/external/type/(?P<api>[^/]+)/approve\.json", approve_type),
        ("POST", r"/rest/v1/activities/external/type/(?P<api>[^/]+)/attributes/create\.json", add_type_attributes),
        ("GET", r"/rest/v1/activities/external/types\.json", list_types),
        ("POST", r"/rest/v1/activities/external\.json", add_activities),
        ("GET", r"/rest/v1/stats/usage\.json", usage),
    ]
]


# --------------------------------------------------------------------------- ASGI


def _joined(parsed: dict[str, list[str]]) -> dict[str, str]:
    """A repeated parameter (`fields=a&fields=b`) means the comma list `a,b`: Marketo binds these
    parameters as arrays (the swagger's collectionFormat multi), so both spellings name the same list."""
    return {k: ",".join(v) for k, v in parsed.items()}


class Drop(Exception):
    """Raised after the response has started: uvicorn closes the connection mid-response."""


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    return Response(json.dumps(body), status_code=status, media_type=JSON_TYPE, headers=headers or None)


class MarketoApp:
    """ASGI entry: /rest and /identity go through the limit pipeline, /_admin to Starlette."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        from devhost.emulators.marketo.admin_routes import admin_routes  # admin lives beside, not inside
        from devhost.emulators.marketo.merges import merge_routes
        from devhost.emulators.marketo.reads import read_routes

        self.routes = ROUTES + read_routes() + merge_routes()

        self.admin = Starlette(routes=[
            Route("/identity/oauth/token", self.identity, methods=["GET", "POST"]),
            *admin_routes(emu),
        ])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/rest"):
            await self.admin(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self.rest(request, send)
        if response is not None:
            await response(scope, receive, send)

    async def _fault(self, fault: Fault, send: Send) -> Response | None:
        emu = self.emu
        emu.stats.faults_injected[fault.kind] += 1
        if fault.kind == "drop":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")]})
            raise Drop("injected connection drop")
        if fault.kind in ("http500", "http502", "http503", "http504"):
            status = int(fault.kind[4:])
            emu.stats.responses_by_code[str(status)] += 1
            return Response("<html><body>injected failure</body></html>", status_code=status, media_type="text/html")
        if fault.kind in ("606", "607", "615", "602", "604", "608", "611", "713"):
            emu.stats.responses_by_code[fault.kind] += 1
            return _json(emu.failure(fault.kind, f"Injected {fault.kind}"))
        return None

    async def identity(self, request: Request) -> Response:
        emu = self.emu
        emu.stats.identity_calls += 1
        fault = emu.pick_fault(request.url.path)
        if fault is not None:
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
            elif fault.kind.startswith("http"):
                emu.stats.faults_injected[fault.kind] += 1
                return Response("injected failure", status_code=int(fault.kind[4:]))
        q = request.query_params
        if q.get("grant_type") != "client_credentials":
            return _json({"error": "invalid_request", "error_description": "grant_type must be client_credentials"},
                         400, **{"Cache-Control": "no-store"})
        if q.get("client_id") != emu.client_id or q.get("client_secret") != emu.client_secret:
            return _json({"error": "invalid_client", "error_description": "Bad client credentials"},
                         401, **{"Cache-Control": "no-store"})
        token, remaining = emu.issue_token()
        body = {"access_token": token, "token_type": "bearer", "expires_in": remaining, "scope": emu.scope}
        return _json(body, **{"Cache-Control": "no-store"})

    async def rest(self, request: Request, send: Send) -> Response | None:
        emu = self.emu
        limits = emu.limits
        stats = emu.stats
        path = request.url.path
        stats.total_calls += 1
        stats.calls_by_endpoint[f"{request.method} {path}"] += 1
        query = request.scope.get("query_string", b"")
        uri_len = len(request.scope.get("raw_path") or path.encode()) + (len(query) + 1 if query else 0)
        if limits.max_uri_bytes is not None and uri_len > limits.max_uri_bytes:
            stats.responses_by_code["414"] += 1
            return Response("Request-URI Too Long", status_code=414)
        declared = request.headers.get("content-length")
        if limits.max_body_bytes is not None and declared and int(declared) > limits.max_body_bytes:
            stats.responses_by_code["413"] += 1
            async for _ in request.stream():  # drain it, so the client reads our answer, not a reset
                pass
            return Response("Request Entity Too Large", status_code=413)
        delay = limits.latency_s
        fault = emu.pick_fault(path)
        if fault is not None:
            if fault.kind == "slow":
                emu.stats.faults_injected["slow"] += 1
                delay += fault.delay_s
            else:
                return await self._fault(fault, send)
        if limits.concurrency is not None and emu.in_flight >= limits.concurrency:
            emu.count(emu.scope)
            return self._answer(emu.failure("615", f"Concurrent access limit '{limits.concurrency}' reached"))
        emu.in_flight += 1
        try:
            if delay:
                await asyncio.sleep(delay)
            body = await request.body()
            if limits.max_body_bytes is not None and len(body) > limits.max_body_bytes:
                stats.responses_by_code["413"] += 1
                return Response("Request Entity Too Large", status_code=413)
            return self._answer(self._dispatch(request, body))
        finally:
            emu.in_flight -= 1

    def _answer(self, envelope: dict[str, Any]) -> Response:
        code = "200" if envelope.get("success") else envelope["errors"][0]["code"]
        self.emu.stats.responses_by_code[code] += 1
        return _json(envelope)

    def _dispatch(self, request: Request, body: bytes) -> dict[str, Any]:
        emu = self.emu
        limits = emu.limits
        bad_token = emu.check_token(request)
        if bad_token is not None:
            message = {"600": "Access token empty", "601": "Access token invalid", "602": "Access token expired"}
            return emu.failure(bad_token, message[bad_token])
        if any(request.url.path.startswith(prefix) for prefix in emu.denied):
            emu.count(emu.scope)
            return emu.failure("603", "Access denied")
        now = emu.clock.timestamp()
        while emu.window and emu.window[0] <= now - limits.rate_window_s:
            emu.window.popleft()
        if limits.rate_calls is not None and len(emu.window) >= limits.rate_calls:
            emu.count(emu.scope)
            return emu.failure("606", f"Max rate limit '{limits.rate_calls}' exceeded with in "
                                      f"'{limits.rate_window_s:g}' secs")
        if limits.daily_quota is not None and sum(emu.daily.get(emu.day(), Counter()).values()) >= limits.daily_quota:
            emu.count(emu.scope)
            return emu.failure("607", f"Daily quota '{limits.daily_quota}' reached")
        emu.count(emu.scope)
        method = request.method
        params = _joined(parse_qs(request.url.query, keep_blank_values=True))
        content_type = request.headers.get("content-type", "")
        form: dict[str, str] = {}
        if method == "POST" and content_type.lower().startswith("application/x-www-form-urlencoded"):
            form = _joined(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
        # `_method=GET` may ride in the query or in the form body (clients put it beside long filter lists).
        if method == "POST" and (params.get("_method") or form.get("_method", "")).upper() == "GET":
            method = "GET"
            params.update(form)
        call = Call(method, request.url.path, params, body, content_type, emu.scope, {})
        path_known = False
        for route_method, pattern, handler in self.routes:
            match = pattern.match(call.path)
            if match is None:
                continue
            path_known = True
            if route_method == method:
                call.groups = match.groupdict()
                try:
                    return handler(emu, call)
                except ApiError as exc:
                    return emu.failure(exc.code, exc.message)
        if path_known:
            return emu.failure("605", "HTTP Method not supported")
        return emu.failure("610", "Requested resource not found")

