"""Pytest fixtures for the Marketo emulator; register with `pytest_plugins = ["tests.marketo_fixtures"]`.

Fixtures:
    marketo_emulator   session  a running `MarketoEmulator` (every limit ON at Marketo's real
                                values, short-page mode ON: every 3rd activity page is empty
                                and another one short). Has `.base_url`, `.client_id`,
                                `.client_secret`.
    marketo            function resets the emulator (people, log, tokens, stats, faults,
                                clock, limits) and returns `MarketoEnv(emu, admin)`, where
                                `admin` is a `MarketoAdmin` bound to it.
    marketo_client     function a factory `make(**kw) -> MarketoClient` for the reset emulator,
                                with fast backoff (10-50 ms) and its own `CallBudget`
                                and token cache
                                (kw: budget=, token_cache=, max_attempts=, backoff_initial_s=, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import httpx
import pytest

from devhost.emulators.marketo import MarketoAdmin, MarketoEmulator
from shared.clients.marketo import MarketoClient, TokenCache
from shared.clients.ratelimit import CallBudget

SHORT_PAGES_EVERY = 3


class MarketoEnv(NamedTuple):
    emu: MarketoEmulator
    admin: MarketoAdmin


@pytest.fixture(scope="session")
def marketo_emulator() -> Iterator[MarketoEmulator]:
    with MarketoEmulator("leadsync-test", "leadsync-test-secret", short_pages_every=SHORT_PAGES_EVERY) as emu:
        yield emu


@pytest.fixture
def marketo(marketo_emulator: MarketoEmulator) -> Iterator[MarketoEnv]:
    admin = MarketoAdmin(marketo_emulator.base_url)
    admin.reset()
    try:
        yield MarketoEnv(marketo_emulator, admin)
    finally:
        admin.close()


@pytest.fixture
def marketo_client(marketo: MarketoEnv) -> Iterator[Callable[..., MarketoClient]]:
    made: list[httpx.Client] = []

    def make(**kw: Any) -> MarketoClient:
        http = httpx.Client(timeout=30)
        made.append(http)
        kw.setdefault("budget", CallBudget())
        kw.setdefault("token_cache", TokenCache())  # the emulator forgets tokens on reset
        kw.setdefault("backoff_initial_s", 0.01)
        kw.setdefault("backoff_max_s", 0.05)
        return MarketoClient(marketo.emu.base_url, marketo.emu.client_id, marketo.emu.client_secret, http=http, **kw)

    yield make
    for http in made:
        http.close()
