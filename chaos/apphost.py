"""The app alone in a child process, so the campaign can SIGKILL it like a crashed worker.

Child (`python -m chaos.apphost --lease-s 20`): reads its app settings from the
environment (the parent passes `Stack.app_env(...)`: Azurite + both emulators, which the
parent runs), hosts `function_app.app` in a devhost `FunctionHost`, prints `READY <url>`,
then one line per invocation (devhost's log) and the product's `leadsync` log lines.

Parent (`AppProcess`): start / kill -9 / restart, and `run_timer(name)`: the real host's
`POST /admin/functions/<name>` (with the function key), then waits for that timer's
`ok` / `FAILED` line, re-asking a restarted host when the one asked died meanwhile.

Why a shorter message lease in the child: devhost leases a received message for 10 min,
as the Functions host does, so after a crash its messages stay invisible that long. The
campaign kills the host many times; a 20 s lease keeps each kill's cost in seconds
without changing any other queue semantics (renewal at half-time, dequeue counts,
poison after maxDequeueCount).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TextIO

import httpx

ROOT = Path(__file__).resolve().parent.parent
_TIMER_DONE = re.compile(r"timer\s+(\w+)\s+past_due=\w+\s+(ok|FAILED)")
_POLL_MESSAGES = re.compile(r"poll \S+: \d+ changed, \d+ deleted -> (\d+) messages")


# -- child -------------------------------------------------------------------------------
def child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.apphost")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--function-key", required=True)
    p.add_argument("--lease-s", type=float, default=20.0)
    args = p.parse_args(argv)

    import devhost.host
    from devhost.stack import ROOT as APP_ROOT
    from devhost.stack import load_app

    def line(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("leadsync").setLevel(logging.INFO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    host = devhost.host.FunctionHost(load_app(), connection_string=os.environ["AzureWebJobsStorage"],
                                     host_json=APP_ROOT / "host.json", function_key=args.function_key,
                                     http_port=args.port, env={}, log=line, shutdown_timeout=10,
                                     message_lease=timedelta(seconds=args.lease_s),
                                     script_file=APP_ROOT / "function_app.py")
    host.start()
    line(f"READY {host.http_url}")
    stop.wait()
    host.stop()
    return 0


# -- parent ------------------------------------------------------------------------------
class HostDied(RuntimeError):
    """The host process ended while we waited on it."""


class AppProcess:
    """One app host process at a time; `generation` counts starts."""

    def __init__(self, env: Mapping[str, str], *, function_key: str, log_path: Path, lease_s: float = 20.0,
                 python: str = sys.executable, port: int = 0) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.port = port  # 0: a free one at each start
        self.function_key = function_key
        self.lease_s = lease_s
        self.python = python
        self.log_path = log_path
        self._log: TextIO = log_path.open("a", encoding="utf-8")
        self._cv = threading.Condition()
        self._done: Counter[tuple[str, str]] = Counter()  # (timer, ok|FAILED) -> runs seen
        self._poll_messages: list[int] = []  # messages each poll report enqueued, in order
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.generation = 0
        self.kills = 0
        self._http = httpx.Client(timeout=30)

    # lifecycle
    def start(self, timeout: float = 60.0) -> None:
        with self._cv:
            self.url = ""
        self.process = subprocess.Popen(
            [self.python, "-m", "chaos.apphost", "--function-key", self.function_key, "--lease-s", str(self.lease_s),
             "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, errors="replace")
        process = self.process
        self.generation += 1
        threading.Thread(target=self._pump, args=(process,), daemon=True, name="apphost-output").start()
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self.url:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app host did not start (see {self.log_path})")
                self._cv.wait(0.2)

    def kill(self) -> None:
        """SIGKILL: no shutdown, runs in flight die with their messages leased."""
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            self.kills += 1
        with self._cv:
            self.url = ""
            self._cv.notify_all()

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None
        self._http.close()
        self._log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and bool(self.url)

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            text = raw.rstrip("\n")
            self._log.write(text + "\n")
            with self._cv:
                if text.startswith("READY "):
                    self.url = text.split(" ", 1)[1].strip()
                elif m := _TIMER_DONE.search(text):
                    self._done[(m.group(1), m.group(2))] += 1
                elif m := _POLL_MESSAGES.search(text):
                    self._poll_messages.append(int(m.group(1)))
                self._cv.notify_all()
        self._log.flush()
        with self._cv:
            self._cv.notify_all()

    # driving
    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self.alive:
                if time.monotonic() > deadline:
                    raise RuntimeError("the app host is down and nobody restarted it")
                self._cv.wait(0.2)

    def poll_messages_seen(self) -> int:
        with self._cv:
            return len(self._poll_messages)

    def poll_messages_since(self, mark: int) -> int:
        with self._cv:
            return sum(self._poll_messages[mark:])

    def run_timer(self, name: str, timeout: float = 300.0) -> bool:
        """Run a timer function through the admin endpoint and wait for its end.

        True when it finished ok, False when it failed (the caller runs it again). Raises
        HostDied when the host died first (the caller waits for the restart and asks again).
        """
        self.wait_ready()
        generation = self.generation
        with self._cv:
            before = (self._done[(name, "ok")], self._done[(name, "FAILED")])
        try:
            response = self._http.post(f"{self.url}/admin/functions/{name}",
                                       headers={"x-functions-key": self.function_key})
        except httpx.HTTPError as exc:
            raise HostDied(f"admin call failed: {exc}") from exc
        if response.status_code != 202:
            raise RuntimeError(f"POST /admin/functions/{name}: {response.status_code}")
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                ok, failed = self._done[(name, "ok")], self._done[(name, "FAILED")]
                if ok > before[0]:
                    return True
                if failed > before[1]:
                    return False
                if self.generation != generation or not self.alive:
                    raise HostDied(f"host died while {name} ran")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} did not finish in {timeout} s")
                self._cv.wait(0.2)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
