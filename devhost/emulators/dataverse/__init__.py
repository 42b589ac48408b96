"""Dataverse Web API v9.2 emulator (strict, HTTPS) for tests, the local host and the demo.

Wire behaviour follows Microsoft's Dataverse Web API documentation; each module says which behaviour it reproduces.

    store.py     tables, row versions, tombstones, transactions, write validation
    filter.py    $filter tokenizer + parser + evaluator
    batch.py     $batch multipart parsing/rendering
    webapi.py    the Web API dispatcher: query/paging/delta, CRUD, *Multiple, QualifyLead, metadata
    app.py       Starlette app: Entra-like auth, faults, service protection, stats
    admin.py     /_admin endpoints
    sdk_tables.py  webhook registration tables (serviceendpoint, steps, images, sdkmessage(filter)s)
    events.py    the RemoteExecutionContext a webhook step POSTs
    webhooks.py  which steps fire after a commit, and their delivery (../outbound.py)
    server.py    DataverseEmulator (in-process), main(argv) (CLI), DataverseAdmin (typed admin client)
"""

from __future__ import annotations

from .server import DataverseAdmin, DataverseEmulator, main

__all__ = ["DataverseAdmin", "DataverseEmulator", "main"]
