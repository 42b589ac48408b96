"""`python -m bench.tablecpu [--rows N]`: the app's CPU per table row, single-row and in transactions.

Why: the state gateway chooses between the SDK's public calls and hand-written requests on
these figures alone, so they must be measurable in one command against Azurite.
CPU is this process's (`time.process_time`); Azurite runs in its own process.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from azure.data.tables import TableClient, UpdateMode

from devhost.azurite import Azurite
from shared.state import tablebatch, tablerows
from shared.state.storage import Storage


def _ms_per(count: int, run: Callable[[], Any]) -> float:
    start = time.process_time()
    run()
    return (time.process_time() - start) * 1000 / count


def _rows(n: int, partition: str) -> list[dict[str, Any]]:
    return [{"PartitionKey": partition, "RowKey": f"r{i:05d}", "entity": "lead", "dynamics_id": str(uuid.uuid4()),
             "base": '{"email":"a@example.com","firstname":"Ann"}', "state": "linked"} for i in range(n)]


def measure(table: TableClient, n: int) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]  # fresh rows every call: creates must create
    rows = _rows(n, f"single{run}")
    etags: list[str] = []
    figures = {"create": _ms_per(n, lambda: etags.extend(str(tablerows.create(table, r)) for r in rows))}
    figures["get"] = _ms_per(n, lambda: [tablerows.get(table, r["PartitionKey"], r["RowKey"]) for r in rows])
    figures["replace"] = _ms_per(n, lambda: [tablerows.replace(table, r, e) for r, e in zip(rows, etags, strict=True)])
    figures["upsert"] = _ms_per(n, lambda: [tablerows.upsert(table, r) for r in rows])
    chunks = [_rows(20, f"tx{run}{j}") for j in range(max(1, n // 20))]
    count = 20 * len(chunks)
    figures["transaction_20.hand_written"] = _ms_per(count, lambda: [
        tablebatch.submit(table, [tablebatch.Op("upsert", r) for r in chunk]) for chunk in chunks])
    figures["transaction_20.submit_transaction"] = _ms_per(count, lambda: [
        table.submit_transaction([("upsert", r, {"mode": UpdateMode.REPLACE}) for r in chunk]) for chunk in chunks])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=400)
    args = parser.parse_args()
    with Azurite() as azurite:
        table = Storage(azurite.connection_string, table_prefix="cpu" + uuid.uuid4().hex[:8]).table("rows")
        measure(table, 40)  # warm-up: connections, imports, first-call caches
        for name, ms in measure(table, args.rows).items():
            print(f"{name:40s} {ms:.3f} ms CPU per row")


if __name__ == "__main__":
    main()
