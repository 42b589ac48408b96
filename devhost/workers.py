"""Language worker processes: the host's `FUNCTIONS_WORKER_PROCESS_COUNT`.

The Functions host keeps the triggers (HTTP listener, queue polling, timers) and runs each
invocation in one of its language worker processes; a CPU-bound Python app gets more than
one core only through more workers ("Improve throughput performance of Python apps in
Azure Functions"). devhost does the same: `WorkerPool(count, script_file)` starts `count`
processes that each import the app's script (function_app.py, as the Python worker does)
and index its functions; `invoke(name, value)` runs one invocation in the least busy
worker and returns its result or raises its exception. Each worker runs invocations on a
thread pool of its own, as the Python worker does for plain `def` functions, so one
worker holds many invocations that wait on I/O.

Trigger values cross the process boundary as plain data and are rebuilt as the same
`azure.functions` types on the other side. An exception that cannot be pickled comes
back as `WorkerError` with its type name and message. A worker that dies fails its
invocations in flight (`WorkerError`, as the real host reports a worker crash) and is
replaced.

Not reproduced: the host's plain round-robin order (devhost picks the worker with the
fewest invocations in flight, going round on ties) and `PYTHON_THREADPOOL_THREAD_COUNT`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from devhost.failures import FailureLog

__all__ = ["MAX_WORKERS", "WorkerError", "WorkerPool", "run_function", "worker_count"]

MAX_WORKERS = 10  # the host's limit for FUNCTIONS_WORKER_PROCESS_COUNT
COUNT_SETTING = "FUNCTIONS_WORKER_PROCESS_COUNT"
logger = logging.getLogger("devhost.workers")


class WorkerError(Exception):
    """An invocation failed in a worker in a way the worker could not hand back as is."""


def worker_count(value: str | None) -> int:
    """FUNCTIONS_WORKER_PROCESS_COUNT as the host reads it: 1 to 10, 1 when unset."""
    if value is None or not value.strip():
        return 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{COUNT_SETTING} must be a whole number from 1 to {MAX_WORKERS}, got {value!r}") from None
    if not 1 <= count <= MAX_WORKERS:
        raise ValueError(f"{COUNT_SETTING} must be from 1 to {MAX_WORKERS}, got {count}")
    return count


# -- trigger values as plain data ------------------------------------------------------
def pack(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, func.HttpRequest):
        return "http", {"method": value.method, "url": value.url, "headers": dict(value.headers),
                        "params": dict(value.params), "route_params": dict(value.route_params),
                        "body": value.get_body()}
    if isinstance(value, func.QueueMessage):
        return "queue", {"id": value.id, "body": value.get_body(), "dequeue_count": value.dequeue_count,
                         "expiration_time": value.expiration_time, "insertion_time": value.insertion_time,
                         "time_next_visible": value.time_next_visible, "pop_receipt": value.pop_receipt}
    if isinstance(value, func.TimerRequest):
        return "timer", {"past_due": value.past_due, "schedule_status": getattr(value, "schedule_status", None),
                         "schedule": getattr(value, "schedule", None)}
    raise TypeError(f"devhost cannot pass a {type(value).__name__} to a worker process")


def unpack(kind: str, data: dict[str, Any]) -> Any:
    if kind == "http":
        return func.HttpRequest(**data)
    if kind == "queue":
        return QueueMessage(**data)  # type: ignore[no-untyped-call]
    return TimerRequest(**data)


# -- the worker side -------------------------------------------------------------------
def _load_functions(script_file: str) -> dict[str, tuple[Any, str]]:
    path = Path(script_file).resolve()
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise ImportError(f"{path} must define exactly one FunctionApp, found {len(apps)}")
    functions: dict[str, tuple[Any, str]] = {}
    for fn in apps[0].get_functions():
        trigger = fn.get_trigger()
        if trigger is None:
            raise ImportError(f"function {fn.get_function_name()} has no trigger")
        functions[str(fn.get_function_name())] = (fn.get_user_function(), trigger.get_dict_repr()["name"])
    return functions


def run_function(user_function: Any, arg: str, value: Any) -> Any:
    """Call a user function with its trigger value; an `async def` runs on a loop of its own."""
    result = user_function(**{arg: value})
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling, else a WorkerError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return WorkerError(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _exit_with_parent(parent: int) -> None:
    """End this worker when the host process is gone (even killed by SIGKILL): the closed
    pipe ends the loop below, but an invocation still running would keep the worker alive."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(conn: Connection, script_file: str, log_levels: dict[str, int],
                 env: dict[str, str] | None = None) -> None:
    # Ctrl-C reaches the whole process group; the host decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if env is not None:  # this worker's own environment: the app settings the host handed over
        os.environ.clear()
        os.environ.update(env)
    _exit_with_parent(os.getppid())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [worker {os.getpid()}] %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    for name, level in log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    try:
        functions = _load_functions(script_file)
    except BaseException as exc:  # the host reports an app that fails to index, and stops
        conn.send(("failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()))
        return
    conn.send(("ready", sorted(functions)))
    send_lock = threading.Lock()
    threads = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="invocation")

    failures = FailureLog(logging.getLogger("devhost.worker"))

    def execute(call_id: int, name: str, kind: str, data: dict[str, Any]) -> None:
        try:
            user_function, arg = functions[name]
            reply: tuple[Any, ...] = (call_id, True, run_function(user_function, arg, unpack(kind, data)))
            failures.succeeded(name)
        except Exception as exc:
            failures.failed(name, exc)
            reply = (call_id, False, _portable(exc))
        with send_lock:
            try:
                conn.send(reply)
            except Exception as exc:  # an unpicklable return value
                conn.send((call_id, False, WorkerError(f"the result of {name} cannot be returned: {exc}")))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        threads.submit(execute, *message)
    threads.shutdown(wait=True)


# -- the host side ---------------------------------------------------------------------
@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    pending: dict[int, Future[Any]] = field(default_factory=dict)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    reader: threading.Thread | None = None
    alive: bool = True


class WorkerPool:
    """`count` worker processes running the functions of `script_file`'s FunctionApp.

    start() returns once every worker has indexed the app (ValueError if one could not).
    `env` (default: this process's environment) is each worker's environment, its app
    settings, as the Functions host gives its language workers theirs.
    """

    def __init__(self, count: int, script_file: Path | str, *, startup_timeout: float = 60.0,
                 env: Mapping[str, str] | None = None) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ValueError(f"count must be from 1 to {MAX_WORKERS}")
        self.count = count
        self.script_file = str(script_file)
        self.startup_timeout = startup_timeout
        self.env = dict(env) if env is not None else None
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._closing = False
        self.functions: list[str] | None = None  # the function names the workers indexed

    def start(self) -> WorkerPool:
        try:
            for _ in range(self.count):
                self._workers.append(self._spawn())
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> _Worker:
        parent, child = self._context.Pipe()
        levels = {name: logging.getLogger(name or None).level for name in ("", "leadsync")}
        process = self._context.Process(target=_worker_main, args=(child, self.script_file, levels, self.env),
                                        name="devhost-worker", daemon=True)
        process.start()
        child.close()
        if not parent.poll(self.startup_timeout):
            process.kill()
            raise ValueError(f"a worker process did not index {self.script_file} within {self.startup_timeout:g} s")
        try:
            status, detail = parent.recv()
        except EOFError:
            process.join(5)
            raise ValueError(f"a worker process exited (code {process.exitcode}) while indexing the app") from None
        if status != "ready":
            process.join(5)
            raise ValueError(f"a worker process could not index the app: {detail}")
        if self.functions is None:
            self.functions = list(detail)
        worker = _Worker(process, parent)
        worker.reader = threading.Thread(target=self._read, args=(worker,), name="devhost-worker-reader", daemon=True)
        worker.reader.start()
        return worker

    def invoke(self, name: str, value: Any) -> Any:
        """Run function `name` with its trigger value in a worker; its result, or its exception."""
        kind, data = pack(value)
        future: Future[Any] = Future()
        with self._lock:
            if self._closing:
                raise WorkerError("the host is stopping")
            live = [w for w in self._workers if w.alive]
            if not live:
                raise WorkerError("no worker process is running")
            call_id = next(self._ids)
            turn = call_id % len(live)  # ties go round the workers, so a light load reaches all of them
            worker = min(live[turn:] + live[:turn], key=lambda w: len(w.pending))
            worker.pending[call_id] = future
        try:
            with worker.send_lock:
                worker.conn.send((call_id, name, kind, data))
        except (OSError, ValueError) as exc:
            with self._lock:
                worker.pending.pop(call_id, None)
            raise WorkerError(f"could not reach worker process {worker.process.pid}: {exc}") from exc
        return future.result()

    def _read(self, worker: _Worker) -> None:
        while True:
            try:
                call_id, ok, payload = worker.conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = worker.pending.pop(call_id, None)
            if future is None:
                continue
            if ok:
                future.set_result(payload)
            else:
                future.set_exception(payload)
        self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        with self._lock:
            worker.alive = False
            orphans, worker.pending = worker.pending, {}
            replace = not self._closing
        worker.process.join(5)
        for future in orphans.values():
            future.set_exception(WorkerError(f"worker process {worker.process.pid} exited "
                                             f"(code {worker.process.exitcode}) during the invocation"))
        if not replace:
            return
        logger.warning("worker process %s exited (code %s); starting another", worker.process.pid,
                       worker.process.exitcode)
        try:
            fresh = self._spawn()
        except ValueError:
            logger.exception("could not replace worker process %s", worker.process.pid)
            return
        with self._lock:
            self._workers = [fresh if w is worker else w for w in self._workers]

    def pids(self) -> list[int]:
        with self._lock:
            return [w.process.pid for w in self._workers if w.alive]

    def stop(self, timeout: float = 30.0) -> None:
        """Let the workers finish what they hold (the triggers are stopped first), then end them."""
        with self._lock:
            self._closing = True
            workers = list(self._workers)
        for worker in workers:
            try:
                with worker.send_lock:
                    worker.conn.send(None)
            except (OSError, ValueError):
                pass
        for worker in workers:
            worker.process.join(timeout)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            if worker.reader is not None:
                worker.reader.join(5)
            worker.conn.close()
        self._workers = []
