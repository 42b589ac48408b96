"""On-disk state for the emulators (`python -m devhost run --data-dir DIR`), as Azurite has.

Each emulator's store is saved as one snapshot file, `DIR/marketo.pickle` and
`DIR/dataverse.pickle`, and loaded from it at start. Why snapshots and not a journal of
writes: a journal needs a hook in every write path of both emulators, and replaying
requests cannot reproduce the ids a server generates; a snapshot needs no hook, because
each store already keeps a counter that moves on every change (the Dataverse row
version, the Marketo activity log), so the saver can tell cheaply whether anything
changed. Cost: nothing without `--data-dir` (tests, benchmarks); with it, one pickle of
a store only when that counter moved, at most every `every_s` seconds, plus one at a
clean stop. A snapshot of 100,000 people took ~3 s (Dataverse) and ~14 s (Marketo, its
activity log is most of it) on a busy 2-core machine, during which that emulator waits;
so the pause after a save is at least 10 times the save's duration, which keeps the saver
under ~10 % of the time. A SIGKILL loses the emulator changes since the last snapshot
(at most `every_s` seconds' worth for a small data set).

Writes are atomic: the snapshot goes to a temporary file in DIR, is fsynced, then
renamed over the old one, so a kill mid-write leaves the previous snapshot whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("devhost.persist")
FORMAT = 1  # bump when a snapshot's layout changes; an older file is then refused, not misread
_SKIP = frozenset({"lock", "clock"})  # a lock cannot be pickled; the clock is saved as its offset


def _state(store: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(store).items() if k not in _SKIP}


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Target:
    """One emulator: how to tell it changed, take its snapshot, and put a snapshot back."""

    path: Path
    signature: Callable[[], Any]
    snapshot: Callable[[], bytes]
    restore: Callable[[dict[str, Any]], None]
    saved: Any = None


def marketo_target(directory: Path, emulator: Any) -> Target:
    """The Marketo emulator (a `MarketoEmulator`): its store is only touched on its event
    loop, so the snapshot is taken there, between two requests."""
    core = emulator.core

    def signature() -> Any:
        store = core.store
        return (id(store), len(store.log), store.next_lead_id, len(store.types), core.clock.offset_s)

    def pickled() -> bytes:
        return pickle.dumps({"format": FORMAT, "store": _state(core.store), "clock_offset_s": core.clock.offset_s},
                            protocol=pickle.HIGHEST_PROTOCOL)

    async def on_loop() -> bytes:
        return pickled()

    def snapshot() -> bytes:
        server = emulator._server  # the loop serving it: the one thread that changes the store
        if server is None or not server.servers:
            return pickled()
        loop = server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(60)

    def restore(doc: dict[str, Any]) -> None:
        core.clock.offset_s = doc["clock_offset_s"]
        vars(core.store).update(doc["store"])

    return Target(directory / "marketo.pickle", signature, snapshot, restore)


def dataverse_target(directory: Path, emulator: Any) -> Target:
    """The Dataverse emulator (a started `DataverseEmulator`): its store's lock guards every change."""
    store = emulator.emulator.store

    def signature() -> Any:
        return (store.version, sum(len(k) for k in store.keys.values()))

    def snapshot() -> bytes:
        with store.lock:
            return pickle.dumps({"format": FORMAT, "store": _state(store)}, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(doc: dict[str, Any]) -> None:
        with store.lock:
            vars(store).update(doc["store"])

    return Target(directory / "dataverse.pickle", signature, snapshot, restore)


class EmulatorState:
    """Loads the emulators' snapshots from `directory` and keeps them saved while running."""

    def __init__(self, directory: Path, targets: list[Target], *, every_s: float = 2.0) -> None:
        self.directory = directory
        self.targets = targets
        self.every_s = every_s
        self._pause = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load(self) -> list[str]:
        """Restore every snapshot that exists; the names of the files loaded."""
        loaded = []
        for t in self.targets:
            if not t.path.exists():
                continue
            doc = pickle.loads(t.path.read_bytes())  # our own file, in a folder the user chose
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise RuntimeError(f"{t.path} is not an emulator snapshot of format {FORMAT}")
            t.restore(doc)
            t.saved = t.signature()
            loaded.append(t.path.name)
        return loaded

    def save(self) -> int:
        """Write the snapshot of every emulator that changed since its last one; how many were written."""
        written = 0
        with self._lock:  # the saver thread and a final save at stop never interleave
            started = time.monotonic()
            for t in self.targets:
                mark = t.signature()
                if mark == t.saved:
                    continue
                _write_atomically(t.path, t.snapshot())
                t.saved = mark
                written += 1
            self._pause = max(self.every_s, 10 * (time.monotonic() - started))
        return written

    def start(self) -> EmulatorState:
        self._thread = threading.Thread(target=self._run, name="emulator-state", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._pause):
            try:
                self.save()
            except Exception:  # a full disk must not stop the emulators; the next round tries again
                log.exception("could not save the emulators' state under %s", self.directory)

    def stop(self) -> None:
        """Stop the saver and write a last snapshot (call while the emulators still run)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.save()
