"""HTTP triggers, as described on the Azure Functions "HTTP trigger" reference page,
served by uvicorn (in a thread of its own) with a small ASGI app built on starlette.

What a caller can rely on:

- Routes live under `/<routePrefix>/` (host.json `extensions.http.routePrefix`, default
  "api"); a function without a route is served at its function name. Route templates
  support `{name}`, `{name:int|alpha|bool|guid|...}`, optional `{name?}` and catch-all
  `{*name}` segments; matching is case-insensitive; literal routes win over templates.
- Unknown path: 404. Known path, method not in the function's `methods`: 405 with Allow.
- `AuthLevel.FUNCTION` and `AuthLevel.ADMIN` need the function key in the
  `x-functions-key` header or the `code` query parameter (compared in constant time),
  else 401; `AuthLevel.ANONYMOUS` needs nothing. (The real host also has per-function
  and master keys; devhost has one key for both levels.)
- The function gets a real `func.HttpRequest` (method, full URL, headers, query params,
  route params, body bytes) and may return a `func.HttpResponse` or a str (200,
  text/plain). The response's Content-Type is its header if set, else its mimetype with
  `; charset=` for text/* types, as the Python worker does.
- A function that raises, or returns anything else, gives 500 with a small JSON body
  naming the invocation id; the traceback goes to the log, never to the client.
- `async def` functions run on the server's event loop, plain ones on its thread pool.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

logger = logging.getLogger("devhost.http")

KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
_KEYED_LEVELS = ("function", "admin")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?:true|false)",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
}
_PARAM = re.compile(r"\{(\*{1,2})?([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+)[^}?]*)?(\?)?\}")


def printable(text: str) -> str:
    """`text` safe for one log line: control characters (NUL, newline, ESC...) and lone
    surrogates escaped as Python does in a repr, since request paths are the client's bytes."""
    return text if text.isprintable() else repr(text)[1:-1]


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP-triggered function as the server routes it."""

    name: str
    route: str
    methods: frozenset[str] | None  # None: every method
    auth_level: str  # "anonymous", "function" or "admin"
    arg_name: str
    user_function: Callable[..., Any]


@dataclass(frozen=True)
class _Route:
    function: HttpFunction
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    specificity: tuple[int, int]


def compile_route(template: str, prefix: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """Compile an ASP.NET-style route template into a regex over the URL path.

    Returns the pattern and the route parameter names in group order (groups are g0, g1…).
    """
    names: list[str] = []
    parts = [("/" + prefix) if prefix else ""]
    for segment in [s for s in template.strip("/").split("/") if s]:
        whole = _PARAM.fullmatch(segment)
        if whole and (whole.group(1) or whole.group(4)):
            group = f"g{len(names)}"
            names.append(whole.group(2))
            value = ".*" if whole.group(1) else _CONSTRAINTS.get((whole.group(3) or "").lower(), "[^/]+")
            parts.append(f"(?:/(?P<{group}>{value}))?")
            continue
        out, last = ["/"], 0
        for m in _PARAM.finditer(segment):
            out.append(re.escape(segment[last:m.start()]))
            group = f"g{len(names)}"
            names.append(m.group(2))
            out.append(f"(?P<{group}>{_CONSTRAINTS.get((m.group(3) or '').lower(), '[^/]+?')})")
            last = m.end()
        out.append(re.escape(segment[last:]))
        parts.append("".join(out))
    return re.compile("^" + "".join(parts) + "/?$", re.IGNORECASE), tuple(names)


_ADMIN_RUN = re.compile(r"^/admin/functions/([A-Za-z0-9_]+)$")


class HttpServer:
    """Serves the HTTP functions on 127.0.0.1:`port` (0: a free port) until stop()."""

    def __init__(
        self,
        functions: Iterable[HttpFunction],
        *,
        route_prefix: str,
        function_key: str,
        port: int,
        log: Callable[[str], None],
        startup_timeout: float = 10.0,
        run_function: Callable[[str], bool] | None = None,
    ) -> None:
        self._run_function = run_function
        routes = []
        for fn in functions:
            pattern, names = compile_route(fn.route, route_prefix)
            literal = len(_PARAM.sub("", fn.route))
            routes.append(_Route(fn, pattern, names, (len(names), -literal)))
        self._routes = sorted(routes, key=lambda r: r.specificity)
        self._key = function_key.encode("utf-8")
        self._log = log
        self._port = port
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> None:
        # IPPROTO_TCP explicitly: with proto 0 asyncio does not set TCP_NODELAY on accepted
        # connections, and small responses then wait ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"HTTP server did not start on {self.url}")
            time.sleep(0.01)
        self._socket = sock

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests and wait (bounded) for those in progress."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(2)
        self._socket.close()
        self._server = None

    # -- ASGI ------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        started = time.perf_counter()
        name, response = await self._respond(request)
        self._log(f"http  {name}  {printable(request.method)} {printable(request.url.path)}  {response.status_code}  "
                  f"{(time.perf_counter() - started) * 1000:.0f} ms")
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> tuple[str, Response]:
        path = request.url.path
        admin = _ADMIN_RUN.match(path)
        if admin and self._run_function is not None:
            # The real host's "run a non-HTTP function" endpoint (master key there; our one key here).
            if request.method.upper() != "POST":
                return "-", Response(status_code=405, headers={"Allow": "POST"})
            if not self._authorized(request):
                return "-", Response(status_code=401)
            started = await asyncio.to_thread(self._run_function, admin.group(1))
            return admin.group(1), Response(status_code=202 if started else 404)
        allowed: set[str] = set()
        for route in self._routes:
            m = route.pattern.match(path)
            if not m:
                continue
            fn = route.function
            if fn.methods is not None and request.method.upper() not in fn.methods:
                allowed |= fn.methods
                continue
            if fn.auth_level in _KEYED_LEVELS and not self._authorized(request):
                return fn.name, Response(status_code=401)
            params = {n: v for n, v in zip(route.names, m.groups(), strict=True) if v is not None}
            return fn.name, await self._invoke(fn, request, params)
        if allowed:
            return "-", Response(status_code=405, headers={"Allow": ", ".join(sorted(allowed))})
        return "-", Response(status_code=404)

    def _authorized(self, request: Request) -> bool:
        given = request.headers.get(KEY_HEADER) or request.query_params.get(KEY_PARAM) or ""
        return hmac.compare_digest(given.encode("utf-8"), self._key)

    async def _invoke(self, fn: HttpFunction, request: Request, route_params: dict[str, str]) -> Response:
        body = await request.body()
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=dict(request.headers),
            params=dict(request.query_params),
            route_params=route_params,
            body=body,
        )
        invocation_id = str(uuid.uuid4())
        try:
            if inspect.iscoroutinefunction(fn.user_function):
                result = await fn.user_function(**{fn.arg_name: http_request})
            else:
                result = await run_in_threadpool(fn.user_function, **{fn.arg_name: http_request})
                if inspect.isawaitable(result):
                    result = await result
            return _to_response(result)
        except Exception as exc:  # the host boundary: 500, details only in the log
            logger.error("function %s (invocation %s) failed", fn.name, invocation_id, exc_info=exc)
            payload = {"error": "Internal Server Error", "function": fn.name, "invocationId": invocation_id}
            return Response(json.dumps(payload), status_code=500, media_type="application/json")


def _to_response(result: Any) -> Response:
    if isinstance(result, str):
        return Response(result.encode("utf-8"), status_code=200, media_type="text/plain; charset=utf-8")
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"an HTTP function must return func.HttpResponse or str, got {type(result).__name__}")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for key, value in result.headers.items():
        lower = key.lower()
        if lower in ("content-length", "transfer-encoding"):
            continue  # the server frames the body itself
        if lower == "set-cookie":
            cookies.extend(result.headers.get_all(key) if hasattr(result.headers, "get_all") else [value])
            continue
        headers[key] = value
    if not any(k.lower() == "content-type" for k in headers):
        mimetype = result.mimetype or "text/plain"
        headers["content-type"] = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
    response = Response(result.get_body(), status_code=result.status_code, headers=headers)
    for cookie in cookies:
        response.raw_headers.append((b"set-cookie", cookie.encode("latin-1")))
    return response
