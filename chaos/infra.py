"""The campaign's own infrastructure: storage that can be restarted, and its queue depths.

Azurite keeps its data on disk (`location`) and is restarted on the same ports, so the
connection string the app was given stays valid across restarts, as a storage account's
does across a service blip.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from azure.core.exceptions import AzureError
from azure.storage.queue import QueueClient

from devhost.azurite import Azurite
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

WORK_QUEUES = (FROM_MARKETO, FROM_DYNAMICS)
POISON_QUEUES = tuple(f"{q}-poison" for q in WORK_QUEUES)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RestartableAzurite:
    """Azurite on fixed ports with on-disk data; restart() keeps both."""

    def __init__(self, location: Path) -> None:
        blob, queue, table = free_ports(3)
        self.azurite = Azurite(location=location, blob_port=blob, queue_port=queue, table_port=table)
        self.restarts = 0

    def start(self) -> str:
        return self.azurite.start()

    @property
    def connection_string(self) -> str:
        return self.azurite.connection_string

    def restart(self, down_s: float = 0.0) -> None:
        self.azurite.stop()  # SIGTERM: Azurite flushes its on-disk state
        time.sleep(down_s)
        for attempt in range(20):  # the old process may hold its ports a moment longer
            try:
                self.azurite.start()
                break
            except RuntimeError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
        self.restarts += 1

    def stop(self) -> None:
        self.azurite.stop()


class QueueDepths:
    """Approximate message counts (invisible, leased messages included)."""

    def __init__(self, connection_string: str) -> None:
        self._clients = {name: QueueClient.from_connection_string(connection_string, name)
                         for name in WORK_QUEUES + POISON_QUEUES}

    def depth(self, name: str) -> int | None:
        """None while storage is unreachable (restarting)."""
        try:
            props = self._clients[name].get_queue_properties(timeout=5)
        except AzureError:
            return None
        return int(props.approximate_message_count or 0)

    def work(self) -> int | None:
        depths = [self.depth(q) for q in WORK_QUEUES]
        return None if any(d is None for d in depths) else sum(d for d in depths if d is not None)

    def client(self, name: str) -> QueueClient:
        return self._clients[name]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
