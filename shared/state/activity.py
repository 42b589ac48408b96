"""The activity log: every record outcome, keyed by person, and the same by hour.

Table `<prefix>activity` holds each entry twice:

    by person  PK "p<2 hex digits of crc32(person) mod 16>"
               RK "<person>|<inverted ticks>-<random>"
               (person: e.g. "m1042", or "lead:<guid>" before a Marketo id exists)
               newest first: `leadsync explain` reads one RowKey range of one partition
    by hour    PK "h<yyyymmddhh>"  RK "<inverted ticks>-<random>"
               what the health page and "failures in the last hour/day" read; routine
               outcomes (synced, created, linked, unchanged) as one summary row per
               kind, direction and write, with their `count`; every other entry as itself

Why 16 person buckets instead of a partition per person: a batch logs up to 300 people at
once, and only rows that share a partition can go in one entity-group transaction (up to
100 rows, one request). With a partition per person that was 300 requests a batch; with
16 buckets it is about 16, and a person's entries are still one range read. The by-hour
copies of one batch share a partition too. Entries are immutable: written once.

An entry logged before its outcome is certain (a collision's decision, logged before the
writes that apply it: `log_once`) has a key; a marker row "<person>!<key>" (outside the
person's RowKey range) is created in one transaction with its person row, so a retry or a
second applier that reaches the same decision finds it instead of logging it again.

Why summaries by hour: what reads that view counts routine outcomes and lists the others,
so a row per routine outcome would only make an initial sync write, and the health page
read back, one row per person where one per batch says the same.
"""

from __future__ import annotations

import json
import re
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.errors import StateConflict
from shared.state import tablebatch, tablerows
from shared.state.storage import Storage


class Kind(StrEnum):
    """Outcome kinds, stored as their values. Failures are the ones a person must look at."""

    SYNCED = "synced"
    UNCHANGED = "unchanged"
    COLLISION = "collision"
    CREATED = "created"
    LINKED = "linked"
    VALIDATION_FAILED = "validation_failed"
    REJECTED = "rejected"  # the target refused a record we thought valid
    PARKED = "parked"
    MOVED = "moved"  # lead qualified into a contact
    DELETED = "deleted"
    SKIPPED = "skipped"
    PAUSED = "paused"  # not done now: Marketo's daily quota is used up (real-time calls only)
    DISQUALIFIED = "disqualified"  # the linked lead was disqualified in Dynamics: no longer synced
    CANCELLED = "cancelled"  # the linked lead was cancelled in Dynamics: no longer synced
    LINK_CONFLICT = "link_conflict"  # a lead qualified into a contact another Marketo person is linked to
    MERGED = "merged"  # a merge on either side: the link followed it, the two people became one
    MERGE_SUGGESTED = "merge_suggested"  # merged in Marketo: merge the loser's Dynamics record in Dynamics too


class Direction(StrEnum):
    """Which way a write went, stored as its value ("" on an entry: no write)."""

    MARKETO_TO_DYNAMICS = "marketo->dynamics"
    DYNAMICS_TO_MARKETO = "dynamics->marketo"


SYNCED, UNCHANGED, COLLISION = Kind.SYNCED, Kind.UNCHANGED, Kind.COLLISION
CREATED, LINKED, MOVED, DELETED, SKIPPED = Kind.CREATED, Kind.LINKED, Kind.MOVED, Kind.DELETED, Kind.SKIPPED
VALIDATION_FAILED, REJECTED, PARKED, PAUSED = Kind.VALIDATION_FAILED, Kind.REJECTED, Kind.PARKED, Kind.PAUSED
DISQUALIFIED, CANCELLED, LINK_CONFLICT = Kind.DISQUALIFIED, Kind.CANCELLED, Kind.LINK_CONFLICT
MERGED, MERGE_SUGGESTED = Kind.MERGED, Kind.MERGE_SUGGESTED
FAILURE_KINDS = frozenset({VALIDATION_FAILED, REJECTED, PARKED, PAUSED, LINK_CONFLICT})
# Closed leads are listed with the failures (a state someone must know of, not a silent skip),
# but not counted as failures: disqualifying a lead is sales' decision, not a fault.
CLOSED_KINDS = frozenset({DISQUALIFIED, CANCELLED})
LISTED_KINDS = FAILURE_KINDS | CLOSED_KINDS
ROUTINE_KINDS = frozenset({SYNCED, CREATED, LINKED, UNCHANGED})  # counted by hour, not listed

_MAX_TICKS = 10**19
_SURROGATE = re.compile("[\ud800-\udfff]")
PERSON_BUCKETS = 16


@dataclass(frozen=True)
class Entry:
    person: str
    kind: str
    message: str
    direction: str = ""  # a Direction, or "" (no write)
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    operation_id: str = ""
    count: int = 1  # above 1: a by-hour summary of that many routine outcomes (person "")
    # Both rows' RowKey tail ("<inverted ticks>-<key>") of an entry `log_once` logged.
    row_id: str = field(default="", compare=False)


def _row_key(at: datetime, suffix: str = "") -> str:
    ticks = int(at.timestamp() * 1_000_000)
    return f"{_MAX_TICKS - ticks:019d}-{suffix or uuid.uuid4().hex[:8]}"


def _marker_key(entry: Entry) -> str:
    return f"{entry.person}!{entry.row_id.rpartition('-')[2]}"


def _marked(entry: Entry) -> list[tablebatch.Op]:
    """An entry's person row and its marker, which fails the transaction if the key is logged."""
    pk = person_partition(entry.person)
    marker = {"PartitionKey": pk, "RowKey": _marker_key(entry), "row_id": entry.row_id, "at": entry.at}
    return [tablebatch.Op("create", marker),
            tablebatch.Op("upsert", _to_entity(entry, pk, f"{entry.person}|{entry.row_id}"))]


def person_partition(person: str) -> str:
    return f"p{zlib.crc32(person.encode()) % PERSON_BUCKETS:02x}"


def _hour(at: datetime) -> str:
    return "h" + at.astimezone(UTC).strftime("%Y%m%d%H")


def _to_entity(entry: Entry, pk: str, rk: str) -> dict[str, Any]:
    row = {
        "PartitionKey": pk, "RowKey": rk, "person": entry.person, "kind": entry.kind,
        "message": _storable(entry.message[:8000]), "direction": entry.direction,
        "details": _details_json(entry.details), "at": entry.at,
        "operation_id": entry.operation_id,
    }
    if entry.count != 1:  # only summaries carry it: every other row reads back as 1
        row["count"] = entry.count
    return row


def _storable(text: str) -> str:
    """`text` with any lone UTF-16 surrogate written as its escape: the Table service refuses one,
    and one service's error message can quote the value that caused it."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _details_json(details: dict[str, Any]) -> str:
    """JSON that fits a Table property (64 KiB) and always parses back."""
    text = json.dumps(details, default=str)
    if len(text) > 30000:
        text = json.dumps({"truncated": True, "preview": text[:29000]})
    return text


def _from_entity(e: Any) -> Entry:
    return Entry(person=e["person"], kind=e["kind"], message=e["message"], direction=e.get("direction", ""),
                 details=json.loads(e.get("details") or "{}"), at=e["at"], operation_id=e.get("operation_id", ""),
                 count=int(e.get("count") or 1))


def by_hour(entries: Sequence[Entry]) -> list[Entry]:
    """What the by-hour view keeps of `entries`: routine outcomes as one summary per hour,
    kind and direction (at the newest one's time), every other entry as itself."""
    kept: list[Entry] = []
    routine: dict[tuple[str, str, str], list[Entry]] = {}
    for e in entries:
        if e.kind in ROUTINE_KINDS:
            routine.setdefault((_hour(e.at), e.kind, e.direction), []).append(e)
        else:
            kept.append(e)
    for (_, kind, direction), group in routine.items():
        count = sum(e.count for e in group)
        kept.append(Entry("", kind, f"{count} {kind}", direction, {}, max(e.at for e in group),
                          group[0].operation_id, count))
    return kept


def counted(entries: Iterable[Entry]) -> Counter[str]:
    """Outcomes by kind, summaries counting for what they summarise."""
    kinds: Counter[str] = Counter()
    for e in entries:
        kinds[e.kind] += e.count
    return kinds


class ActivityLog:
    def __init__(self, storage: Storage, *, workers: int = 16) -> None:
        self._table = storage.table("activity")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="activity")

    def close(self) -> None:
        """Stop the write threads (after the writes in flight finish)."""
        self._pool.shutdown(wait=True)

    def write(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        person_rows = [_to_entity(e, person_partition(e.person), f"{e.person}|{_row_key(e.at)}") for e in entries]
        hourly = [_to_entity(e, _hour(e.at), _row_key(e.at)) for e in by_hour(entries)]
        tablebatch.upsert_all(self._table, person_rows + hourly, self._pool)

    def log_once(self, keyed: Sequence[tuple[Entry, str]]) -> list[tuple[Entry, bool]]:
        """Log each (entry, key) unless an entry with that key is logged already: the entry that
        stands, and whether this call logged it. Not for routine kinds (they are summarised)."""
        entries = [replace(e, row_id=_row_key(e.at, key)) for e, key in keyed]
        assert all(e.kind not in ROUTINE_KINDS and key.isalnum() for e, key in keyed)
        groups: dict[str, list[Entry]] = {}
        for e in entries:
            groups.setdefault(person_partition(e.person), []).append(e)
        chunks = [g[i:i + tablebatch.TRANSACTION_MAX // 2] for g in groups.values()
                  for i in range(0, len(g), tablebatch.TRANSACTION_MAX // 2)]
        done = [pair for chunk in self._pool.map(self._log_chunk, chunks) for pair in chunk]
        hourly = [_to_entity(e, _hour(e.at), e.row_id) for e, _ in done]  # idempotent: re-made if lost
        tablebatch.upsert_all(self._table, hourly, self._pool)
        return done

    def _log_chunk(self, chunk: list[Entry]) -> list[tuple[Entry, bool]]:
        """One transaction for a partition's entries; when one is logged already, one each."""
        if len(chunk) > 1:
            try:
                tablebatch.submit(self._table, [op for e in chunk for op in _marked(e)])
                return [(e, True) for e in chunk]
            except tablebatch.TransactionFailed as exc:
                if exc.status != 409:
                    raise
        return [self._log_one(e) for e in chunk]

    def _log_one(self, entry: Entry) -> tuple[Entry, bool]:
        pk = person_partition(entry.person)
        try:
            tablebatch.submit(self._table, _marked(entry))
            return entry, True
        except tablebatch.TransactionFailed as exc:
            if exc.status != 409:
                raise
        found = tablerows.get(self._table, pk, _marker_key(entry))
        if found is None:  # withdrawn meanwhile: the queue retries the message
            raise StateConflict(f"activity entry {_marker_key(entry)} was withdrawn while being logged")
        return replace(entry, at=found["at"], row_id=found["row_id"]), False

    def withdraw(self, entries: Sequence[Entry]) -> None:
        """Delete entries `log_once` logged whose outcome did not come about (rows and marker)."""
        for e in entries:
            pk = person_partition(e.person)
            self._table.delete_entity(pk, f"{e.person}|{e.row_id}")
            self._table.delete_entity(_hour(e.at), e.row_id)
            self._table.delete_entity(pk, _marker_key(e))  # last: until then a retry finds the entry

    def for_person(self, person: str, limit: int = 100) -> list[Entry]:
        # "|" sorts after every character a person key holds, "}" right after "|": the
        # range is exactly this person's rows ("m104" does not reach "m1042|...").
        escaped = person.replace("'", "''")
        found = self._table.query_entities(
            f"PartitionKey eq '{person_partition(person)}' and RowKey gt '{escaped}|' and RowKey lt '{escaped}}}'",
            results_per_page=limit)
        out: list[Entry] = []
        for e in found:
            out.append(_from_entity(e))
            if len(out) >= limit:
                break
        return out

    def since(self, start: datetime, kinds: Iterable[str] | None = None) -> Iterator[Entry]:
        """Entries from `start` to now, newest first, optionally of some kinds only; routine
        outcomes come as summaries (`count`, no person: `for_person` has each one)."""
        wanted = set(kinds) if kinds is not None else None
        now = datetime.now(UTC)
        hour = now.replace(minute=0, second=0, microsecond=0)
        while hour >= start.replace(minute=0, second=0, microsecond=0):
            for e in self._table.query_entities(f"PartitionKey eq '{_hour(hour)}'"):
                entry = _from_entity(e)
                if entry.at >= start and (wanted is None or entry.kind in wanted):
                    yield entry
            hour -= timedelta(hours=1)
