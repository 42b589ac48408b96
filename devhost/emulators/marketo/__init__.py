"""Marketo REST emulator: `python -m devhost marketo` or `with MarketoEmulator() as emu:`.

Why Starlette on uvicorn: ASGI lets slow responses, concurrency limits (615) and dropped
connections be modelled with asyncio on one event loop — no thread per request, and
handlers that do not await are atomic, so the in-memory person database needs no locking.

Layout (each module's docstring cites its sources: spec sections of
Adobe's Marketo REST API documentation and Adobe's marketo-developer docs):
    store.py         people, activity log (12/13/37 + custom), activity types, paging tokens
    app.py           identity, /rest pipeline (414/413, faults, 615, 600-602, 606, 607), handlers
    admin_routes.py  /_admin: UI-like edits, bulk seeding, faults, clock, limits, stats, reset
    server.py        MarketoEmulator (uvicorn in a thread) and main(argv) for the CLI
    admin_client.py  MarketoAdmin, a typed httpx client for /_admin
    triggers.py      trigger campaigns ("Person is Created", "Data Value Changes") calling webhooks
"""

from __future__ import annotations

from devhost.emulators.marketo.admin_client import MarketoAdmin
from devhost.emulators.marketo.app import Limits
from devhost.emulators.marketo.server import MarketoEmulator, main

__all__ = ["Limits", "MarketoAdmin", "MarketoEmulator", "main"]
