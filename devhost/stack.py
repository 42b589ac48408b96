"""The whole local system in one object: Azurite, both emulators, and the app in devhost.

Used by `python -m devhost run`, the demo and the end-to-end tests, so all three run the
same wiring. The app is configured with the same app settings as in Azure, pointing its
clients at the emulators; they are handed to the app (`shared.runtime.configure`, and each
worker process's environment), never written into this process's `os.environ`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from devhost.azurite import Azurite

ROOT = Path(__file__).resolve().parent.parent
DEV_CLIENT_ID = "leadsync-dev"
DEV_CLIENT_SECRET = "leadsync-dev-secret"
DEV_TENANT = "leadsync-dev"
DEV_FUNCTION_KEY = "leadsync-dev-key"


def schedule_every(seconds: int) -> str:
    """An NCRONTAB schedule firing every `seconds` (TimeSpan form when 60 has no such divisor)."""
    if seconds < 60 and 60 % seconds == 0:
        return f"*/{seconds} * * * * *"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


@dataclass
class StackConfig:
    app_port: int = 7071
    marketo_port: int = 0
    dataverse_port: int = 0
    ca_out: Path | None = None
    function_key: str = DEV_FUNCTION_KEY
    poll_seconds: int = 30
    client_id: str = DEV_CLIENT_ID
    client_secret: str = DEV_CLIENT_SECRET
    tenant: str = DEV_TENANT
    storage_location: Path | None = None  # None: in-memory Azurite
    data_dir: Path | None = None  # Azurite under DIR/azurite and the emulators' state in DIR (devhost.persist)
    save_every_s: float = 2.0  # with data_dir: how often a changed emulator is saved
    connection_string: str | None = None  # use this storage instead of starting Azurite
    marketo_options: dict[str, Any] = field(default_factory=dict)
    dataverse_options: dict[str, Any] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    start_host: bool = True
    host_json: Path = ROOT / "host.json"


class Stack:
    def __init__(self, config: StackConfig | None = None, log: Any = None) -> None:
        self.config = config or StackConfig()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.azurite: Azurite | None = None
        self.marketo: Any = None
        self.dataverse: Any = None
        self.host: Any = None
        self.state: Any = None
        self.env: dict[str, str] = {}
        self._configured = False  # the app settings were handed to this process's app
        self._tmp = tempfile.TemporaryDirectory(prefix="leadsync-")

    def start(self) -> Stack:
        from devhost.emulators.dataverse import DataverseEmulator
        from devhost.emulators.marketo import MarketoEmulator

        cfg = self.config
        try:
            if cfg.connection_string:
                connection = cfg.connection_string
            else:
                location = cfg.storage_location or (cfg.data_dir / "azurite" if cfg.data_dir else None)
                self.azurite = Azurite(location=location)
                connection = self.azurite.start()
            self.marketo = MarketoEmulator(client_id=cfg.client_id, client_secret=cfg.client_secret,
                                           port=cfg.marketo_port, **cfg.marketo_options).__enter__()
            self.dataverse = DataverseEmulator(tenant=cfg.tenant, client_id=cfg.client_id,
                                               client_secret=cfg.client_secret, port=cfg.dataverse_port,
                                               **cfg.dataverse_options).__enter__()
            if cfg.data_dir is not None:
                self.state = open_state(cfg.data_dir, self.marketo, self.dataverse, cfg.save_every_s)
            ca_path = str(self.dataverse.ca_path)
            if cfg.ca_out is not None:
                Path(cfg.ca_out).write_bytes(Path(ca_path).read_bytes())
                ca_path = str(cfg.ca_out)
            self.env = self.app_env(connection, ca_path)
            if cfg.start_host:
                self.start_host()
        except BaseException:
            self.stop()
            raise
        return self

    def app_env(self, connection: str, ca_path: str) -> dict[str, str]:
        cfg = self.config
        env = {
            "AzureWebJobsStorage": connection,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "MARKETO_BASE_URL": self.marketo.base_url,
            "MARKETO_CLIENT_ID": cfg.client_id,
            "MARKETO_CLIENT_SECRET": cfg.client_secret,
            "DATAVERSE_URL": self.dataverse.base_url,
            "DATAVERSE_TENANT_ID": cfg.tenant,
            "DATAVERSE_CLIENT_ID": cfg.client_id,
            "DATAVERSE_CLIENT_SECRET": cfg.client_secret,
            "DATAVERSE_AUTHORITY_HOST": self.dataverse.base_url,
            "DATAVERSE_CA_BUNDLE": ca_path,
            "MARKETO_POLL_SCHEDULE": schedule_every(cfg.poll_seconds),
            "DATAVERSE_POLL_SCHEDULE": schedule_every(cfg.poll_seconds),
        }
        env.update(cfg.extra_env)
        return env

    def start_host(self) -> None:
        from devhost.host import FunctionHost
        from shared import runtime

        # Handed to the app before it is imported: its timer schedules are read at import.
        runtime.configure({**os.environ, **self.env})
        self._configured = True
        app = load_app()
        self.host = FunctionHost(app, connection_string=self.env["AzureWebJobsStorage"],
                                 host_json=self.config.host_json, function_key=self.config.function_key,
                                 http_port=self.config.app_port, env=self.env, log=self.log,
                                 script_file=ROOT / "function_app.py")
        self.host.start()

    @property
    def app_url(self) -> str:
        return str(self.host.http_url)

    def stop(self) -> None:
        for part in ("host",):
            obj = getattr(self, part)
            if obj is not None:
                obj.stop()
                setattr(self, part, None)
        if self.state is not None:
            self.state.stop()  # the last snapshot, while the emulators are still there
            self.state = None
        for part in ("dataverse", "marketo"):
            obj = getattr(self, part)
            if obj is not None:
                obj.__exit__(None, None, None)
                setattr(self, part, None)
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
        if self._configured:
            # Take the settings back and close the services built on them, so whatever runs
            # next in this process (another test module) sees no trace of us.
            from shared import runtime

            runtime.configure(None)
            self._configured = False
        self._tmp.cleanup()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


def open_state(directory: Path, marketo: Any, dataverse: Any, every_s: float) -> Any:
    """Load both emulators' snapshots from `directory` and keep saving them there."""
    from devhost.persist import EmulatorState, dataverse_target, marketo_target

    directory.mkdir(parents=True, exist_ok=True)
    state = EmulatorState(directory, [marketo_target(directory, marketo), dataverse_target(directory, dataverse)],
                          every_s=every_s)
    state.load()
    return state.start()


def load_app() -> Any:
    """Import the product's FunctionApp (its timer schedules are read from the app settings now)."""
    import importlib

    for name in ("function_app", "functions.timers", "functions.queues", "functions.http", "functions"):
        sys.modules.pop(name, None)
    return importlib.import_module("function_app").app

