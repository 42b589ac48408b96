"""Serving the emulator: in-process (a uvicorn thread, for tests) or as `python -m devhost marketo`."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from devhost.emulators.marketo.app import Emulator, Limits, MarketoApp


def _config(app: MarketoApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        # h11 refuses request heads over 16 KB by itself; let URIs up to 64 KB reach the app
        # so it can answer 414 above 8 KB as Marketo does.
        h11_max_incomplete_event_size=64 * 1024,
        timeout_keep_alive=30,
    )


class MarketoEmulator:
    """A Marketo emulator on a free 127.0.0.1 port, served from a background thread.

    `with MarketoEmulator(client_id="id", client_secret="s", rate_calls=10) as emu:` — `port=0`
    picks a free port; other keyword
    overrides are `Limits` fields (None switches a limit off). `emu.base_url` has no trailing
    slash; REST is under `/rest`, identity under `/identity`, admin under `/_admin`.
    """

    def __init__(self, client_id: str = "leadsync", client_secret: str = "leadsync-secret",
                 *, port: int = 0, log_level: str = "critical", **limit_overrides: Any) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.limits = Limits().update(limit_overrides)
        self.core = Emulator(client_id, client_secret, self.limits)
        self.app = MarketoApp(self.core)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: a free port is picked at start

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without
        # it Nagle + delayed ACK add ~40 ms to every response (headers and body are two writes).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(_config(self.app, self._log_level))
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), name="marketo-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Marketo emulator did not start")
            time.sleep(0.01)
        return self.base_url

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = None

    def __enter__(self) -> MarketoEmulator:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        self.core.triggers.outbound.stop()  # here, not in stop(): the same emulator may start again


def main(argv: list[str]) -> int:
    """`python -m devhost marketo --port P --client-id ID --client-secret S [--no-limits] ...`."""
    parser = argparse.ArgumentParser(prog="python -m devhost marketo", description="Serve the Marketo REST emulator.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--client-id", default="leadsync")
    parser.add_argument("--client-secret", default="leadsync-secret")
    parser.add_argument("--no-limits", action="store_true", help="switch off rate, concurrency, quota limits")
    parser.add_argument("--rate-calls", type=int, help="calls per rate window (default 100)")
    parser.add_argument("--rate-window", type=float, help="rate window in seconds (default 20)")
    parser.add_argument("--concurrency", type=int, help="calls in flight (default 10)")
    parser.add_argument("--daily-quota", type=int, help="calls per day (default 50000)")
    parser.add_argument("--token-ttl", type=float, help="access token lifetime in seconds (default 3600)")
    parser.add_argument("--short-pages-every", type=int, help="every k-th activity page empty/short (default off)")
    parser.add_argument("--latency", type=float, help="seconds added to every REST call")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.no_limits:
        overrides.update(rate_calls=None, concurrency=None, daily_quota=None)
    for arg, name in [("rate_calls", "rate_calls"), ("rate_window", "rate_window_s"), ("concurrency", "concurrency"),
                      ("daily_quota", "daily_quota"), ("token_ttl", "token_ttl_s"),
                      ("short_pages_every", "short_pages_every"), ("latency", "latency_s")]:
        if getattr(args, arg) is not None:
            overrides[name] = getattr(args, arg)
    emu = MarketoEmulator(args.client_id, args.client_secret, port=args.port, log_level="warning", **overrides)
    emu.start()
    print(emu.base_url, flush=True)
    try:
        assert emu._thread is not None
        while emu._thread.is_alive():
            emu._thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
