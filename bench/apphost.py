"""The app alone in its own process: `python -m bench.apphost --port P`, settings from the env.

The benchmark starts Azurite and the emulators itself and runs the app here, so the peak
RSS it reads from /proc/<pid>/status is the app's and nothing else's. Protocol on stdio,
one line each way:

    stdout  "ready <http url>"            once every trigger is running
    stdin   "poll dataverse [wait s]" / "poll marketo [wait s]"  ->  stdout "done" | "timeout"
            (on "timeout" the poll goes on in the app; the default wait is an hour)
    stdin   "quit" or end of input        ->  the host stops and the process exits
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from devhost.host import FunctionHost
from devhost.stack import load_app

ROOT = Path(__file__).resolve().parent.parent
TIMERS = {"dataverse": "poll_dataverse_changes", "marketo": "poll_marketo_changes"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apphost", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--function-key", required=True)
    args = parser.parse_args(argv)
    host = FunctionHost(load_app(), connection_string=os.environ["AzureWebJobsStorage"], host_json=ROOT / "host.json",
                        function_key=args.function_key, http_port=args.port, script_file=ROOT / "function_app.py",
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    host.start()
    try:
        print(f"ready {host.http_url}", flush=True)
        for line in sys.stdin:
            command = line.split()
            if command[:1] == ["quit"]:
                break
            if len(command) in (2, 3) and command[0] == "poll" and command[1] in TIMERS:
                wait = float(command[2]) if len(command) == 3 else 3600.0
                finished = host.run_timer(TIMERS[command[1]], wait=wait)
                print("done" if finished else "timeout", flush=True)
            else:
                print(f"unknown command {line.strip()!r}", flush=True)
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
