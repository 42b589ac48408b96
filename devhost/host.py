"""FunctionHost: runs a Python v2 `func.FunctionApp` locally with the Azure Functions
host's trigger semantics, since the Core Tools (`func`) are not available here.

It indexes the app the way the host does (`app.get_functions()`), then drives:

- timer triggers (devhost.timers; Azure docs "Timer trigger for Azure Functions"),
- queue triggers (devhost.queues; "Azure Queue storage trigger for Azure Functions" and
  the host.json `extensions.queues` reference),
- HTTP triggers (devhost.http; "Azure Functions HTTP trigger").

Settings: the app settings are the process environment, then `AzureWebJobsStorage` =
`connection_string`, then every `env` entry (env wins). The host never writes them into
its own `os.environ`: start() hands them to an app running in this process through
`shared.config.use_env` (stop() takes them back), and to each worker process as that
process's environment, as the Functions host does. So two hosts with different `env` must
not run in one process at once.

`%Name%` in a queue name or timer schedule is replaced by that setting, as the host's
binding expressions do. A queue trigger's `connection` names the setting that holds
the connection string (default `AzureWebJobsStorage`; `AzureWebJobs<name>` also found).

`FUNCTIONS_WORKER_PROCESS_COUNT` (from `env` or the environment, 1 to 10) runs the
functions in that many worker processes (devhost.workers), which import `script_file`
(the app's function_app.py) as the Python worker does; the triggers stay in this process.
With the default of 1 the functions run in this process, on the `app` object given.

Not reproduced: output and input bindings (start() refuses a function that declares
one), `func.Context` arguments, functionTimeout enforcement (a Python thread cannot be
stopped; a run that exceeds it is only reported), timer schedule status kept in storage,
and identity-based connections.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func

from devhost.failures import FailureLog
from devhost.hostjson import HostSettings, read_host_json
from devhost.http import HttpFunction, HttpServer
from devhost.queues import MESSAGE_LEASE, QueueListener
from devhost.timers import TimerRunner, parse_schedule
from devhost.workers import COUNT_SETTING, WorkerPool, run_function, worker_count
from shared import config

__all__ = ["FunctionHost", "HostSettings", "read_host_json"]

DEFAULT_CONNECTION = "AzureWebJobsStorage"
logger = logging.getLogger("devhost.host")
_SETTING_REF = re.compile(r"%([^%]+)%")


def _print_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class FunctionHost:
    """Runs one FunctionApp: `with FunctionHost(app, ...) as host: ... host.http_url`.

    `host_json` is a path to host.json or its parsed content. `function_key` is the key
    that FUNCTION- and ADMIN-level HTTP functions require. `http_port=0` picks a free
    port. `log` receives one line per invocation (default: stderr), prefixed with the
    local time. start() raises ValueError naming the function or setting when the app
    cannot be hosted; nothing is left running then. A stopped host can be started again.
    azure-functions allows `app.get_functions()` only once per app object, so give each
    FunctionHost its own FunctionApp.
    """

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        connection_string: str,
        host_json: Path | str | Mapping[str, Any],
        function_key: str,
        http_port: int = 0,
        env: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        shutdown_timeout: float = 30.0,
        message_lease: timedelta = MESSAGE_LEASE,
        script_file: Path | str | None = None,
    ) -> None:
        if not function_key:
            raise ValueError("function_key must not be empty")
        self.app = app
        self.settings = read_host_json(host_json)
        self.connection_string = connection_string
        self.function_key = function_key
        self.http_port = http_port
        self.env = dict(env or {})
        self.shutdown_timeout = shutdown_timeout
        self.message_lease = message_lease
        self._sink = log or _print_line
        self._log_lock = threading.Lock()
        self._failures = FailureLog(logger)
        self._settings: dict[str, str] | None = None  # the app settings while started
        self._timers: list[TimerRunner] = []
        self._queues: list[QueueListener] = []
        self._http: HttpServer | None = None
        self._functions: list[Any] | None = None
        self.script_file = script_file
        self._workers: WorkerPool | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> FunctionHost:
        """Apply the settings, index the app and start every trigger."""
        if self._settings is not None:
            raise RuntimeError("host already started")
        self._settings = {**os.environ, DEFAULT_CONNECTION: self.connection_string, **self.env}
        config.use_env(self._settings)
        try:
            self._start_workers()
            self._index()
            for listener in self._queues:
                listener.start()
            for timer in self._timers:
                timer.start()
            if self._http is not None:
                self._http.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop triggers, wait (up to shutdown_timeout) for runs in flight, stop the HTTP
        server, take the app settings back. Safe to call twice."""
        deadline = time.monotonic() + self.shutdown_timeout
        for timer in self._timers:
            timer.stop()
        for listener in self._queues:
            listener.stop()
        unfinished = []
        for timer in self._timers:
            if not timer.join(max(0.0, deadline - time.monotonic())):
                unfinished.append(timer.name)
        for listener in self._queues:
            if not listener.join(max(0.0, deadline - time.monotonic())):
                unfinished.append(listener.name)
        if unfinished:
            self._log(f"host  stopped while still running: {', '.join(unfinished)}")
        if self._http is not None:
            self._http.stop(max(1.0, deadline - time.monotonic()))
        if self._workers is not None:
            self._workers.stop(max(1.0, deadline - time.monotonic()))
        self._timers, self._queues, self._http, self._workers = [], [], None, None
        if self._settings is not None:
            config.use_env(None)
            self._settings = None

    def __enter__(self) -> FunctionHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def run_timer(self, name: str, *, wait: float | None = 60.0) -> bool:
        """Run a timer function now, as the real host's `POST /admin/functions/{name}` does.

        The run is queued to the timer's own thread (never overlapping a scheduled run);
        with `wait`, returns once it finished (True) or the wait ran out (False).
        """
        for timer in self._timers:
            if timer.name == name:
                return timer.run_now(wait)
        raise KeyError(f"no timer function named {name!r}")

    def _run_by_name(self, name: str) -> bool:
        try:
            return self.run_timer(name, wait=None)
        except KeyError:
            return False

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes' ids (empty when the functions run in this process)."""
        return self._workers.pids() if self._workers is not None else []

    @property
    def http_url(self) -> str:
        """http://127.0.0.1:<port> once started (routes are under /<routePrefix>/)."""
        if self._http is None:
            raise RuntimeError("the host has no HTTP functions or is not started")
        return self._http.url

    # -- indexing ----------------------------------------------------------------------

    def _index(self) -> None:
        http_functions: list[HttpFunction] = []
        if self._functions is None:
            # azure-functions lets an app be indexed once: a second get_functions() call
            # raises "does not have a unique function name". Keep the list for restarts.
            self._functions = list(self.app.get_functions())
        if self._workers is not None:
            mine = sorted(fn.get_function_name() for fn in self._functions)
            if mine != self._workers.functions:
                raise ValueError(f"the workers indexed {self.script_file} as functions {self._workers.functions}, "
                                 f"but the app given to the host has {mine}: pass the app that file defines")
        for fn in self._functions:
            name = fn.get_function_name()
            trigger = fn.get_trigger().get_dict_repr()
            kind = trigger["type"]
            self._check_bindings(name, fn, kind)
            arg = trigger["name"]
            user_function = fn.get_user_function() if self._workers is None else self._remote(name, arg)
            if kind == "timerTrigger":
                schedule_text = self._resolve(str(trigger["schedule"]), name)
                try:
                    schedule = parse_schedule(schedule_text)
                except ValueError as exc:
                    raise ValueError(f"function {name}: {exc}") from exc
                self._timers.append(TimerRunner(
                    name,
                    schedule,
                    run_on_startup=bool(trigger.get("runOnStartup", False)),
                    invoke=self._sync_invoker(name, user_function, arg),
                    log=self._log,
                ))
            elif kind == "queueTrigger":
                self._queues.append(QueueListener(
                    name,
                    connection_string=self._connection(trigger.get("connection"), name),
                    queue_name=self._resolve(str(trigger["queueName"]), name),
                    settings=self.settings.queues,
                    invoke=self._sync_invoker(name, user_function, arg),
                    log=self._log,
                    lease=self.message_lease,
                ))
            elif kind == "httpTrigger":
                methods = trigger.get("methods")
                level = trigger.get("authLevel", func.AuthLevel.FUNCTION)
                http_functions.append(HttpFunction(
                    name=name,
                    route=str(trigger.get("route") or name),
                    methods=frozenset(str(getattr(m, "value", m)).upper() for m in methods) if methods else None,
                    auth_level=str(getattr(level, "value", level)).lower(),
                    arg_name=arg,
                    user_function=user_function,
                ))
            else:
                raise ValueError(f"function {name}: devhost does not support {kind} triggers")
        if http_functions:
            self._http = HttpServer(
                http_functions,
                route_prefix=self.settings.route_prefix,
                function_key=self.function_key,
                port=self.http_port,
                log=self._log,
                run_function=self._run_by_name,
            )

    def _start_workers(self) -> None:
        count = worker_count(self._setting(COUNT_SETTING))
        if count == 1:
            return
        if self.script_file is None:
            raise ValueError(f"{COUNT_SETTING}={count} needs the app's script file (script_file=.../function_app.py)")
        self._workers = WorkerPool(count, self.script_file, env=self._settings).start()

    def _remote(self, name: str, arg: str) -> Callable[..., Any]:
        pool = self._workers
        assert pool is not None

        def run_in_worker(**kwargs: Any) -> Any:
            return pool.invoke(name, kwargs[arg])

        return run_in_worker

    @staticmethod
    def _check_bindings(name: str, fn: Any, kind: str) -> None:
        for binding in fn.get_bindings():
            info = binding.get_dict_repr()
            if info["type"] == kind or (kind == "httpTrigger" and info["type"] == "http"):
                continue
            raise ValueError(f"function {name}: devhost does not support {info['type']} bindings")

    def _sync_invoker(self, name: str, user_function: Callable[..., Any], arg: str) -> Callable[[Any], Any]:
        """A plain callable running the user function (an `async def` on its own loop);
        it logs the traceback and re-raises, so the trigger decides what failure means."""
        timeout = self.settings.function_timeout

        def invoke(value: Any) -> Any:
            started = time.monotonic()
            try:
                result = run_function(user_function, arg, value)
            except Exception as exc:
                self._failures.failed(name, exc)
                raise
            else:
                self._failures.succeeded(name)
                return result
            finally:
                if timeout is not None and time.monotonic() - started > timeout.total_seconds():
                    self._log(f"host  {name}  ran longer than functionTimeout {timeout} "
                              "(the real host would have stopped it)")

        return invoke

    # -- settings ------------------------------------------------------------------------

    def _setting(self, name: str) -> str | None:
        return (self._settings or {}).get(name)

    def _resolve(self, text: str, function: str) -> str:
        def setting(m: re.Match[str]) -> str:
            value = self._setting(m.group(1))
            if value is None:
                raise ValueError(f"function {function}: setting {m.group(1)!r} (used as %{m.group(1)}%) is not set")
            return value

        return _SETTING_REF.sub(setting, text)

    def _connection(self, name: str | None, function: str) -> str:
        name = name or DEFAULT_CONNECTION
        for key in (name, "AzureWebJobs" + name):
            value = self._setting(key)
            if value:
                return value
        raise ValueError(f"function {function}: connection setting {name!r} is not set")

    def _log(self, line: str) -> None:
        with self._log_lock:
            self._sink(f"{datetime.now():%H:%M:%S} {line}")
