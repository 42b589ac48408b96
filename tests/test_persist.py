"""devhost.persist: emulator snapshots are written only after a change, atomically, and load back."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from devhost.emulators.dataverse import DataverseEmulator
from devhost.persist import FORMAT, EmulatorState, Target, dataverse_target


def test_a_snapshot_is_written_only_after_a_change_and_loads_into_a_fresh_emulator(tmp_path: Path) -> None:
    with DataverseEmulator() as first:
        state = EmulatorState(tmp_path, [dataverse_target(tmp_path, first)])
        assert state.save() == 1  # never saved: the first save writes
        assert state.save() == 0  # nothing changed since
        assert first.emulator is not None
        row = first.emulator.store.create("leads", {"lastname": "Saved"}, validate=False)
        assert state.save() == 1
    with DataverseEmulator() as second:
        assert EmulatorState(tmp_path, [dataverse_target(tmp_path, second)]).load() == ["dataverse.pickle"]
        assert second.emulator is not None
        assert second.emulator.store.get("leads", row["leadid"])["lastname"] == "Saved"  # type: ignore[index]


def test_a_failed_snapshot_leaves_the_previous_one_whole(tmp_path: Path) -> None:
    value = {"n": 1}

    def snapshot() -> bytes:
        if value["n"] == 2:
            raise OSError("disk full")
        return pickle.dumps({"format": FORMAT, "n": value["n"]})

    loaded: list[Any] = []
    target = Target(tmp_path / "x.pickle", lambda: value["n"], snapshot, loaded.append)
    state = EmulatorState(tmp_path, [target])
    state.save()
    value["n"] = 2
    with pytest.raises(OSError):
        state.save()
    assert pickle.loads((tmp_path / "x.pickle").read_bytes())["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.pickle"]  # no temporary file left behind
    assert EmulatorState(tmp_path, [target]).load() == ["x.pickle"] and loaded[0]["n"] == 1


def test_a_file_of_another_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.pickle").write_bytes(pickle.dumps({"format": FORMAT + 1}))
    target = Target(tmp_path / "x.pickle", lambda: 0, lambda: b"", lambda doc: None)
    with pytest.raises(RuntimeError, match="not an emulator snapshot"):
        EmulatorState(tmp_path, [target]).load()
