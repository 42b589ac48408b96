"""A function app script for devhost's worker-process tests (FUNCTIONS_WORKER_PROCESS_COUNT).

Worker processes import it from its file, as the Python worker imports function_app.py,
so it is one module-level FunctionApp. Functions report the process they ran in; the
queue function writes what it consumed to the queue named by WORKER_TEST_OUT, since a
recorder in the test's process cannot see into a worker.
"""

from __future__ import annotations

import json
import os

import azure.functions as func
from azure.storage.queue import QueueClient

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="where/{name}", methods=["POST"])
def where(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({
        "pid": os.getpid(), "method": req.method, "name": req.route_params.get("name"),
        "q": req.params.get("q"), "header": req.headers.get("x-test"), "body": req.get_body().decode(),
    }), status_code=201, mimetype="application/json", headers={"x-from": "worker"})


@app.route(route="boom", methods=["GET"])
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("boom in a worker")


@app.route(route="die", methods=["GET"])
def die(req: func.HttpRequest) -> func.HttpResponse:
    os._exit(3)  # a worker process that crashes mid-invocation


@app.queue_trigger(arg_name="msg", queue_name="%WORKER_TEST_QUEUE%", connection="AzureWebJobsStorage")
def consume(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    if body == "bad":
        raise ValueError(f"cannot take {body!r}")
    out = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], os.environ["WORKER_TEST_OUT"])
    with out:
        out.send_message(json.dumps({"pid": os.getpid(), "body": body, "dequeue_count": msg.dequeue_count}))
