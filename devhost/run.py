"""`python -m devhost run`: Azurite, both emulators and the app, until SIGINT/SIGTERM.

Contract (other tools rely on it): flags --port (the app, default 7071), --marketo-port,
--dataverse-port, --ca-out FILE, --function-key KEY, --poll-seconds N, --storage-dir DIR,
--data-dir DIR (Azurite and both emulators on disk); the emulators accept
client id `leadsync-dev` / secret `leadsync-dev-secret` (Dataverse tenant `leadsync-dev`);
one line per service with its URL is printed once everything is ready.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from devhost.events import wire
from devhost.stack import DEV_FUNCTION_KEY, Stack, StackConfig


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m devhost run", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=7071, help="the app's HTTP port (default 7071)")
    p.add_argument("--marketo-port", type=int, default=0, help="Marketo emulator port (default: a free one)")
    p.add_argument("--dataverse-port", type=int, default=0, help="Dataverse emulator port (default: a free one)")
    p.add_argument("--ca-out", type=Path, default=None, help="write the Dataverse emulator's CA bundle here")
    p.add_argument("--function-key", default=DEV_FUNCTION_KEY, help="function key for the HTTP endpoint")
    p.add_argument("--poll-seconds", type=int, default=30, help="how often both pollers run (default 30)")
    p.add_argument("--storage-dir", type=Path, default=None,
                   help="keep Azurite's data in this folder (default: in memory)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="keep everything in this folder: Azurite's data under DIR/azurite and both emulators' "
                        "state, so a restart on the same folder finds it all again; each saves within ~5 s of a "
                        "change, so a kill loses at most the last few seconds (default: in memory)")
    p.add_argument("--connection-string", default=None,
                   help="use this storage account instead of starting Azurite")
    p.add_argument("--no-events", action="store_true",
                   help="do not wire the emulators' change events (Dataverse webhook steps, a Marketo trigger "
                        "campaign) to the app: changes then cross at the next poll only")
    args = p.parse_args(argv)
    if args.poll_seconds < 1:
        p.error("--poll-seconds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config = StackConfig(app_port=args.port, marketo_port=args.marketo_port, dataverse_port=args.dataverse_port,
                         ca_out=args.ca_out, function_key=args.function_key, poll_seconds=args.poll_seconds,
                         storage_location=args.storage_dir, connection_string=args.connection_string,
                         data_dir=args.data_dir)
    with Stack(config) as stack:
        print(f"app        {stack.app_url}/api/sync-person  (function key: {args.function_key})", flush=True)
        print(f"marketo    {stack.marketo.base_url}", flush=True)
        print(f"dataverse  {stack.dataverse.base_url}  (CA bundle: {stack.env['DATAVERSE_CA_BUNDLE']})", flush=True)
        if not args.no_events:
            wire(stack)
            print(f"events     Dataverse webhook and a Marketo campaign call {stack.app_url}/api/events/…",
                  flush=True)
        if stack.azurite is not None:
            print(f"azurite    queue {stack.azurite.queue_port}, table {stack.azurite.table_port}", flush=True)
        stop.wait()
        print("stopping…", flush=True)
    return 0
