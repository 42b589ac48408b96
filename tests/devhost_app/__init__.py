"""Tiny FunctionApps for devhost's own tests, built per test so names never collide.

Every function records its calls in a `Recorder` (thread-safe), which also tracks how
many runs of each function overlap.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func


@dataclass(frozen=True)
class Call:
    function: str
    started: float
    ended: float
    data: dict[str, Any]


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _cv: threading.Condition = field(default_factory=threading.Condition)

    @contextmanager
    def run(self, function: str, **data: Any) -> Iterator[dict[str, Any]]:
        started = time.monotonic()
        with self._cv:
            self.active[function] = self.active.get(function, 0) + 1
            self.peak[function] = max(self.peak.get(function, 0), self.active[function])
        try:
            yield data
        finally:
            with self._cv:
                self.active[function] -= 1
                self.calls.append(Call(function, started, time.monotonic(), data))
                self._cv.notify_all()

    def of(self, function: str) -> list[Call]:
        with self._cv:
            return [c for c in self.calls if c.function == function]

    def wait_for(self, function: str, count: int, timeout: float = 10.0) -> list[Call]:
        """Block until `function` has finished `count` runs; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len([c for c in self.calls if c.function == function]) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{function}: {len(self.of_locked(function))} of {count} runs")
                self._cv.wait(left)
            return self.of_locked(function)

    def of_locked(self, function: str) -> list[Call]:
        return [c for c in self.calls if c.function == function]


def timer_app(rec: Recorder, *, schedule: str, run_on_startup: bool = False, sleep: float = 0.0) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.timer_trigger(schedule=schedule, arg_name="timer", run_on_startup=run_on_startup)
    def tick(timer: func.TimerRequest) -> None:
        with rec.run("tick", past_due=timer.past_due, status=timer.schedule_status):
            time.sleep(sleep)

    return app


def queue_app(
    rec: Recorder,
    *,
    queue: str,
    fail: bool = False,
    sleep: float = 0.0,
    connection: str = "AzureWebJobsStorage",
) -> func.FunctionApp:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name=queue, connection=connection)
    def consume(msg: func.QueueMessage) -> None:
        with rec.run("consume", id=msg.id, body=msg.get_body(), dequeue_count=msg.dequeue_count,
                     is_message=isinstance(msg, func.QueueMessage)):
            time.sleep(sleep)
            if fail:
                raise ValueError(f"cannot handle {msg.get_body()!r}")

    return app


def http_app(rec: Recorder) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="people/{person_id}", methods=["POST"])
    def sync_person(req: func.HttpRequest) -> func.HttpResponse:
        with rec.run("sync_person", route=dict(req.route_params), body=req.get_body(), params=dict(req.params)):
            payload = {"id": req.route_params["person_id"], "received": req.get_json()}
            return func.HttpResponse(json.dumps(payload), status_code=201, mimetype="application/json")

    @app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def health(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(0)
        return func.HttpResponse("ok", headers={"X-Devhost": "yes"})

    @app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail that must not leak")

    return app
