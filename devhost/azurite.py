"""Start and stop Azurite (from the project's node_modules) for the host, demo and tests.

Azurite is started with `--skipApiVersionCheck` because the Python SDKs speak a newer
storage API version than Azurite 3.37 advertises, and with `--disableTelemetry`: by default
Azurite reports every request to Microsoft, which cost it a fifth of its CPU per request
here and kept it busy (~7 % of a core) while idle, with nowhere to send to.

Ports default to 0 (the OS picks free ones); the chosen ports are read back from Azurite's
own "listening at" lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"

# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_LISTEN = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


def connection_string(host: str, blob_port: int, queue_port: int, table_port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running Azurite process. Use as a context manager, or call start()/stop().

    `location=None` keeps data in memory (tests); a folder keeps it on disk so a
    restarted Azurite finds its queues and tables again (the chaos run relies on this).
    """

    location: Path | None = None
    host: str = "127.0.0.1"
    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    startup_timeout: float = 30.0
    process: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    _output: list[str] = field(default_factory=list, init=False, repr=False)

    def start(self) -> str:
        if not AZURITE_BIN.exists():
            raise RuntimeError(f"{AZURITE_BIN} is missing: run `npm ci` (the Makefile does) first")
        args = [
            str(AZURITE_BIN),
            "--skipApiVersionCheck",
            "--silent",
            "--loose",
            "--disableTelemetry",
            "--blobHost", self.host, "--blobPort", str(self.blob_port),
            "--queueHost", self.host, "--queuePort", str(self.queue_port),
            "--tableHost", self.host, "--tablePort", str(self.table_port),
        ]
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C aimed at the host must not kill storage first
            preexec_fn=die_with_parent(signal.SIGTERM if self.location is not None else signal.SIGKILL),
        )
        ports: dict[str, int] = {}
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self._output.append(line.rstrip())
                del self._output[:-50]
                m = _LISTEN.search(line)
                if m:
                    ports[m.group(1)] = int(m.group(2))
                    if len(ports) == 3:
                        ready.set()
            ready.set()  # process ended: wake the waiter so it can report

        threading.Thread(target=pump, name="azurite-output", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.1):
            if time.monotonic() > deadline:
                break
        if len(ports) != 3:
            self.stop()
            raise RuntimeError("Azurite did not start:\n" + "\n".join(self._output))
        self.blob_port, self.queue_port, self.table_port = ports["Blob"], ports["Queue"], ports["Table"]
        return self.connection_string

    @property
    def connection_string(self) -> str:
        return connection_string(self.host, self.blob_port, self.queue_port, self.table_port)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            # In memory there is nothing to flush, and Azurite takes ~10 s to exit on SIGTERM.
            os.killpg(self.process.pid, signal.SIGTERM if self.location is not None else signal.SIGKILL)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def __enter__(self) -> Azurite:
        self.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A `preexec_fn` that has Linux send `sig` to the child when this process dies, even by
    SIGKILL (prctl PR_SET_PDEATHSIG), so a killed host leaves no orphan behind.

    None off Linux, and when called outside the main thread: Linux sends the signal when
    the *thread* that started the child ends, which for any other thread is too early.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above ran
            os.kill(os.getpid(), sig)

    return arm


def have_node() -> bool:
    return shutil.which("node") is not None
