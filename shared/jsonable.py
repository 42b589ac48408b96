"""Dataclasses as plain JSON values, for the health page, `leadsync` output and backfill reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import Any

# ETags are storage bookkeeping: never shown to a person, never compared by a script.
_OMITTED = frozenset({"etag"})


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, tuples and datetimes as plain JSON values; datetimes as
    ISO 8601 UTC with a "Z" (one format across every JSON body the app and the CLI print)."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items() if k not in _OMITTED}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value
