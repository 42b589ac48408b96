"""A counting HTTP proxy in front of Azurite: `python -m bench.storageproxy --target PORT ...`.

The multi-instance phase points the app processes at it (their `AzureWebJobsStorage` names
its ports) to count their storage requests without touching the app: every HTTP/1.1
request is framed (headers, then `Content-Length` or chunked body), counted under its
resource (the table, queue or blob container the path names; for a table `$batch`, the
table its first sub-request names) and forwarded; answers flow back unparsed. Counting
here costs a few tens of microseconds a request in a process of its own, off the app's and
the emulators' GIL. Protocol on stdio, one line each way:

    stdout  "ready <port> ..."        one listening port per --target, in the same order
    stdin   "stats"                   ->  stdout {"total": n, "by_resource": {name: n}} as one JSON line
    stdin   "reset"                   ->  stdout "done" (the counts start again from zero)
    stdin   "quit" or end of input    ->  the process exits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_BATCH_TARGET = re.compile(rb"(?:POST|PUT|PATCH|MERGE|DELETE|GET) https?://[^/\s]+/[^/\s]+/([A-Za-z0-9]+)")


def resource_of(request_line: bytes, body: bytes) -> str:
    """The table, queue or container a storage request addresses ("$batch" resolved from its body).

    Paths are `/<account>/<resource>...` (Azurite's path-style URLs); a table's entity path
    is `<table>(PartitionKey=...)`, so the name ends at the first `(`, `/` or `?`.
    """
    parts = request_line.split(b" ")
    path = parts[1] if len(parts) > 1 else b""
    segments = path.split(b"?", 1)[0].split(b"/")
    name = segments[2] if len(segments) > 2 else b""
    name = name.split(b"(", 1)[0]
    if name == b"$batch":
        found = _BATCH_TARGET.search(body)
        name = b"$batch:" + found.group(1) if found else name
    return name.decode("latin-1") or "/"


class Counts:
    def __init__(self) -> None:
        self.by_resource: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, resource: str) -> None:
        with self.lock:
            self.by_resource[resource] += 1

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {"total": sum(self.by_resource.values()), "by_resource": dict(self.by_resource)}

    def reset(self) -> None:
        with self.lock:
            self.by_resource.clear()


async def _read_body(reader: asyncio.StreamReader, headers: bytes) -> bytes:
    lowered = headers.lower()
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", lowered)
    if length:
        return await reader.readexactly(int(length.group(1)))
    if re.search(rb"\r\ntransfer-encoding:\s*chunked", lowered):
        chunks = []
        while True:
            size_line = await reader.readline()
            chunks.append(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    line = await reader.readline()
                    chunks.append(line)
                    if line in (b"\r\n", b""):
                        return b"".join(chunks)
            chunks.append(await reader.readexactly(size + 2))
    return b""


async def _requests(client: asyncio.StreamReader, upstream: asyncio.StreamWriter, counts: Counts) -> None:
    try:
        while True:
            headers = await client.readuntil(b"\r\n\r\n")
            body = await _read_body(client, headers)
            counts.add(resource_of(headers.split(b"\r\n", 1)[0], body))
            upstream.write(headers + body)
            await upstream.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        upstream.close()


async def _answers(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    try:
        while chunk := await upstream.read(65536):
            client.write(chunk)
            await client.drain()
    except ConnectionError:
        pass
    finally:
        client.close()


async def _serve(targets: list[int], counts: Counts) -> list[asyncio.Server]:
    servers = []
    for target in targets:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int = target) -> None:
            up_reader, up_writer = await asyncio.open_connection(HOST, target, limit=1 << 24)
            await asyncio.gather(_requests(reader, up_writer, counts), _answers(up_reader, writer))

        servers.append(await asyncio.start_server(handle, HOST, 0, limit=1 << 24))
    return servers


class StorageProxy:
    """This proxy in a child process, in front of the Azurite that `connection` names."""

    def __init__(self, connection: str) -> None:
        ports = [int(p) for p in re.findall(r"(?:Blob|Queue|Table)Endpoint=http://[^:]+:(\d+)/", connection)]
        if len(ports) != 3:
            raise ValueError("the connection string must name Azurite's blob, queue and table endpoints")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.storageproxy", *[f"--target={p}" for p in ports]],
            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"the storage proxy did not start: {line!r}")
        self.connection = connection
        for target, port in zip(ports, line.split()[1:], strict=True):
            self.connection = self.connection.replace(f":{target}/", f":{port}/")

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline()

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self._ask("stats")))

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        from bench.system import stop_process  # here, so the proxy process itself stays small

        stop_process(self.process)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storageproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, action="append", required=True, help="an Azurite port (repeat)")
    args = parser.parse_args(argv)
    counts = Counts()
    loop = asyncio.new_event_loop()
    servers = loop.run_until_complete(_serve(args.target, counts))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    print("ready " + " ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command == "stats":
            print(json.dumps(counts.snapshot()), flush=True)
        elif command == "reset":
            counts.reset()
            print("done", flush=True)
        else:
            print(f"unknown command {command!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
