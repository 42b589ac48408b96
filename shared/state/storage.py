"""Clients for the storage account that holds LeadSync's state (tables) and work (queues).

One `Storage` per process; table and queue clients are created once and reused. Queue
messages are base64-encoded JSON, matching `extensions.queues.messageEncoding: base64`
in host.json, so the Functions queue trigger decodes exactly what we send.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

_PROXY_SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


class Storage:
    """State and work storage, by connection string or (in Azure) by managed identity.

    `account` (from `AzureWebJobsStorage__accountName`) makes the clients authenticate
    with DefaultAzureCredential against https://<account>.{table,queue}.core.windows.net,
    so no account key is ever in the app's settings.
    """

    def __init__(self, connection_string: str = "", *, table_prefix: str = "leadsync",
                 account: str | None = None) -> None:
        if not connection_string and not account:
            raise ValueError("Storage needs a connection string or an account name")
        self.connection_string = connection_string
        self.table_prefix = table_prefix
        self._account = account
        self._credential: Any = None
        # Link and activity reads fan out over a thread pool; a pool of 10 connections
        # (requests' default) would make most of those threads open a fresh connection.
        self._session = _pooled_session(32)
        self._transport = RequestsTransport(session=self._session, session_owner=False,
                                            connection_verify=_ca_bundle())
        if connection_string:
            self._tables = TableServiceClient.from_connection_string(connection_string, transport=self._transport)
            self._queues = QueueServiceClient.from_connection_string(connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
            self._tables = TableServiceClient(f"https://{account}.table.core.windows.net",
                                              credential=self._credential, transport=self._transport)
            self._queues = QueueServiceClient(f"https://{account}.queue.core.windows.net",
                                              credential=self._credential)
        self._table_clients: dict[str, TableClient] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._lock = threading.Lock()

    def table(self, name: str) -> TableClient:
        """The table `<prefix><name>`, created on first use."""
        full = f"{self.table_prefix}{name}"
        with self._lock:
            client = self._table_clients.get(full)
            if client is None:
                self._tables.create_table_if_not_exists(full)
                client = self._tables.get_table_client(full)
                self._table_clients[full] = client
            return client

    def queue(self, name: str) -> QueueClient:
        """The queue `name` (base64 message encoding), created on first use."""
        with self._lock:
            client = self._queue_clients.get(name)
            if client is None:
                policies: dict[str, Any] = {"message_encode_policy": TextBase64EncodePolicy(),
                                            "message_decode_policy": TextBase64DecodePolicy()}
                if self.connection_string:
                    client = QueueClient.from_connection_string(self.connection_string, name, **policies)
                else:
                    client = QueueClient(f"https://{self._account}.queue.core.windows.net", name,
                                         credential=self._credential, **policies)
                try:
                    client.create_queue()
                except Exception as exc:  # noqa: BLE001 - only "already exists" is expected here
                    if getattr(exc, "error_code", None) != "QueueAlreadyExists":
                        raise
                self._queue_clients[name] = client
            return client

    def close(self) -> None:
        """Close the table clients' pooled connections."""
        self._session.close()

    def raw_queue(self, name: str) -> QueueClient:
        """The queue `name` with no message encoding: content exactly as stored, whatever it is.

        For reading poison queues, where a message may not be base64 (the host moved it
        there because it could not decode it) and the base64 client would fail on it.
        """
        self.queue(name)  # created on first use, as every queue is
        if self.connection_string:
            return QueueClient.from_connection_string(self.connection_string, name)
        return QueueClient(f"https://{self._account}.queue.core.windows.net", name, credential=self._credential)

    def queue_names(self) -> list[str]:
        return [q.name for q in self._queues.list_queues()]


def _pooled_session(size: int) -> requests.Session:
    session = requests.Session()
    if not any(os.environ.get(name) for name in _PROXY_SETTINGS):
        # With trust_env, requests scans the whole environment for proxy settings on every
        # request, a large share of the client's CPU per table call (bench/README.md) in an app
        # whose settings are all environment variables. No proxy is set: skip the scan (the CA bundle it would
        # also find is read once, by `_ca_bundle`).
        session.trust_env = False
    adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _ca_bundle() -> str | bool:
    """The CA bundle requests would take from the environment, else the default store."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
