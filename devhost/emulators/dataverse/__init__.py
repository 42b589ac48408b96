"""Dataverse Web API v9.2 emulator (strict, HTTPS) for tests, the local host and the demo.

Wire behaviour follows /work/shared/specs/dataverse-api.md; each module cites its sections.

    store.py     tables, row versions, tombstones, transactions, write validation (§4, §5, §9, §11)
    filter.py    $filter tokenizer + parser + evaluator (§3)
    batch.py     $batch multipart parsing/rendering (§6a)
    webapi.py    the Web API dispatcher: query/paging/delta, CRUD, *Multiple, QualifyLead, metadata
    app.py       Starlette app: Entra-like auth (§1, §7), faults, service protection (§8), stats
    admin.py     /_admin endpoints
    server.py    DataverseEmulator (in-process), main(argv) (CLI), DataverseAdmin (typed admin client)
"""

from __future__ import annotations

from .server import DataverseAdmin, DataverseEmulator, main

__all__ = ["DataverseAdmin", "DataverseEmulator", "main"]
