"""`python -m devhost run --data-dir`: a SIGKILL leaves no process behind, and a restart on
the same folder finds Azurite's and both emulators' data again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

from devhost.azurite import ACCOUNT, ACCOUNT_KEY
from devhost.emulators.dataverse import DataverseAdmin
from devhost.emulators.marketo import MarketoAdmin
from devhost.harness import eventually

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


class Run:
    """One `devhost run` process and the URLs it printed."""

    def __init__(self, process: subprocess.Popen[str], urls: dict[str, str], ca: Path) -> None:
        self.process = process
        self.urls = urls
        self.marketo = MarketoAdmin(urls["marketo"])
        self.dataverse = DataverseAdmin(urls["dataverse"], str(ca))
        self.tables = TableServiceClient.from_connection_string(
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{urls['table']}/{ACCOUNT};")

    def close(self) -> None:
        self.marketo.close()
        self.dataverse.close()
        self.tables.close()


@contextmanager
def devhost_run(data_dir: Path, ca: Path) -> Iterator[Run]:
    env = {**os.environ, "FUNCTIONS_WORKER_PROCESS_COUNT": "2", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "devhost", "run", "--port", "0", "--data-dir", str(data_dir), "--ca-out", str(ca)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        urls: dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            words = line.split()
            if words[0] in ("marketo", "dataverse"):
                urls[words[0]] = words[1]
            elif words[0] == "azurite":
                urls["table"] = words[4]
                break
        assert set(urls) == {"marketo", "dataverse", "table"}, f"devhost run did not start (exit {process.poll()})"
        run = Run(process, urls, ca)
        try:
            yield run
        finally:
            run.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def children(pid: int) -> set[int]:
    """Every live process whose parent is `pid` (read from /proc)."""
    out: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_devhost_leaves_no_orphans_and_a_restart_finds_every_emulators_data(tmp_path: Path) -> None:
    data_dir, ca = tmp_path / "data", tmp_path / "ca.pem"
    email = f"r{uuid.uuid4().hex[:8]}@example.com"
    with devhost_run(data_dir, ca) as run:
        marketo_id = run.marketo.create_lead(email=email, firstName="Kept", lastName="Across")
        lead = run.dataverse.create("leads", {"lastname": "Restart", "emailaddress1": email})
        table = run.tables.create_table_if_not_exists("restartcheck")
        table.upsert_entity({"PartitionKey": "p", "RowKey": "r", "email": email})
        # Each emulator's snapshot and Azurite's table database (saved every 5 s) are written
        # within seconds of a change; a kill loses what is not yet on disk, so wait until all hold it.
        saved = ("marketo.pickle", "dataverse.pickle", "azurite/__azurite_db_table__.json")
        eventually(lambda: all((data_dir / f).exists() and email in (data_dir / f).read_bytes().decode("latin-1")
                               for f in saved), timeout=30)
        spawned = children(run.process.pid)
        assert len(spawned) >= 3, spawned  # Azurite and two worker processes at least
        run.process.kill()
        run.process.wait()
        try:
            eventually(lambda: not any(alive(p) for p in spawned), timeout=30)
        finally:
            for pid in filter(alive, spawned):  # an orphan would outlive the test otherwise
                os.kill(pid, signal.SIGKILL)

    with devhost_run(data_dir, ca) as again:
        person = again.marketo.get_lead(marketo_id)
        assert person is not None and (person["email"], person["firstName"]) == (email, "Kept")
        kept = again.dataverse.get("leads", lead["leadid"])
        assert kept is not None and kept["emailaddress1"] == email
        assert again.tables.get_table_client("restartcheck").get_entity("p", "r")["email"] == email
        # New writes continue from where the last run stopped (no id is handed out twice).
        assert again.marketo.create_lead(email="n" + email) > marketo_id
