"""Several OS processes, each with the app's own composition (`runtime.shared_budget`), spend
Marketo calls at once against the emulator with Marketo's real limits and one Azurite: the
shared budget keeps them together under 100 calls / 20 s and 10 in flight (no 606, no 615).
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from shared import runtime
from shared.clients.marketo import MarketoClient, TokenCache
from shared.config import Settings
from shared.state.budget import TableAllowance
from tests.marketo_fixtures import MarketoEnv

pytestmark = pytest.mark.e2e

PROCESSES = 3
THREADS = 8
CALLS = 50  # per process: 150 in all, more than one window's 90


def hammer(env: dict[str, str], results: Any) -> None:
    """One "instance": THREADS threads making CALLS Marketo calls through the shared budget."""
    settings = Settings.from_env(env)
    budget = runtime.shared_budget(settings, "marketo")
    client = MarketoClient(settings.marketo_base_url, settings.marketo_client_id,
                           settings.marketo_client_secret.reveal(), budget=budget, token_cache=TokenCache(),
                           max_attempts=1)
    errors: list[str] = []
    left = iter(range(CALLS))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            try:
                client.usage()
            except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts there are none
                errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    budget.close()
    source = budget.source
    assert isinstance(source, TableAllowance)
    results.put((client.calls, errors, source.storage_requests))


def test_processes_sharing_one_budget_cause_no_rate_or_concurrency_refusal(
        marketo: MarketoEnv, storage_connection_string: str, name_prefix: str) -> None:
    # Slow calls, so that 24 threads would hold far more than 10 calls in flight on their own.
    marketo.admin.set_limits(latency_s=0.2)
    env = {"AzureWebJobsStorage": storage_connection_string, "LEADSYNC_TABLE_PREFIX": name_prefix,
           "MARKETO_BASE_URL": marketo.emu.base_url, "MARKETO_CLIENT_ID": marketo.emu.client_id,
           "MARKETO_CLIENT_SECRET": marketo.emu.client_secret, "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
           "DATAVERSE_TENANT_ID": "t", "DATAVERSE_CLIENT_ID": "c", "DATAVERSE_CLIENT_SECRET": "s"}
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    procs = [spawn.Process(target=hammer, args=(env, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    assert [errors for _, errors, _ in outcomes] == [[]] * PROCESSES
    assert sum(calls for calls, _, _ in outcomes) == PROCESSES * CALLS
    stats = marketo.admin.stats()
    assert stats["responses_by_code"] == {"200": PROCESSES * CALLS}  # no 606, no 615
    # About one lease (a read and a write) per block of 10 calls, with some waiting in between.
    storage = sum(s for _, _, s in outcomes)
    assert storage / (PROCESSES * CALLS) < 1.0, storage


def take_one_call(env: dict[str, str]) -> None:
    """A short-lived process (a CLI command, say): one call's worth of budget, then exit."""
    budget = runtime.shared_budget(Settings.from_env(env), "marketo")
    with budget.slot():
        pass


def test_a_process_that_exits_gives_back_what_it_did_not_use(storage_connection_string: str,
                                                             name_prefix: str) -> None:
    env = {"AzureWebJobsStorage": storage_connection_string, "LEADSYNC_TABLE_PREFIX": name_prefix,
           "MARKETO_BASE_URL": "http://127.0.0.1:9", "MARKETO_CLIENT_ID": "c", "MARKETO_CLIENT_SECRET": "s",
           "DATAVERSE_URL": "https://contoso.crm.dynamics.com", "DATAVERSE_TENANT_ID": "t",
           "DATAVERSE_CLIENT_ID": "c", "DATAVERSE_CLIENT_SECRET": "s"}
    child = multiprocessing.get_context("spawn").Process(target=take_one_call, args=(env,))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    limits = runtime.shared_budget(Settings.from_env(env), "marketo").source
    assert isinstance(limits, TableAllowance)
    state, _ = limits.read()
    # The block of 10 shrank to the one call started, and the slot is free again.
    assert [g.calls for g in state.grants] == [1] and state.slots == {}
