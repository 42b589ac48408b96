"""Drive a running Stack the way a person (or a test) would: edit each side, run the
pollers on demand, wait for the work queues to drain, read outcomes.

Shared by the end-to-end tests, the demo and the benchmarks so they all observe the
system through the same eyes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from devhost.emulators.dataverse import DataverseAdmin
from devhost.emulators.marketo import MarketoAdmin
from devhost.stack import Stack, StackConfig
from shared.runtime import services
from shared.state.activity import Entry
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

T = TypeVar("T")
POLL_MARKETO = "poll_marketo_changes"
POLL_DATAVERSE = "poll_dataverse_changes"


class Harness:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.marketo = MarketoAdmin(stack.marketo.base_url)
        self.dataverse = DataverseAdmin(stack.dataverse.base_url, stack.dataverse.ca_path)

    # -- driving the app ---------------------------------------------------------------
    def poll(self, *, marketo: bool = True, dataverse: bool = True) -> None:
        if dataverse:
            assert self.stack.host.run_timer(POLL_DATAVERSE, wait=300), "Dataverse poll did not finish"
        if marketo:
            assert self.stack.host.run_timer(POLL_MARKETO, wait=300), "Marketo poll did not finish"

    def drain(self, timeout: float = 120.0) -> None:
        """Wait until both work queues are empty (in-flight messages count until deleted)."""
        queues = services().queues
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"work queues did not drain in {timeout} s: "
                                     f"{queues.depth(FROM_MARKETO)} / {queues.depth(FROM_DYNAMICS)}")
            busy = queues.depth(FROM_MARKETO) + queues.depth(FROM_DYNAMICS)
            quiet = quiet + 1 if busy == 0 else 0
            time.sleep(0.15)

    def sync(self, rounds: int = 2, **which: bool) -> None:
        """Poll and drain `rounds` times: the second round sees (and ignores) our own echoes."""
        for _ in range(rounds):
            self.poll(**which)
            self.drain()

    # -- reading outcomes ----------------------------------------------------------------
    def activity(self, person: str) -> list[Entry]:
        return services().activity.for_person(person)

    def sync_person(self, lead_id: Any, *, key: str | None = None, raw: bytes | None = None) -> Any:
        import httpx

        headers = {"x-functions-key": key if key is not None else self.stack.config.function_key,
                   "content-type": "application/json"}
        body = raw if raw is not None else (b'{"leadId": %d}' % lead_id if isinstance(lead_id, int) else
                                            str(lead_id).encode())
        return httpx.post(f"{self.stack.app_url}/api/sync-person", content=body, headers=headers, timeout=60)

    def sync_person_at_once(self, lead_id: int, callers: int) -> list[int]:
        """`callers` webhook calls for one person, all in flight together: their statuses, sorted."""
        statuses: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            status = self.sync_person(lead_id).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=call) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(statuses)

    def marketo_by_email(self, email: str) -> list[dict[str, Any]]:
        return self.marketo.find_leads(email)

    def close(self) -> None:
        self.marketo.close()
        self.dataverse.close()


NEVER = "0 0 0 1 1 *"  # a schedule that never fires (1 January, midnight, of no year a test runs in)


def by_hand(**extra_env: str) -> StackConfig:
    """A stack whose timers never fire: the test decides when each side is polled."""
    return StackConfig(app_port=0, extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER,
                                              "MARKETO_DELETES_EVERY_S": "0", **extra_env})


@contextmanager
def running(config: StackConfig, *, log: Callable[[str], None] | None = None,
            first_sync: bool = True) -> Iterator[Harness]:
    """A started Stack with a Harness on it; `first_sync` runs one round first, so both
    pollers' cursors start now."""
    with Stack(config, log=log or (lambda line: None)) as stack:
        harness = Harness(stack)
        try:
            if first_sync:
                harness.sync(1)
            yield harness
        finally:
            harness.close()


def eventually(check: Callable[[], T], timeout: float = 30.0, every: float = 0.2) -> T:
    """The first truthy result of `check()`, or AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        time.sleep(every)
