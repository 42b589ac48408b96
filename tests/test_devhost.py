"""devhost.FunctionHost end to end against real Azurite: timers, queues, HTTP, host.json."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devhost.host import FunctionHost
from devhost.hostjson import QueueSettings, parse_timespan, read_host_json
from devhost.http import compile_route
from devhost.queues import QueueListener
from devhost.timers import CronSchedule, IntervalSchedule, parse_schedule
from shared import config
from shared.errors import DataverseTransient, MarketoTransient
from tests.devhost_app import Recorder, http_app, queue_app, timer_app

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-function-key"


def host_json(**queues: Any) -> dict[str, Any]:
    settings = {"visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.500"}
    settings.update(queues)
    return {"version": "2.0", "extensions": {"queues": settings}}


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def run_host(storage_connection_string: str, lines: list[str]) -> Iterator[Callable[..., FunctionHost]]:
    """Start a FunctionHost for the test; every host is stopped at teardown."""
    hosts: list[FunctionHost] = []

    def start(app: func.FunctionApp, settings: dict[str, Any] | None = None, **kwargs: Any) -> FunctionHost:
        host = FunctionHost(
            app,
            connection_string=storage_connection_string,
            host_json=settings or host_json(),
            function_key=KEY,
            log=lines.append,
            **kwargs,
        )
        hosts.append(host)
        return host.start()

    yield start
    for host in hosts:
        host.stop()


def queue_client(conn: str, name: str, *, encode: bool = True) -> QueueClient:
    client = QueueClient.from_connection_string(
        conn, name, message_encode_policy=TextBase64EncodePolicy() if encode else None
    )
    try:
        client.create_queue()
    except ResourceExistsError:  # the host may have created it first
        pass
    return client


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def stored_count(client: QueueClient) -> int:
    """Messages in the queue, visible or not."""
    return int(client.get_queue_properties().approximate_message_count or 0)


# -- host.json -------------------------------------------------------------------------


def test_product_host_json_is_read_with_its_queue_settings() -> None:
    settings = read_host_json(ROOT / "host.json")
    raw = json.loads((ROOT / "host.json").read_text())
    assert raw["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}
    assert settings.function_timeout is not None and settings.function_timeout.total_seconds() == 600
    assert settings.queues == QueueSettings(
        batch_size=8,
        new_batch_threshold=4,
        max_dequeue_count=5,
        visibility_timeout=parse_timespan("00:00:10"),
        max_polling_interval=parse_timespan("00:00:01"),
        message_encoding="base64",
    )


def test_host_json_defaults_are_the_hosts() -> None:
    settings = read_host_json({"version": "2.0", "extensions": {"queues": {"BatchSize": 10}}})
    assert settings.route_prefix == "api"
    assert settings.function_timeout is None
    assert settings.queues.batch_size == 10
    assert settings.queues.new_batch_threshold == 5
    assert settings.queues.max_dequeue_count == 5
    assert settings.queues.visibility_timeout.total_seconds() == 0
    assert settings.queues.max_polling_interval.total_seconds() == 60
    assert settings.queues.message_encoding == "base64"


@pytest.mark.parametrize(
    "queues, key",
    [
        ({"batchSize": 33}, "batchSize"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
        ({"maxPollingInterval": "00:00:00.050"}, "maxPollingInterval"),
        ({"visibilityTimeout": "ten seconds"}, "visibilityTimeout"),
    ],
)
def test_bad_host_json_fails_naming_the_key(queues: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        read_host_json({"version": "2.0", "extensions": {"queues": queues}})


def test_schedules_parse_as_ncrontab_or_timespan() -> None:
    assert isinstance(parse_schedule("0 */5 * * * *"), CronSchedule)
    assert isinstance(parse_schedule("00:00:05"), IntervalSchedule)
    with pytest.raises(ValueError, match="six fields"):
        parse_schedule("*/5 * * * *")


# -- timers ------------------------------------------------------------------------------


def test_run_on_startup_fires_immediately(run_host: Callable[..., FunctionHost]) -> None:
    rec = Recorder()
    started = time.monotonic()
    run_host(timer_app(rec, schedule="0 0 0 1 1 *", run_on_startup=True))
    (call,) = rec.wait_for("tick", 1, timeout=2)
    assert call.started - started < 0.5
    assert call.data["past_due"] is False
    assert {"Last", "Next", "LastUpdated"} <= set(call.data["status"])


def test_timer_fires_every_second(run_host: Callable[..., FunctionHost], lines: list[str]) -> None:
    rec = Recorder()
    run_host(timer_app(rec, schedule="*/1 * * * * *"))
    calls = rec.wait_for("tick", 3, timeout=5)
    gaps = [b.started - a.started for a, b in zip(calls, calls[1:], strict=False)]
    assert all(0.7 < gap < 1.3 for gap in gaps), gaps
    assert not any(c.data["past_due"] for c in calls)
    assert any("timer  tick  past_due=False  ok" in line for line in lines), lines


def test_a_failing_timer_logs_one_line_per_failure_and_its_traceback_when_the_error_changes(
        run_host: Callable[..., FunctionHost], lines: list[str], caplog: pytest.LogCaptureFixture) -> None:
    errors = [*(MarketoTransient("606", f"rate limit (requestId {i})") for i in ("a1", "b2", "c3")),
              DataverseTransient(503, "0x80044151", "busy")]
    rec = Recorder()
    app = func.FunctionApp()

    @app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer")
    def poll(timer: func.TimerRequest) -> None:
        with rec.run("poll"):
            pass
        if len(rec.of("poll")) <= len(errors):
            raise errors[len(rec.of("poll")) - 1]

    caplog.set_level("DEBUG", logger="devhost.host")
    run_host(app)
    rec.wait_for("poll", 6, timeout=10)
    failed = [r for r in caplog.records if r.name == "devhost.host" and r.levelname == "ERROR"][:4]
    assert ["[606]" in r.getMessage() for r in failed] == [True, True, True, False]
    assert "DataverseTransient [0x80044151]" in failed[3].getMessage()
    # The traceback comes with the first failure and with a changed error; repeats get one line.
    assert [r.exc_info is not None for r in failed] == [True, False, False, True]
    assert all("\n" not in r.getMessage() for r in failed)
    debug = [r for r in caplog.records if r.name == "devhost.host" and r.levelname == "DEBUG" and r.exc_info]
    assert len(debug) >= 2  # each repeat's traceback is still there at DEBUG
    assert sum("timer  poll  past_due=False  FAILED (MarketoTransient [606]" in line for line in lines) >= 3, lines


def test_overrunning_timer_never_overlaps_and_is_past_due(run_host: Callable[..., FunctionHost]) -> None:
    rec = Recorder()
    run_host(timer_app(rec, schedule="*/1 * * * * *", sleep=1.5))
    calls = rec.wait_for("tick", 3, timeout=8)
    assert rec.peak["tick"] == 1
    assert all(b.started >= a.ended for a, b in zip(calls, calls[1:], strict=False))
    assert calls[0].data["past_due"] is False
    assert all(c.data["past_due"] for c in calls[1:])


def test_a_timer_runs_on_demand_without_overlapping(run_host: Callable[..., FunctionHost]) -> None:
    rec = Recorder()
    app = timer_app(rec, schedule="0 0 0 1 1 *", sleep=0.3)  # next scheduled run: next new year

    @app.route(route="ping", auth_level=func.AuthLevel.ANONYMOUS)
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    host = run_host(app)
    assert host.run_timer("tick", wait=5) is True
    assert len(rec.of("tick")) == 1
    # The real host's admin endpoint: needs the key, answers 202, and queues the run.
    assert httpx.post(f"{host.http_url}/admin/functions/tick").status_code == 401
    assert httpx.post(f"{host.http_url}/admin/functions/tick", headers={"x-functions-key": KEY}).status_code == 202
    assert httpx.post(f"{host.http_url}/admin/functions/tick", headers={"x-functions-key": KEY}).status_code == 202
    assert httpx.post(f"{host.http_url}/admin/functions/nope", headers={"x-functions-key": KEY}).status_code == 404
    rec.wait_for("tick", 3, timeout=5)
    assert rec.peak["tick"] == 1
    with pytest.raises(KeyError):
        host.run_timer("nope")


# -- queues ------------------------------------------------------------------------------


def test_queue_message_is_delivered_decoded_then_deleted(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str, lines: list[str]
) -> None:
    queue = f"{name_prefix}-inbox"
    rec = Recorder()
    before = os.environ.get("DEVHOST_TEST_INBOX")
    host = run_host(queue_app(rec, queue="%DEVHOST_TEST_INBOX%"), env={"DEVHOST_TEST_INBOX": queue})
    assert config.app_env()["DEVHOST_TEST_INBOX"] == queue  # handed to the app in this process
    assert os.environ.get("DEVHOST_TEST_INBOX") == before  # not written into the host's environment
    sender = queue_client(storage_connection_string, queue)
    body = json.dumps({"personId": 42, "email": "a@example.com"})
    sender.send_message(body)

    (call,) = rec.wait_for("consume", 1)
    assert call.data["body"] == body.encode()
    assert call.data["dequeue_count"] == 1
    assert call.data["is_message"] is True
    wait_until(lambda: stored_count(sender) == 0)
    wait_until(lambda: any("msg=" in line and "dequeue=1  ok" in line for line in lines))

    host.stop()
    assert config.app_env() is os.environ  # stop() took the settings back


def test_message_encoding_none_passes_the_text_through(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str
) -> None:
    queue = f"{name_prefix}-plain"
    rec = Recorder()
    run_host(queue_app(rec, queue=queue), host_json(messageEncoding="none"))
    queue_client(storage_connection_string, queue, encode=False).send_message("plain <text> & more")
    (call,) = rec.wait_for("consume", 1)
    assert call.data["body"] == b"plain <text> & more"


@pytest.mark.parametrize("max_dequeue", [2, 3])
def test_failing_message_is_poisoned_after_max_dequeue_count(
    run_host: Callable[..., FunctionHost],
    storage_connection_string: str,
    name_prefix: str,
    lines: list[str],
    max_dequeue: int,
) -> None:
    queue = f"{name_prefix}-fails"
    rec = Recorder()
    run_host(queue_app(rec, queue=queue, fail=True), host_json(maxDequeueCount=max_dequeue))
    sender = queue_client(storage_connection_string, queue)
    sender.send_message('{"bad": true}')
    poison = QueueClient.from_connection_string(storage_connection_string, f"{queue}-poison")

    wait_until(lambda: stored_count(poison) == 1)
    (moved,) = poison.peek_messages()
    assert moved.content == base64.b64encode(b'{"bad": true}').decode()  # still encoded, unchanged
    assert stored_count(sender) == 0
    time.sleep(0.7)  # nothing is retried after poisoning
    calls = rec.of("consume")
    assert [c.data["dequeue_count"] for c in calls] == list(range(1, max_dequeue + 1))
    assert any(f"moved to {queue}-poison" in line and "ValueError" in line for line in lines), lines


def test_undecodable_message_goes_to_poison_without_running(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str
) -> None:
    queue = f"{name_prefix}-garbled"
    rec = Recorder()
    run_host(queue_app(rec, queue=queue))
    queue_client(storage_connection_string, queue, encode=False).send_message("not base64 at all!")
    poison = QueueClient.from_connection_string(storage_connection_string, f"{queue}-poison")
    wait_until(lambda: stored_count(poison) == 1)
    assert poison.peek_messages()[0].content == "not base64 at all!"
    assert rec.of("consume") == []


@pytest.mark.parametrize("batch_size, threshold", [(3, 0), (2, 1)])
def test_concurrency_is_bounded_by_batch_size_and_threshold(
    run_host: Callable[..., FunctionHost],
    storage_connection_string: str,
    name_prefix: str,
    batch_size: int,
    threshold: int,
) -> None:
    queue = f"{name_prefix}-batch"
    sender = queue_client(storage_connection_string, queue)
    for i in range(8):
        sender.send_message(json.dumps({"n": i}))
    rec = Recorder()
    run_host(queue_app(rec, queue=queue, sleep=0.3), host_json(batchSize=batch_size, newBatchThreshold=threshold))
    calls = rec.wait_for("consume", 8)
    assert sorted(json.loads(c.data["body"])["n"] for c in calls) == list(range(8))
    assert 2 <= rec.peak["consume"] <= batch_size + threshold
    if threshold == 0:
        assert rec.peak["consume"] == batch_size


def test_stop_waits_for_runs_in_flight(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str
) -> None:
    queue = f"{name_prefix}-slow"
    rec = Recorder()
    host = run_host(queue_app(rec, queue=queue, sleep=1.0))
    sender = queue_client(storage_connection_string, queue)
    sender.send_message("{}")
    wait_until(lambda: rec.active.get("consume", 0) == 1)
    host.stop()
    assert len(rec.of("consume")) == 1
    assert stored_count(sender) == 0


def test_unsupported_bindings_are_refused(storage_connection_string: str) -> None:
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="in", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="out", connection="AzureWebJobsStorage")
    def relay(msg: func.QueueMessage, out: func.Out[str]) -> None:
        out.set(msg.get_body().decode())

    host = FunctionHost(app, connection_string=storage_connection_string, host_json=host_json(), function_key=KEY)
    with pytest.raises(ValueError, match="relay: devhost does not support queue bindings"):
        host.start()


# -- HTTP ----------------------------------------------------------------------------------


def test_http_keys_methods_routes_and_errors(run_host: Callable[..., FunctionHost], lines: list[str]) -> None:
    rec = Recorder()
    host = run_host(http_app(rec))
    person = {"email": "a@example.com"}
    with httpx.Client(base_url=host.http_url) as client:
        assert client.post("/api/people/42", json=person).status_code == 401
        assert client.post("/api/people/42", json=person, headers={"x-functions-key": "wrong"}).status_code == 401
        assert client.post("/api/people/42?code=wrong", json=person).status_code == 401

        by_header = client.post("/api/people/42", json=person, headers={"x-functions-key": KEY})
        assert by_header.status_code == 201
        assert by_header.headers["content-type"] == "application/json"
        assert by_header.json() == {"id": "42", "received": person}
        by_code = client.post(f"/api/people/7?code={KEY}&source=test", json=person)
        assert by_code.status_code == 201 and by_code.json()["id"] == "7"

        wrong_method = client.get("/api/people/42", headers={"x-functions-key": KEY})
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert client.get("/api/nowhere").status_code == 404
        assert client.get("/people/42").status_code == 404

        health = client.get("/api/health")
        assert (health.status_code, health.text) == (200, "ok")
        assert health.headers["content-type"] == "text/plain; charset=utf-8"
        assert health.headers["x-devhost"] == "yes"

        boom = client.get("/api/boom")
        assert boom.status_code == 500
        assert boom.json()["error"] == "Internal Server Error"
        assert "secret" not in boom.text

    calls = rec.of("sync_person")
    assert [c.data["route"] for c in calls] == [{"person_id": "42"}, {"person_id": "7"}]
    assert calls[1].data["params"] == {"code": KEY, "source": "test"}
    assert any("http  sync_person  POST /api/people/42  201" in line for line in lines), lines


def test_request_paths_are_logged_with_control_characters_escaped(run_host: Callable[..., FunctionHost],
                                                                    lines: list[str]) -> None:
    host = run_host(http_app(Recorder()))
    assert httpx.get(f"{host.http_url}/api/no%00where%7Fforged%1B[31m").status_code == 404
    (line,) = [line for line in lines if "where" in line]
    assert "http  -  GET /api/no\\x00where\\x7fforged\\x1b[31m  404" in line, line
    assert line.isprintable(), line


def test_route_templates_compile_like_the_hosts() -> None:
    pattern, names = compile_route("people/{id:int}/tags/{tag?}", "api")
    assert names == ("id", "tag")
    assert pattern.match("/api/people/42/tags/vip").groups() == ("42", "vip")
    assert pattern.match("/API/People/42/tags").groups() == ("42", None)
    assert pattern.match("/api/people/abc/tags") is None
    catch_all, _ = compile_route("files/{*path}", "")
    assert catch_all.match("/files/a/b/c.txt").group("g0") == "a/b/c.txt"


def test_a_long_run_keeps_its_message_hidden_by_renewing_the_lease(
    storage_connection_string: str, name_prefix: str
) -> None:
    queue = f"{name_prefix}-lease"
    sender = queue_client(storage_connection_string, queue)
    runs: list[int] = []

    def slow(message: func.QueueMessage) -> None:
        runs.append(message.dequeue_count)
        time.sleep(3.0)  # longer than the 2 s lease: only renewals keep it hidden

    listener = QueueListener(
        "slow",
        connection_string=storage_connection_string,
        queue_name=queue,
        settings=QueueSettings(batch_size=1, new_batch_threshold=0, max_polling_interval=parse_timespan("00:00:01")),
        invoke=slow,
        log=lambda line: None,
        lease=timedelta(seconds=2),
    )
    listener.start()
    try:
        sender.send_message("{}")
        wait_until(lambda: len(runs) == 1)
        time.sleep(2.5)
        assert sender.peek_messages() == []  # still hidden past the first lease
        wait_until(lambda: stored_count(sender) == 0)
    finally:
        listener.stop()
        listener.join(5)
    assert runs == [1]


def test_a_stopped_host_starts_again(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str
) -> None:
    queue = f"{name_prefix}-again"
    rec = Recorder()
    host = run_host(queue_app(rec, queue=queue))
    host.stop()
    host.start()
    queue_client(storage_connection_string, queue).send_message("{}")
    rec.wait_for("consume", 1)


# -- worker processes (FUNCTIONS_WORKER_PROCESS_COUNT) ---------------------------------
WORKER_APP = ROOT / "tests" / "devhost_app" / "worker_app.py"


def load_worker_app() -> func.FunctionApp:
    """A fresh copy of the worker app: azure-functions indexes an app object only once."""
    spec = importlib.util.spec_from_file_location(f"worker_app_{uuid.uuid4().hex}", WORKER_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: func.FunctionApp = module.app
    return app


def worker_host(run_host: Callable[..., FunctionHost], name_prefix: str, **env: str) -> FunctionHost:
    return run_host(load_worker_app(), host_json(maxDequeueCount=2), script_file=WORKER_APP,
                    env={"FUNCTIONS_WORKER_PROCESS_COUNT": "2", "WORKER_TEST_QUEUE": f"{name_prefix}-in",
                         "WORKER_TEST_OUT": f"{name_prefix}-out", **env})


def test_worker_processes_serve_http_with_the_request_intact(
    run_host: Callable[..., FunctionHost], name_prefix: str
) -> None:
    host = worker_host(run_host, name_prefix)
    workers = set(host.worker_pids)
    assert len(workers) == 2 and os.getpid() not in workers
    with httpx.Client(timeout=30) as http:
        replies = [http.post(f"{host.http_url}/api/where/Ann", params={"q": "1 2"}, content="héllo".encode(),
                             headers={"x-functions-key": KEY, "x-test": "yes"}) for _ in range(6)]
    for r in replies:
        assert r.status_code == 201 and r.headers["x-from"] == "worker"
        assert r.headers["content-type"] == "application/json"
        assert {k: v for k, v in r.json().items() if k != "pid"} == {
            "method": "POST", "name": "Ann", "q": "1 2", "header": "yes", "body": "héllo"}
    assert {r.json()["pid"] for r in replies} == workers  # sequential calls go round both workers


def test_a_failing_or_crashing_worker_gives_500_and_the_worker_is_replaced(
    run_host: Callable[..., FunctionHost], name_prefix: str, lines: list[str]
) -> None:
    host = worker_host(run_host, name_prefix)
    before = set(host.worker_pids)
    with httpx.Client(timeout=30, headers={"x-functions-key": KEY}) as http:
        failed = http.get(f"{host.http_url}/api/boom")
        assert failed.status_code == 500 and failed.json()["function"] == "boom"
        assert "boom in a worker" not in failed.text  # the traceback stays in the log
        crashed = http.get(f"{host.http_url}/api/die")
        assert crashed.status_code == 500
        wait_until(lambda: len(host.worker_pids) == 2 and set(host.worker_pids) != before, timeout=60)
        assert len(set(host.worker_pids) & before) == 1  # one replaced, the other untouched
        after = {http.post(f"{host.http_url}/api/where/x").json()["pid"] for _ in range(4)}
    assert after == set(host.worker_pids)


def test_ctrl_c_leaves_the_workers_to_the_host(run_host: Callable[..., FunctionHost], name_prefix: str) -> None:
    host = worker_host(run_host, name_prefix)
    workers = set(host.worker_pids)
    for pid in workers:  # Ctrl-C in a terminal reaches every process of the group
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert set(host.worker_pids) == workers
    with httpx.Client(timeout=30, headers={"x-functions-key": KEY}) as http:
        assert {http.post(f"{host.http_url}/api/where/x").json()["pid"] for _ in range(4)} == workers


def test_queue_messages_run_in_workers_and_a_failure_is_poisoned(
    run_host: Callable[..., FunctionHost], storage_connection_string: str, name_prefix: str, lines: list[str]
) -> None:
    host = worker_host(run_host, name_prefix)
    sender = queue_client(storage_connection_string, f"{name_prefix}-in")
    out = queue_client(storage_connection_string, f"{name_prefix}-out", encode=False)
    for body in ["a", "b", "bad", "c", "d"]:
        sender.send_message(body)
    poison = QueueClient.from_connection_string(storage_connection_string, f"{name_prefix}-in-poison")
    wait_until(lambda: stored_count(out) == 4 and stored_count(poison) == 1, timeout=60)
    done = [json.loads(m.content) for m in out.receive_messages(messages_per_page=32)]
    assert sorted(d["body"] for d in done) == ["a", "b", "c", "d"]
    assert {d["pid"] for d in done} <= set(host.worker_pids)
    assert any(f"moved to {name_prefix}-in-poison" in line and "ValueError" in line for line in lines), lines


def test_worker_count_is_checked_before_anything_starts(
    storage_connection_string: str, name_prefix: str
) -> None:
    for env, script, complaint in (({"FUNCTIONS_WORKER_PROCESS_COUNT": "11"}, WORKER_APP, "from 1 to 10"),
                                   ({"FUNCTIONS_WORKER_PROCESS_COUNT": "two"}, WORKER_APP, "whole number"),
                                   ({"FUNCTIONS_WORKER_PROCESS_COUNT": "2"}, None, "script file"),
                                   ({"FUNCTIONS_WORKER_PROCESS_COUNT": "2"}, WORKER_APP, "pass the app")):
        host = FunctionHost(func.FunctionApp(), connection_string=storage_connection_string, host_json=host_json(),
                            function_key=KEY, env=env, script_file=script)
        with pytest.raises(ValueError, match=complaint):
            host.start()
        assert "FUNCTIONS_WORKER_PROCESS_COUNT" not in os.environ  # never written into this process's environment
        assert config.app_env() is os.environ  # the failed start() took the settings back
