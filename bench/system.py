"""The system under test: Azurite and both emulators here, the app in a child process.

`BenchSystem` starts Azurite and the Marketo and Dataverse emulators with their default
(real) limits in this process, and runs the app in `bench.apphost` so its memory is its
own. It can restart the app with another poll schedule, run a poller on demand, wait for
the work queues to drain, and read each emulator's call counters.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from devhost.emulators.dataverse import DataverseAdmin
from devhost.emulators.marketo import MarketoAdmin
from devhost.stack import DEV_FUNCTION_KEY, Stack, StackConfig, schedule_every
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, WorkQueues

ROOT = Path(__file__).resolve().parent.parent
NEVER = "0 0 0 1 1 *"  # once a year: pollers run only when asked


@dataclass(frozen=True)
class Counters:
    marketo_calls: int  # counted REST calls (what Marketo's rate limit and daily quota count)
    dataverse_requests: int  # Web API requests ($batch counts once)

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.marketo_calls - other.marketo_calls, self.dataverse_requests - other.dataverse_requests)

    @property
    def total(self) -> int:
        return self.marketo_calls + self.dataverse_requests


class BenchSystem:
    def __init__(self, log: TextIO | None = None, *, worker_processes: int = 1) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="leadsync-bench-")
        self.log_path = Path(self._tmp.name) / "app.log"
        self.stack = Stack(StackConfig(start_host=False, app_port=0), log=lambda line: None)
        self.marketo: MarketoAdmin
        self.dataverse: DataverseAdmin
        self.env: dict[str, str] = {}
        self.app: subprocess.Popen[str] | None = None
        self.app_url = ""
        self.function_key = DEV_FUNCTION_KEY
        self._log = log or sys.stderr
        self.worker_processes = worker_processes

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> BenchSystem:
        self.stack.start()
        self.env = dict(self.stack.env)
        self.marketo = MarketoAdmin(self.stack.marketo.base_url)
        self.dataverse = DataverseAdmin(self.stack.dataverse.base_url, self.stack.dataverse.ca_path)
        self.queues = WorkQueues(Storage(self.env["AzureWebJobsStorage"]))
        return self

    def stop(self) -> None:
        self.stop_app()
        self.marketo.close()
        self.dataverse.close()
        self.stack.stop()
        self._tmp.cleanup()

    def __enter__(self) -> BenchSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_app(self, poll_seconds: int | None = None) -> None:
        """(Re)start the app in a fresh process; poll_seconds=None: pollers only on demand."""
        self.stop_app()
        self.app, self.app_url = spawn_app(self.app_env(poll_seconds), self.log_path, self.function_key)

    def app_env(self, poll_seconds: int | None = None) -> dict[str, str]:
        """An app process's environment: the stack's settings, these poll schedules and worker count."""
        schedule = NEVER if poll_seconds is None else schedule_every(poll_seconds)
        return {**os.environ, **self.env, "MARKETO_POLL_SCHEDULE": schedule, "DATAVERSE_POLL_SCHEDULE": schedule,
                "PYTHONUNBUFFERED": "1",
                "FUNCTIONS_WORKER_PROCESS_COUNT": str(self.worker_processes)}

    def stop_app(self) -> None:
        if self.app is None:
            return
        stop_process(self.app)
        self.app = None

    # -- driving -------------------------------------------------------------------------
    def poll(self, *, marketo: bool = True, dataverse: bool = True) -> None:
        """Run the pollers now, in the app, and wait (up to an hour) until they finished."""
        if not self.poll_within(3600, marketo=marketo, dataverse=dataverse):
            raise RuntimeError(f"a poll did not finish within an hour (see {self.log_path})")

    def poll_within(self, wait_s: float, *, marketo: bool = True, dataverse: bool = True) -> bool:
        """Run the pollers now, in the app; True once they finished, False if `wait_s` ran out
        first (the poll then goes on in the app)."""
        for side, wanted in (("dataverse", dataverse), ("marketo", marketo)):
            if wanted and not self._command(f"poll {side} {max(1.0, wait_s):.0f}"):
                return False
        return True

    def _command(self, text: str) -> bool:
        assert self.app is not None and self.app.stdin is not None and self.app.stdout is not None
        self.app.stdin.write(text + "\n")
        self.app.stdin.flush()
        answer = self.app.stdout.readline().strip()
        if answer not in ("done", "timeout"):
            raise RuntimeError(f"{text}: {answer or 'the app exited'} (see {self.log_path})")
        return answer == "done"

    def depth(self) -> int:
        return self.queues.depth(FROM_MARKETO) + self.queues.depth(FROM_DYNAMICS)

    def drained(self, timeout: float) -> bool:
        """Wait until both work queues are empty (in-flight messages count until deleted);
        False if they were not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            if time.monotonic() > deadline:
                return False
            quiet = quiet + 1 if self.depth() == 0 else 0
            time.sleep(0.15)
        return True

    def drain(self, timeout: float = 600.0) -> None:
        if not self.drained(timeout):
            raise RuntimeError(f"work queues did not drain in {timeout} s ({self.depth()} left)")

    def sync(self, rounds: int = 2) -> None:
        """Poll both sides and drain, `rounds` times (the second sees and drops our echoes)."""
        for _ in range(rounds):
            self.poll()
            self.drain()

    # -- observing ----------------------------------------------------------------------
    def counters(self) -> Counters:
        return Counters(int(self.marketo.stats()["counted_calls"]), int(self.dataverse.stats()["total_requests"]))

    def calls_by_endpoint(self) -> Counter[str]:
        """Every call either emulator served so far, by service and endpoint (for breakdowns)."""
        out: Counter[str] = Counter()
        for name, count in self.marketo.stats()["calls_by_endpoint"].items():
            out[f"marketo {name}"] += int(count)
        for name, count in self.dataverse.stats()["requests_by_operation"].items():
            out[f"dataverse {name}"] += int(count)
        return out

    def say(self, text: str) -> None:
        print(text, file=self._log, flush=True)

    def app_memory_kb(self) -> dict[str, int]:
        """The app's current (VmRSS) and peak (VmHWM) resident memory, in kB: the host
        process and its worker processes, summed (so the peak is an upper bound)."""
        assert self.app is not None
        out = {"VmRSS": 0, "VmHWM": 0}
        for pid in _process_tree(self.app.pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in out:
                    out[key] += int(value.split()[0])
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far (user + system) by the app, Azurite, and this process (the
        emulators and the load generators): who the two cores were busy for."""
        assert self.app is not None and self.stack.azurite is not None and self.stack.azurite.process is not None
        return {"app": _process_tree_cpu(self.app.pid), "azurite": _process_tree_cpu(self.stack.azurite.process.pid),
                "emulators": _cpu_seconds(os.getpid())}

    def sync_person(self, http: Any, lead_id: int) -> Any:
        return http.post(f"{self.app_url}/api/sync-person", content=b'{"leadId": %d}' % lead_id,
                         headers={"x-functions-key": self.function_key, "content-type": "application/json"})


def spawn_app(env: dict[str, str], log_path: Path, function_key: str) -> tuple[subprocess.Popen[str], str]:
    """Start `bench.apphost` with `env` (its stderr appended to `log_path`); the process and its URL once ready."""
    log = open(log_path, "a")  # noqa: SIM115 - the child owns it until it is stopped
    app = subprocess.Popen(
        [sys.executable, "-m", "bench.apphost", "--port", str(_free_port()), "--function-key", function_key],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    log.close()
    assert app.stdout is not None
    line = app.stdout.readline()
    if not line.startswith("ready "):
        raise RuntimeError(f"the app did not start (see {log_path}): {line!r}")
    return app, line.split()[1]


def stop_process(process: subprocess.Popen[str]) -> None:
    """Ask a child that reads commands on stdin to quit; kill it if it does not within a minute."""
    try:
        assert process.stdin is not None
        process.stdin.write("quit\n")
        process.stdin.close()
        process.wait(60)
    except (BrokenPipeError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Azurite runs under an npm/node launcher; the app's worker
    processes are started by one of its threads, so every thread's children count)."""
    found = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        children = [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except FileNotFoundError:  # it (or one of its threads) has just exited
        return found
    for child in children:
        found += _process_tree(child)
    return found


def _process_tree_cpu(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in _process_tree(pid))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_leads(system: BenchSystem, records: list[dict[str, Any]], chunk: int = 5000) -> list[str]:
    """Create Dataverse leads through the emulator's admin API (as an import would: uncounted)."""
    ids: list[str] = []
    for start in range(0, len(records), chunk):
        ids += system.dataverse.bulk("leads", records[start:start + chunk])
    return ids


def people_with(system: BenchSystem, tag: str) -> dict[str, int]:
    """Marketo people whose email contains `tag`: email -> Marketo id."""
    return {str(p["email"]): int(p["id"]) for p in system.marketo.all_leads() if tag in str(p.get("email") or "")}
