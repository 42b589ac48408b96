"""Run modes: in-process `DataverseEmulator` (uvicorn in a background thread, HTTPS with a
trustme CA), `main(argv)` for `python -m devhost dataverse`, and the typed `DataverseAdmin` client."""

from __future__ import annotations

import argparse
import signal
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import trustme
import uvicorn

from .app import Emulator, Limits, build_app


class DataverseEmulator:
    """`with DataverseEmulator(tenant=..., client_id=..., client_secret=...) as emu:` serves
    https://127.0.0.1:<port>; `emu.authority` is the Entra-like authority, `emu.ca_path` the CA PEM.

    Keyword overrides: `token_lifetime_s`, and any `Limits` field (`requests_per_window`,
    `window_s`, `concurrency`, `execution_ms`; None disables one).
    """

    def __init__(self, tenant: str = "contoso", client_id: str = "leadsync-app", client_secret: str | None = "s3cret",
                 *, port: int = 0, host: str = "127.0.0.1", ca_path: str | None = None, token_lifetime_s: int = 3599,
                 log_level: str = "critical", **limit_overrides: Any) -> None:
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.host = host
        self.port = port
        self.token_lifetime_s = token_lifetime_s
        self.limits = Limits(**limit_overrides)
        self.log_level = log_level
        self._tmp = tempfile.TemporaryDirectory(prefix="dataverse-emu-")
        self.ca_path = ca_path or str(Path(self._tmp.name) / "ca.pem")
        self.base_url = ""
        self.emulator: Emulator | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.tenant}"

    @property
    def scope(self) -> str:
        return f"{self.base_url}/.default"

    def start(self) -> str:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        Path(self.ca_path).parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(self.ca_path)
        certfile = Path(self._tmp.name) / "server.pem"
        keyfile = Path(self._tmp.name) / "server.key"
        cert.cert_chain_pems[0].write_to_path(str(certfile))
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(str(certfile), append=True)
        cert.private_key_pem.write_to_path(str(keyfile))

        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without
        # it a response written in two parts waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.base_url = f"https://{self.host}:{self.port}"
        self.emulator = Emulator(self.base_url, self.tenant, self.client_id, self.client_secret,
                                 token_lifetime_s=self.token_lifetime_s, limits=self.limits)
        config = uvicorn.Config(build_app(self.emulator), ssl_certfile=str(certfile), ssl_keyfile=str(keyfile),
                                log_level=self.log_level, lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="dataverse-emulator")
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("Dataverse emulator failed to start")
            time.sleep(0.02)
        return self.base_url

    def stop(self) -> None:
        if self.emulator is not None:
            self.emulator.webhooks.outbound.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._tmp.cleanup()

    def __enter__(self) -> DataverseEmulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class DataverseAdmin:
    """Typed client for /_admin (tests, demo). Verifies TLS against the emulator's CA."""

    def __init__(self, base_url: str, ca_path: str) -> None:
        self.http = httpx.Client(base_url=base_url, verify=ssl.create_default_context(cafile=ca_path), timeout=30)

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        resp = self.http.request(method, url, **kw)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def reset(self) -> None:
        self._json("POST", "/_admin/reset")

    def stats(self) -> dict[str, Any]:
        return dict(self._json("GET", "/_admin/stats"))

    def create(self, entity_set: str, record: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("POST", f"/_admin/{entity_set}", json=record))

    def bulk(self, entity_set: str, records: list[dict[str, Any]]) -> list[str]:
        return list(self._json("POST", f"/_admin/{entity_set}/bulk", json={"records": records})["ids"])

    def bulk_update(self, entity_set: str, records: list[dict[str, Any]]) -> int:
        """Update every record (each carries its primary id) in one commit, as an import does."""
        return int(self._json("PATCH", f"/_admin/{entity_set}/bulk", json={"records": records})["updated"])

    def get(self, entity_set: str, record_id: str) -> dict[str, Any] | None:
        resp = self.http.get(f"/_admin/{entity_set}/{record_id}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return dict(resp.json())

    def find(self, entity_set: str, **filters: str) -> list[dict[str, Any]]:
        return list(self._json("GET", f"/_admin/{entity_set}", params=filters)["value"])

    def update(self, entity_set: str, record_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return dict(self._json("PATCH", f"/_admin/{entity_set}/{record_id}", json=changes))

    def delete(self, entity_set: str, record_id: str) -> None:
        self._json("DELETE", f"/_admin/{entity_set}/{record_id}")

    def qualify(self, lead_id: str, *, existing_contact: str | None = None) -> str:
        """Qualify a lead into a new contact, or into `existing_contact`; returns the contact's id."""
        body = {"existing_contact": existing_contact} if existing_contact else {}
        return str(self._json("POST", f"/_admin/leads/{lead_id}/qualify", json=body)["contactid"])

    def merge(self, entity: str, master_id: str, subordinate_id: str, update: dict[str, Any] | None = None) -> None:
        """Merge `subordinate_id` into `master_id` as a salesperson does (the Merge action)."""
        key = f"{entity}id"
        self._json("POST", "/_admin/merge", json={
            "Target": {"@odata.type": f"Microsoft.Dynamics.CRM.{entity}", key: master_id},
            "Subordinate": {"@odata.type": f"Microsoft.Dynamics.CRM.{entity}", key: subordinate_id},
            "UpdateContent": {"@odata.type": f"Microsoft.Dynamics.CRM.{entity}", **(update or {})},
            "PerformParentingChecks": False})

    def fault(self, kind: str, *, count: int | None = None, rate: float | None = None, retry_after: int = 1,
              delay_s: float = 0.0, path_prefix: str | None = None) -> None:
        self._json("POST", "/_admin/faults", json={"kind": kind, "count": count, "rate": rate,
                                                   "retry_after": retry_after, "delay_s": delay_s,
                                                   "path_prefix": path_prefix})

    def clear_faults(self) -> None:
        self._json("DELETE", "/_admin/faults")

    def deny(self, *privileges: str) -> None:
        """Take privileges (e.g. "prvCreateLead") from the application user's roles; none given: restore all."""
        if privileges:
            self._json("POST", "/_admin/privileges", json={"deny": list(privileges)})
        else:
            self._json("DELETE", "/_admin/privileges")

    def plugin_error(self, entity: str, message: str, error: str) -> None:
        """Register a synchronous plug-in step on `message` ("Create"/"Update") of `entity` that throws `error`."""
        self._json("POST", "/_admin/plugins", json={"entity": entity, "message": message, "error": error})

    def clear_plugins(self) -> None:
        self._json("DELETE", "/_admin/plugins")

    def duplicate_rule(self, entity: str, columns: list[str]) -> None:
        """Publish a duplicate detection rule (exact match on `columns`)."""
        self._json("POST", "/_admin/duplicate-rules", json={"entity": entity, "columns": columns})

    def clear_duplicate_rules(self) -> None:
        self._json("DELETE", "/_admin/duplicate-rules")

    def define_key(self, entity: str, columns: list[str]) -> None:
        self._json("POST", "/_admin/keys", json={"entity": entity, "columns": columns})

    def set_metadata(self, entity: str, attribute: str, **changes: Any) -> None:
        self._json("POST", "/_admin/metadata", json={"entity": entity, "attribute": attribute, **changes})

    def set_limits(self, **limits: Any) -> None:
        self._json("POST", "/_admin/limits", json=limits)

    def expire_delta_tokens(self) -> None:
        self._json("POST", "/_admin/expire-delta-tokens")

    def revoke_tokens(self) -> int:
        return int(self._json("POST", "/_admin/tokens/revoke")["revoked"])

    # -- webhooks (service endpoints and steps are registered through the Web API itself) ------
    def webhook_fault(self, kind: str, *, count: int | None = None, rate: float | None = None,
                      delay_s: float = 0.0) -> None:
        """kind: drop | duplicate | reorder | delay; for `count` calls (1 if neither is given) or a `rate`."""
        self._json("POST", "/_admin/webhooks/faults", json={"kind": kind, "count": count, "rate": rate,
                                                            "delay_s": delay_s})

    def clear_webhook_faults(self) -> None:
        self._json("DELETE", "/_admin/webhooks/faults")

    def webhook_stats(self) -> dict[str, Any]:
        """submitted, sent, failed, attempts, retries, dropped, duplicated, reordered, delayed, pending, ..."""
        return dict(self._json("GET", "/_admin/webhooks/stats"))


def main(argv: list[str]) -> int:
    """`python -m devhost dataverse --port P --tenant T --client-id ID --client-secret S --ca-out FILE`."""
    parser = argparse.ArgumentParser(prog="python -m devhost dataverse", description="Dataverse Web API emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tenant", default="contoso")
    parser.add_argument("--client-id", default="leadsync-app")
    parser.add_argument("--client-secret", default="s3cret")
    parser.add_argument("--ca-out", required=True, help="write the CA bundle (PEM) here before serving")
    parser.add_argument("--token-lifetime", type=int, default=3599)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    emu = DataverseEmulator(args.tenant, args.client_id, args.client_secret, port=args.port, host=args.host,
                            ca_path=args.ca_out, token_lifetime_s=args.token_lifetime, log_level=args.log_level)
    with emu:
        print(emu.base_url, flush=True)
        stop.wait()
    return 0
