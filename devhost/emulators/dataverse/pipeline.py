"""Refusals a real org adds to the Web API: synchronous plug-ins that throw, and duplicate detection.

Sources: spec §7 and §11. A synchronous plug-in step that throws InvalidPluginExecutionException
fails the request with 0x80040265 (ISVAborted) and the plug-in's own message, HTTP 400
[status from client repos]. Duplicate detection runs on a Web API create/update only when the
caller sends `MSCRM.SuppressDuplicateDetection: false`; a published rule that matches an active
record fails it with 0x80040333, HTTP 412 (the current status map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .metadata import EntityDef
from .store import ApiError, _fold

PLUGIN_CODE = "0x80040265"
DUPLICATE_CODE = "0x80040333"
DUPLICATE_MESSAGE = "A record was not created or updated because a duplicate of the current record already exists."
MESSAGES = ("Create", "Update")


@dataclass(frozen=True)
class PluginStep:
    entity: str  # logical name
    message: str  # "Create" | "Update"
    error: str  # what the plug-in throws


@dataclass(frozen=True)
class DuplicateRule:
    entity: str
    columns: tuple[str, ...]  # exact match (case-insensitive) on all of them


@dataclass
class Pipeline:
    steps: list[PluginStep] = field(default_factory=list)
    rules: list[DuplicateRule] = field(default_factory=list)

    def before(self, rows: dict[str, dict[str, Any]], entity: EntityDef, message: str, values: dict[str, Any],
               rid: str | None, headers: dict[str, str]) -> None:
        """Raise what the org's plug-ins and duplicate rules say about writing `values` (the
        record as it would be after the write) to `entity`; `rid` is the record updated."""
        for step in self.steps:
            if step.entity == entity.logical_name and step.message == message:
                raise ApiError(400, PLUGIN_CODE, step.error)
        if headers.get("mscrm.suppressduplicatedetection", "").lower() != "false":
            return
        for rule in self.rules:
            if rule.entity != entity.logical_name or any(values.get(c) in (None, "") for c in rule.columns):
                continue
            for other_id, other in rows.items():
                if other_id != rid and other.get("statecode", 0) == 0 and \
                        all(_fold(other.get(c)) == _fold(values.get(c)) for c in rule.columns):
                    raise ApiError(412, DUPLICATE_CODE, DUPLICATE_MESSAGE)
