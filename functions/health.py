"""HTTP triggers: the sync health page (`GET /api/health`) and its JSON (`/api/health.json`).

Why a thin adapter: the snapshot (`shared.ops.health`) and the page (`shared.ops.healthpage`) are
the core's; this module only maps them, and their failures, to HTTP responses.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.errors import ConfigError
from shared.ops.health import snapshot
from shared.ops.healthpage import render, render_unavailable
from shared.runtime import services

bp = func.Blueprint()
log = logging.getLogger("leadsync")
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_page(req: func.HttpRequest) -> func.HttpResponse:
    if req.params.get("format") == "json":
        return _health_json()
    try:
        snap = snapshot(services(checked=False))
    except (AzureError, ConfigError) as exc:
        log.error("health: %s", exc)
        reason = _unavailable(exc)
        return _page(503, lambda nonce: render_unavailable(reason, nonce=nonce))
    return _page(200, lambda nonce: render(snap, nonce=nonce))


@bp.route(route="health.json", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health_json(req: func.HttpRequest) -> func.HttpResponse:
    return _health_json()


def _health_json() -> func.HttpResponse:
    try:
        body = snapshot(services(checked=False)).to_dict()
        status = 200
    except (AzureError, ConfigError) as exc:
        log.error("health: %s", exc)
        body, status = {"status": "unknown", "error": _unavailable(exc)}, 503
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json", headers=_NO_STORE)


def _unavailable(exc: AzureError | ConfigError) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)  # names the setting, never its value
    return f"storage unreadable: {type(exc).__name__}"


def _page(status: int, html: Callable[[str], str]) -> func.HttpResponse:
    """`html(nonce)` with a Content-Security-Policy that allows only its own inline style."""
    nonce = secrets.token_urlsafe(16)
    headers = {**_NO_STORE,
               "Content-Security-Policy": f"default-src 'none'; style-src 'nonce-{nonce}'; "
                                          "style-src-attr 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
                                          "frame-ancestors 'none'"}
    return func.HttpResponse(html(nonce), status_code=status,
                             mimetype="text/html", charset="utf-8", headers=headers)
