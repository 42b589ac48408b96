"""Starlette app: Entra-like auth, the Web API gate (faults, auth, service protection, stats) and /_admin.

- Discovery + token endpoint: the service's documentation (msal needs authorization_endpoint and token_endpoint;
  token errors `{"error","error_description","error_codes",...}`).
- 401 with `WWW-Authenticate: Bearer authorization_uri=..., resource_id=...` and empty body.
- 429 + integer `Retry-After` + 0x80072322 / 0x80072321 / 0x80072326: (MS-docs:api-limits.md).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..outbound import fires
from .events import Origin
from .store import ApiError, Store
from .webapi import API_PREFIX, Req, WebApi, json_resp
from .webhooks import Webhooks, webhook_routes


@dataclass
class Limits:
    """Service-protection limits (the service's documented defaults); `None` turns one off."""

    requests_per_window: int | None = 6000
    window_s: float = 300.0
    concurrency: int | None = 52
    execution_ms: int | None = 1_200_000


@dataclass
class Fault:
    kind: str  # http500 | http503 | 429 | 401 | slow | drop
    count: int | None = None
    rate: float | None = None
    retry_after: int = 1
    delay_s: float = 0.0
    path_prefix: str = "/api/data/"


@dataclass
class Stats:
    requests_by_operation: Counter[str] = field(default_factory=Counter)
    responses_by_status: Counter[str] = field(default_factory=Counter)
    total_requests: int = 0
    token_requests: int = 0

    def as_json(self, batch_operations: int) -> dict[str, Any]:
        return {
            "requests_by_operation": dict(self.requests_by_operation),
            "responses_by_status": dict(self.responses_by_status),
            "batch_operations": batch_operations,
            "total_requests": self.total_requests,
            "token_requests": self.token_requests,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Emulator:
    """Shared state of one emulator instance; `build_app()` wires it into Starlette."""

    def __init__(self, base_url: str, tenant: str, client_id: str, client_secret: str | None,
                 token_lifetime_s: int = 3599, limits: Limits | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self.limits = limits or Limits()
        self.default_limits = Limits(**vars(self.limits))
        self.store = Store()
        self.webapi = WebApi(self.store, self.base_url)
        self.webhooks = Webhooks(self.store, Origin(f"{tenant}.crm.dynamics.com", tenant, self.webapi.org_id,
                                                    self.webapi.bu_id))
        self.lock = threading.Lock()
        self.tokens: dict[str, float] = {}  # access token → expiry (epoch s)
        self.signing_key = secrets.token_bytes(32)
        self.faults: list[Fault] = []
        self.stats = Stats()
        self.window: deque[float] = deque()
        self.exec_window: deque[tuple[float, float]] = deque()
        self.in_flight = 0
        self.clock: Callable[[], float] = time.time  # token issue and expiry; tests move it instead of sleeping

    # -- auth ---------------------------------------------------------------------------------
    def issue_token(self) -> str:
        now = int(self.clock())
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = _b64(json.dumps({
            "aud": self.base_url, "iss": f"{self.base_url}/{self.tenant}/v2.0", "tid": self.tenant,
            "appid": self.client_id, "oid": str(uuid.uuid4()), "iat": now, "nbf": now,
            "exp": now + self.token_lifetime_s, "jti": secrets.token_hex(8),
        }).encode())
        sig = _b64(hmac.new(self.signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        with self.lock:
            self.tokens[token] = now + self.token_lifetime_s
        return token

    def token_valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        with self.lock:
            exp = self.tokens.get(authorization[len("Bearer "):].strip())
        return exp is not None and exp > self.clock()

    def revoke_tokens(self) -> int:
        with self.lock:
            n = len(self.tokens)
            self.tokens.clear()
        return n

    def unauthorized(self) -> Response:
        return Response(status_code=401, headers={
            "WWW-Authenticate": f"Bearer authorization_uri={self.base_url}/{self.tenant}/oauth2/authorize, "
                                f"resource_id={self.base_url}/",
        })

    # -- faults and limits ------------------------------------------------------------------------
    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.path_prefix) and fires(fault):
                    return fault
            return None

    def throttle(self) -> Response | None:
        """Service protection: count limit over a sliding window, execution time, concurrency (immediate)."""
        now = time.monotonic()
        lim = self.limits
        with self.lock:
            while self.window and self.window[0] <= now - lim.window_s:
                self.window.popleft()
            while self.exec_window and self.exec_window[0][0] <= now - lim.window_s:
                self.exec_window.popleft()
            if lim.concurrency is not None and self.in_flight >= lim.concurrency:
                return self._too_many("0x80072326", f"Number of concurrent requests exceeded the limit of "
                                      f"{lim.concurrency}.", 1)
            if lim.requests_per_window is not None and len(self.window) >= lim.requests_per_window:
                wait = math.ceil(self.window[0] + lim.window_s - now)
                return self._too_many("0x80072322", f"Number of requests exceeded the limit of "
                                      f"{lim.requests_per_window} over time window of {int(lim.window_s)} seconds.",
                                      wait)
            used = sum(ms for _, ms in self.exec_window)
            if lim.execution_ms is not None and used > lim.execution_ms:
                wait = math.ceil(self.exec_window[0][0] + lim.window_s - now)
                return self._too_many("0x80072321", f"Combined execution time of incoming requests exceeded limit "
                                      f"of {lim.execution_ms:,} milliseconds over time window of "
                                      f"{int(lim.window_s)} seconds.", wait)
            self.window.append(now)
            self.in_flight += 1
            return None

    def _too_many(self, code: str, message: str, retry_after: int) -> Response:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=429,
                            headers={"Retry-After": str(max(1, retry_after)), "OData-Version": "4.0"})

    def reset(self) -> None:
        self.store.reset()
        with self.lock:
            self.faults.clear()
            self.stats = Stats()
            self.window.clear()
            self.exec_window.clear()
            self.webapi.batch_operations = 0
            self.webapi.denied.clear()
            self.limits = Limits(**vars(self.default_limits))
        self.webhooks.outbound.reset()


class Gate:
    """ASGI wrapper in front of the Web API: faults, then auth, then service protection; counts stats."""

    def __init__(self, app: Any, emu: Emulator) -> None:
        self.app = app
        self.emu = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_admin"):
            await self.app(scope, receive, send)
            return
        emu = self.emu
        is_api = path.startswith("/api/data/")
        status_seen: list[int] = []

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        if is_api:
            raw = scope.get("raw_path", path.encode()).decode("latin-1")
            with emu.lock:
                emu.stats.total_requests += 1
                emu.stats.requests_by_operation[emu.webapi.operation(scope["method"],
                                                                     raw[len(API_PREFIX):])] += 1
        try:
            await self._serve(scope, receive, counting_send, path, is_api)
        finally:
            if is_api and status_seen:
                with emu.lock:
                    emu.stats.responses_by_status[str(status_seen[0])] += 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str, is_api: bool) -> None:
        emu = self.emu
        fault = emu.take_fault(path)
        delay = 0.0
        if fault is not None:
            if fault.kind == "slow":
                delay = fault.delay_s  # slept while counted as in flight (concurrency limit)
            elif fault.kind == "drop":
                # Start a response promising more bytes than we send, then stop: the client sees the
                # connection close mid-message (a dropped connection).
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-length", b"1000"), (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"value": [', "more_body": True})
                raise ConnectionAbortedError("fault injection: dropped connection")
            else:
                await self._fault_response(fault)(scope, receive, send)
                return
        if not is_api:
            await asyncio.sleep(delay)
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not emu.token_valid(headers.get("authorization")):
            await emu.unauthorized()(scope, receive, send)
            return
        refusal = emu.throttle()
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = time.monotonic()
        try:
            await asyncio.sleep(delay)
            await self.app(scope, receive, send)
        finally:
            with emu.lock:
                emu.in_flight -= 1
                emu.exec_window.append((time.monotonic(), (time.monotonic() - started) * 1000))

    def _fault_response(self, fault: Fault) -> Response:
        if fault.kind == "401":
            return self.emu.unauthorized()
        if fault.kind == "429":
            return self.emu._too_many("0x80072322", "Number of requests exceeded the limit of 6000 over time "
                                      "window of 300 seconds.", fault.retry_after)
        status = 503 if fault.kind == "http503" else 500
        return JSONResponse({"error": {"code": "0x80040216" if status == 500 else "",
                                       "message": "An unexpected error occurred (fault injection)."}},
                            status_code=status, headers={"Retry-After": str(fault.retry_after)}
                            if status == 503 else None)


def build_app(emu: Emulator) -> Any:
    """The ASGI application (Starlette routes wrapped in the Web API gate)."""

    def entra_error(status: int, error: str, code: int, description: str) -> JSONResponse:
        return JSONResponse({
            "error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        }, status_code=status)

    def tenant_ok(request: Request) -> bool:
        return str(request.path_params["tenant"]).lower() == emu.tenant.lower()

    async def openid(request: Request) -> Response:
        if not tenant_ok(request):
            return entra_error(400, "invalid_tenant", 90002, f"Tenant '{request.path_params['tenant']}' not found.")
        t = f"{emu.base_url}/{emu.tenant}"
        return JSONResponse({
            "token_endpoint": f"{t}/oauth2/v2.0/token",
            "authorization_endpoint": f"{t}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{t}/oauth2/v2.0/devicecode",
            "issuer": f"{t}/v2.0",
            "jwks_uri": f"{t}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": None,
        })

    async def token(request: Request) -> Response:
        with emu.lock:
            emu.stats.token_requests += 1
        if not tenant_ok(request):
            return entra_error(400, "invalid_tenant", 90002, f"Tenant '{request.path_params['tenant']}' not found.")
        form = dict(parse_qsl((await request.body()).decode()))
        if form.get("grant_type") != "client_credentials":
            return entra_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != emu.client_id:
            return entra_error(400, "unauthorized_client", 700016,
                               f"Application with identifier '{form.get('client_id')}' was not found in the "
                               f"directory '{emu.tenant}'.")
        if "client_assertion" in form:
            # Certificate credential: claims checked, signature not verified [emulator simplification].
            try:
                claims = json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[1] + "=="))
            except (ValueError, IndexError):
                claims = {}
            if claims.get("iss") != emu.client_id:
                return entra_error(401, "invalid_client", 700027, "Client assertion contains an invalid signature.")
        elif emu.client_secret is None or form.get("client_secret") != emu.client_secret:
            return entra_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                               "being sent in the request is the client secret value, not the client secret ID.")
        if form.get("scope", "").split() != [f"{emu.base_url}/.default"]:
            return entra_error(400, "invalid_scope", 1002012, f"The provided value for scope "
                               f"{form.get('scope')} is not valid. Client credential flows must have a scope value "
                               "with /.default suffixed to the resource identifier (application ID URI).")
        return JSONResponse({"token_type": "Bearer", "expires_in": emu.token_lifetime_s,
                             "ext_expires_in": emu.token_lifetime_s, "access_token": emu.issue_token()})

    async def api(request: Request) -> Response:
        raw = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        req = Req(request.method, raw[len(API_PREFIX):],
                  parse_qsl(request.url.query, keep_blank_values=True),
                  {k.lower(): v for k, v in request.headers.items()}, await request.body())
        resp = emu.webapi.dispatch(req)
        return Response(resp.body, status_code=resp.status, headers=resp.headers)

    from .admin import admin_routes

    routes = [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", openid, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route(API_PREFIX + "{rest:path}", api, methods=["GET", "POST", "PATCH", "DELETE", "PUT"]),
        *webhook_routes(emu.webhooks),
        *admin_routes(emu),
    ]
    return Gate(Starlette(routes=routes), emu)


__all__ = ["ApiError", "Emulator", "Fault", "Limits", "build_app", "json_resp"]
