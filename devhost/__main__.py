"""`python -m devhost <command>`: run, demo, marketo, dataverse.

Each command lives in its own module and exposes `main(argv) -> int`; this file only
dispatches, so a slow import (uvicorn, trustme) is paid only by the command that needs it.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("devhost.run", "run the app in the local host with Azurite and both emulators"),
    "demo": ("devhost.demo", "play the scripted end-to-end demo and check every step"),
    "marketo": ("devhost.emulators.marketo", "serve the Marketo REST emulator"),
    "dataverse": ("devhost.emulators.dataverse", "serve the Dataverse Web API emulator"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m devhost {" + ",".join(COMMANDS) + "} [options]", file=sys.stderr)
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<10} {help_}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
