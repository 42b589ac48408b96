"""The shared API budget: one Table Storage row per limited service, read and written with its ETag.

Every LeadSync process (instance, worker process, function group) draws its Marketo calls
and Dataverse requests through a `TableAllowance`, the `AllowanceSource` of the clients'
`CallBudget`. A lease is one read and, when something changes, one ETag-conditional write;
a process leases a block of calls at a time, so storage requests stay a small fraction of
API calls. It keeps the row it last read or wrote, with its ETag, and writes against that
copy without reading again (one request) unless its recent copies were stale; a write
that meets 412 (another process wrote first) re-reads, after a short random wait when
two were racing. The arithmetic (what may be granted, pressure, recovery) is `shared.state.budgetrow`.

    PK "budget"   RK "<service>"   grants (JSON [at, calls, id, last]), slots (JSON), factor, pressure_at,
                                   blocked_until, pressures
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.clients.ratelimit import LeaseAnswer, LeaseRequest
from shared.errors import StateConflict
from shared.state import budgetrow
from shared.state.budgetrow import BudgetLimits, BudgetState, Grant, Slots
from shared.state.storage import Storage

log = logging.getLogger("leadsync")

PARTITION = "budget"
MAX_CONFLICTS = 50  # re-reads after 412 before a lease gives up (the caller's retry takes over)
MAX_SKIP = 8  # leases that read first after the kept copy turned out stale, at most

_jitter = random.Random()


def _to_row(resource: str, state: BudgetState) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION, "RowKey": resource,
        "grants": json.dumps([[round(g.at, 3), g.calls, g.id, round(g.last, 3)] for g in state.grants],
                             separators=(",", ":")),
        "slots": json.dumps({h: [s.count, round(s.expires, 3)] for h, s in state.slots.items()},
                            separators=(",", ":")),
        "factor": float(state.factor), "pressure_at": float(state.pressure_at),
        "blocked_until": float(state.blocked_until), "pressures": int(state.pressures),
    }


def _from_row(e: Mapping[str, Any]) -> BudgetState:
    grants = tuple(Grant(float(at), int(n), str(gid), float(last))
                   for at, n, gid, last in json.loads(str(e.get("grants") or "[]")))
    slots = {str(h): Slots(int(c), float(x)) for h, (c, x) in json.loads(str(e.get("slots") or "{}")).items()}
    return BudgetState(grants, slots, float(e.get("factor", 1.0)), float(e.get("pressure_at", 0.0)),
                       float(e.get("blocked_until", 0.0)), int(str(e.get("pressures", 0))))


def new_holder() -> str:
    """A name for this process that no other process shares (host, pid and a random part)."""
    return f"{socket.gethostname()[:20]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TableAllowance:
    """One service's shared budget (`resource`, e.g. "marketo") as seen by one process (`holder`).

    Thread-safe; `CallBudget` serialises its own leases. `clock` is wall time shared by
    every instance (injectable for tests); `storage_requests` counts this object's reads
    and writes, `conflicts` its 412s.
    """

    def __init__(self, storage: Storage, resource: str, limits: BudgetLimits, *, holder: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._table = storage.table("budget")
        self.resource = resource
        self.limits = limits
        self.holder = holder or new_holder()
        self._clock = clock
        self._lock = threading.Lock()
        self.storage_requests = 0
        self.conflicts = 0
        self._copy: tuple[BudgetState, str] | None = None  # the row as this process last saw it
        self._skip = 0  # leases left that read first (the copy was stale lately)
        self._skip_next = 1

    def read(self) -> tuple[BudgetState, str | None]:
        """The row as stored and its ETag (an empty state and None before the first grant)."""
        with self._lock:
            self.storage_requests += 1
        try:
            e = self._table.get_entity(PARTITION, self.resource)
        except ResourceNotFoundError:
            return BudgetState(), None
        return _from_row(e), e.metadata.get("etag")

    def _update(self, change: Callable[[BudgetState, float], tuple[BudgetState, bool]]) -> BudgetState:
        """Apply `change` to the row with optimistic concurrency; returns the state written (or read)."""
        with self._lock:
            copy = self._copy if self._skip == 0 else None
            self._skip = max(0, self._skip - 1)
        for attempt in range(MAX_CONFLICTS):
            cached = copy is not None
            state, etag = copy if copy is not None else self.read()
            copy = None
            new, changed = change(state, self._clock())
            if not changed:
                if cached:
                    continue  # nothing to write, perhaps only because the copy is old: read the row
                if etag is not None:
                    with self._lock:
                        self._copy = (state, etag)
                return new
            with self._lock:
                self.storage_requests += 1
            try:
                if etag is None:
                    meta = self._table.create_entity(_to_row(self.resource, new))
                else:
                    meta = self._table.update_entity(_to_row(self.resource, new), mode=UpdateMode.REPLACE,
                                                     etag=etag, match_condition=MatchConditions.IfNotModified)
                with self._lock:
                    written = meta.get("etag") if isinstance(meta, Mapping) else None
                    self._copy = (new, str(written)) if written else None
                    if cached:
                        self._skip_next = 1
                return new
            except (ResourceModifiedError, ResourceExistsError):
                with self._lock:
                    self.conflicts += 1
                    self._copy = None
                    if cached:
                        # Others write between this process's leases: read first for a while.
                        self._skip, self._skip_next = self._skip_next, min(MAX_SKIP, 2 * self._skip_next)
                if not cached:
                    # Spread the retries so the writers that lost do not collide again at once.
                    time.sleep(_jitter.uniform(0, 0.005 * min(attempt + 1, 10)))
        raise StateConflict(f"the {self.resource} budget row kept changing ({MAX_CONFLICTS} conflicts)")

    def lease(self, request: LeaseRequest) -> LeaseAnswer:
        """Grant what fits the shared limits now (possibly nothing) and record it in the row."""
        answers: list[LeaseAnswer] = []

        def change(state: BudgetState, now: float) -> tuple[BudgetState, bool]:
            outcome = budgetrow.lease(state, self.limits, self.holder, request, now)
            answers.append(outcome.answer)
            return outcome.state, outcome.changed

        self._update(change)
        return answers[-1]

    def pressure(self, retry_after: float | None) -> None:
        """Record that the service refused a call the budget allowed: every process slows down."""
        state = self._update(lambda s, now: (budgetrow.pressure(s, self.limits, now, retry_after), True))
        log.warning("%s refused a call the shared budget allowed: another integration is spending the same "
                    "limit; LeadSync's share is now %.0f %%%s", self.resource, 100 * state.factor,
                    f", nothing new before {retry_after:.0f} s" if retry_after else "")
