"""Which Dataverse user LeadSync is, so the change events of its own writes can be dropped.

Every write LeadSync makes to Dataverse comes back as a webhook event naming the user who
made it (InitiatingUserId): LeadSync's application user. Such an echo is no news for either
side, and dropping it at the receiver saves the Dataverse read (and the drain) it would cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.clients.odata import Guid

log = logging.getLogger("leadsync")


class OwnUser:
    """LeadSync's own Dataverse user id, asked once per process with WhoAmI.

    Asked in the background: a receiver never waits for it. Until the answer is in (or while
    Dataverse cannot give it, asked again a minute later) no change is taken for our own,
    which costs reads, never a change.
    """

    RETRY_S = 60.0

    def __init__(self, who_am_i: Callable[[], Mapping[str, Any]], submit: Callable[[Callable[[], None]], object],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self._who_am_i, self._submit, self._clock = who_am_i, submit, clock
        self._id: str | None = None
        self._asking = False
        self._next_try = 0.0
        self._lock = threading.Lock()

    def get(self) -> str | None:
        """The user's id (lower case), or None while it is not known."""
        if self._id is None:
            with self._lock:
                if self._asking or self._clock() < self._next_try:
                    return None
                self._asking = True
            self._submit(self._ask)
        return self._id

    def made(self, user_id: str | None) -> bool:
        """`user_id` (a change's initiating user) is LeadSync's own user."""
        return user_id is not None and user_id.lower() == self.get()

    def _ask(self) -> None:
        try:
            self._id = str(Guid(str(self._who_am_i().get("UserId"))))
        except Exception as exc:  # noqa: BLE001 - any failure only means no echo is dropped for a while
            log.warning("WhoAmI failed (%s: %s): Dataverse events are not checked for our own writes yet",
                        type(exc).__name__, exc)
            self._next_try = self._clock() + self.RETRY_S
        finally:
            self._asking = False
