"""In-memory tables with row versions, change tracking, transactions and write validation.

- Row versions: one org-wide counter; `versionnumber` is the etag (`W/"<n>"`).
- `createdon`/`modifiedon`: UTC, second precision, `Z` (spec "Core columns").
- Deletions leave tombstones so a delta reports them, even for rows created and deleted
  between polls.
- Indexes (emulator scale only, no wire effect): per table the ids in sorted order, the row and
  tombstone versions in ascending order, and lazily built per-column value indexes, so primary-key
  lookups, paging and delta pages stay cheap at 100k+ rows.
- Validation (documented error codes): MaxLength → 0x80044331 (two spaces after "occurred."),
  unknown property → 0x80048d19, read-only columns → 400, option values, Email format,
  SystemRequired. ApplicationRequired is NOT enforced.
- Extensions (webhooks.py): extra tables, write checks, and every committed write reported as a
  `Change` once the outermost transaction commits (rolled-back writes are never reported).
"""

from __future__ import annotations

import re
import threading
import uuid
import weakref
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from . import typed
from .filter import norm
from .metadata import GUID_TYPES, INT_TYPES, OPTION_TYPES, STATUS_STATE, STRING_TYPES, Attr, EntityDef, build_entities
from .principals import APPLICATION_USER, application_user, bind_targets, build_principals, check_owner, salesperson

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BIND = re.compile(r"^/?(?:.*/api/data/v9\.\d/)?(\w+)\(([0-9a-fA-F-]{36})\)$")
SYSTEM_USER = "a1b2c3d4-0000-4000-8000-000000000001"
LOG_SLACK = 1024  # stale version-log entries tolerated beyond the live ones before compacting


class ApiError(Exception):
    """Becomes `{"error":{"code","message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def now_z() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def payload_error(entity: EntityDef, detail: str) -> ApiError:
    """Unknown/ill-typed property (the service's documentation: code 0x80048d19 seen in client repos)."""
    return ApiError(
        400,
        "0x80048d19",
        f"Error identified in Payload provided by the user for Entity :'{entity.entity_set}', For more information on "
        "this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> "
        f"InnerException : Microsoft.OData.ODataException: {detail}",
    )


@dataclass(frozen=True)
class Change:
    """One committed write: `submitted` holds the columns the request set (read names), `pre`/`post`
    the row before/after (None on Create/Delete respectively)."""

    message: str  # Create | Update | Delete
    set_name: str
    id: str
    submitted: dict[str, Any]
    pre: dict[str, Any] | None
    post: dict[str, Any] | None
    user_id: str = APPLICATION_USER  # who made it: the store's actor at the time


Check = Callable[["Store", dict[str, Any] | None, dict[str, Any] | None], None]


@dataclass
class Extension:
    """What another module adds to a store: tables (with seed rows), per-table write checks that
    raise ApiError, and a callback for committed changes. Kept outside the store's attributes so
    snapshots (which pickle them) never see a callable."""

    tables: list[tuple[EntityDef, list[dict[str, Any]]]] = field(default_factory=list)
    checks: dict[str, Check] = field(default_factory=dict)
    on_commit: Callable[[list[Change]], None] | None = None


_EXTENSIONS: weakref.WeakKeyDictionary[Store, Extension] = weakref.WeakKeyDictionary()


@dataclass
class Tombstone:
    version: int
    id: str


class _VersionLog:
    """Versions in ascending order with the id each was given to. Entries go stale when a row is
    updated/deleted (or a tombstone dropped); readers check liveness, `compact` drops stale ones."""

    def __init__(self) -> None:
        self.versions: list[int] = []
        self.ids: dict[int, str] = {}

    def add(self, version: int, rid: str) -> None:
        if version in self.ids:
            return
        if not self.versions or version > self.versions[-1]:
            self.versions.append(version)
        else:
            insort(self.versions, version)  # a rollback restoring an older row
        self.ids[version] = rid

    def between(self, low: int, high: int) -> Iterator[tuple[int, str]]:
        """(version, id) with low < version <= high, ascending."""
        versions, ids = self.versions, self.ids
        for i in range(bisect_right(versions, low), bisect_right(versions, high)):
            v = versions[i]
            yield v, ids[v]

    def compact(self, live: Callable[[int, str], bool]) -> None:
        keep = [v for v in self.versions if live(v, self.ids[v])]
        self.ids = {v: self.ids[v] for v in keep}
        self.versions = keep


class _IdOrder:
    """The table's ids in sorted order; inserts and removals are applied lazily on read."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.added: list[str] = []
        self.removed = 0

    def sorted_ids(self, table: dict[str, Any]) -> list[str]:
        ids = self.ids
        if self.removed:
            ids = [i for i in ids if i in table]
        if self.added:
            new: set[str] = set()
            for rid in self.added:
                if rid in table and rid not in new:
                    j = bisect_left(ids, rid)
                    if j == len(ids) or ids[j] != rid:
                        new.add(rid)
            ids.extend(new)
            ids.sort()  # timsort: a sorted run plus a short tail
        self.ids, self.added, self.removed = ids, [], 0
        return ids


_UNHASHABLE = object()


def _index_key(value: Any) -> Any:
    """The filter's normalised value, or _UNHASHABLE when it cannot be a dict key (or fails to normalise)."""
    try:
        key = norm(value)
        hash(key)
    except Exception:
        return _UNHASHABLE
    return key


class _ColumnIndex:
    """normalised value → ids, as `filter.evaluate` compares (`eq`, `In`)."""

    def __init__(self) -> None:
        self.buckets: dict[Any, set[str]] = {}
        self.odd: set[str] = set()  # rows whose value is not indexable: always candidates

    def add(self, rid: str, value: Any) -> None:
        key = _index_key(value)
        if key is _UNHASHABLE:
            self.odd.add(rid)
        else:
            self.buckets.setdefault(key, set()).add(rid)

    def discard(self, rid: str, value: Any) -> None:
        key = _index_key(value)
        if key is _UNHASHABLE:
            self.odd.discard(rid)
            return
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.discard(rid)
            if not bucket:
                del self.buckets[key]

    def lookup(self, keys: Iterable[Any]) -> set[str]:
        out = set(self.odd)
        for key in keys:
            out |= self.buckets.get(key, set())
        return out


class Store:
    """All tables. Every public method takes the lock; transactions journal undo steps."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.entities: dict[str, EntityDef] = {**build_entities(), **build_principals()}
        self.by_set = {e.entity_set: e for e in self.entities.values()}
        self.rows: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in self.by_set}
        self.tombstones: dict[str, dict[str, int]] = {s: {} for s in self.by_set}
        self._row_log: dict[str, _VersionLog] = {s: _VersionLog() for s in self.by_set}
        self._tomb_log: dict[str, _VersionLog] = {s: _VersionLog() for s in self.by_set}
        self._order: dict[str, _IdOrder] = {s: _IdOrder() for s in self.by_set}
        self._indexes: dict[str, dict[str, _ColumnIndex]] = {s: {} for s in self.by_set}
        self._odd_ids: dict[str, int] = {s: 0 for s in self.by_set}  # ids that `norm` would change
        self.keys: dict[str, list[tuple[str, ...]]] = {}  # logical name → alternate keys
        self.version = 1_000_000
        self.min_delta_version = self.version
        self._journal: list[tuple[str, str, dict[str, Any] | None, int | None]] | None = None
        self._changes: list[Change] = []  # written but not yet committed (inside a transaction)
        self.actor = APPLICATION_USER  # whose writes these are: the Web API's caller unless `acting_as` says
        ext = _EXTENSIONS.get(self)
        for entity, seeds in ext.tables if ext else []:
            self._add_table(entity, seeds)
        from .pipeline import Pipeline  # the pipeline module reads this one's errors

        self.pipeline = Pipeline()  # plug-in steps and duplicate rules the admin API registers
        self.create("systemusers", application_user(), validate=False)
        self.create("systemusers", salesperson(), validate=False)
        typed.seed(self)

    def extend(self, ext: Extension) -> None:
        """Attach `ext` (survives reset): its tables are added now and after every reset."""
        with self.lock:
            _EXTENSIONS[self] = ext
            for entity, seeds in ext.tables:
                self._add_table(entity, seeds)

    def _add_table(self, entity: EntityDef, seeds: list[dict[str, Any]]) -> None:
        s = entity.entity_set
        self.by_set[s] = entity
        self.rows[s], self.tombstones[s], self._indexes[s], self._odd_ids[s] = {}, {}, {}, 0
        self._row_log[s], self._tomb_log[s], self._order[s] = _VersionLog(), _VersionLog(), _IdOrder()
        for seed in seeds:
            self.insert_system_row(s, seed)

    def insert_system_row(self, set_name: str, values: dict[str, Any]) -> None:
        """A row the platform writes itself (seeds, system jobs): no checks, no change notification."""
        with self.lock:
            entity = self.by_set[set_name]
            row: dict[str, Any] = {a.read_name: None for a in entity.attrs.values()}
            row.update(values, versionnumber=self.next_version(), createdon=now_z(), modifiedon=now_z())
            self._put_row(set_name, row[entity.primary_id], row)

    def _check(self, set_name: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        ext = _EXTENSIONS.get(self)
        check = ext.checks.get(set_name) if ext else None
        if check is not None:
            check(self, old, new)

    @contextmanager
    def acting_as(self, user_id: str) -> Iterator[None]:
        """Writes made inside are `user_id`'s (the lock is held, so no other caller's interleave)."""
        with self.lock:
            before, self.actor = self.actor, user_id
            try:
                yield
            finally:
                self.actor = before

    def _changed(self, change: Change) -> None:
        """Outside a transaction a write commits at once; inside, at the outermost commit."""
        if change.user_id != self.actor:
            change = replace(change, user_id=self.actor)
        self._changes.append(change)
        if self._journal is None:
            self._flush()

    def _flush(self) -> None:
        changes, self._changes = self._changes, []
        ext = _EXTENSIONS.get(self)
        if changes and ext is not None and ext.on_commit is not None:
            ext.on_commit(changes)

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            version, lock = self.version, self.lock
            self.__init__()  # type: ignore[misc]
            self.lock = lock
            # Versions keep growing so delta tokens issued before the reset are refused.
            self.version = version + 1
            self.min_delta_version = self.version

    def expire_delta_tokens(self) -> None:
        with self.lock:
            self.version += 1
            self.min_delta_version = self.version

    def next_version(self) -> int:
        self.version += 1
        return self.version

    # -- transactions ------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing writes (change sets, *Multiple actions, QualifyLead); nests as a savepoint."""
        with self.lock:
            outer = self._journal is not None
            if self._journal is None:
                self._journal = []
            mark = len(self._journal)
            change_mark = len(self._changes)
            try:
                yield
            except BaseException:
                journal = self._journal
                for set_name, rid, row, tomb in reversed(journal[mark:]):
                    self._put_row(set_name, rid, row)
                    self._put_tomb(set_name, rid, tomb)
                del journal[mark:]
                del self._changes[change_mark:]
                raise
            finally:
                if not outer:
                    self._journal = None
            if not outer:
                self._flush()

    def _remember(self, set_name: str, rid: str) -> None:
        if self._journal is not None:
            old = self.rows[set_name].get(rid)
            self._journal.append(
                (set_name, rid, dict(old) if old is not None else None, self.tombstones[set_name].get(rid))
            )

    # -- the one place rows and tombstones change (keeps the indexes in step) ----------------
    def _put_row(self, set_name: str, rid: str, row: dict[str, Any] | None) -> None:
        table = self.rows[set_name]
        old = table.get(rid)
        if row is None:
            if old is None:
                return
            del table[rid]
            self._order[set_name].removed += 1
            if _index_key(rid) != rid:
                self._odd_ids[set_name] -= 1
        else:
            table[rid] = row
            if old is None:
                self._order[set_name].added.append(rid)
                if _index_key(rid) != rid:
                    self._odd_ids[set_name] += 1
            log = self._row_log[set_name]
            log.add(row["versionnumber"], rid)
            if len(log.versions) > 2 * len(table) + LOG_SLACK:
                log.compact(lambda v, i: (table.get(i) or {}).get("versionnumber") == v)
        for column, index in self._indexes[set_name].items():
            if old is not None:
                index.discard(rid, old.get(column))
            if row is not None:
                index.add(rid, row.get(column))

    def _put_tomb(self, set_name: str, rid: str, version: int | None) -> None:
        tombs = self.tombstones[set_name]
        if version is None:
            tombs.pop(rid, None)
            return
        tombs[rid] = version
        log = self._tomb_log[set_name]
        log.add(version, rid)
        if len(log.versions) > 2 * len(tombs) + LOG_SLACK:
            log.compact(lambda v, i: tombs.get(i) == v)

    # -- reads -------------------------------------------------------------------------------
    def sorted_ids(self, set_name: str) -> list[str]:
        """Every id of the table in ascending order (the default query order). Do not mutate."""
        return self._order[set_name].sorted_ids(self.rows[set_name])

    def lookup(self, set_name: str, column: str, keys: Iterable[Any]) -> set[str]:
        """Ids of rows whose normalised `column` value (`filter.norm`) equals one of `keys` (a superset
        may be returned). Primary keys come from the table itself, other columns from an index built on
        first use and kept up to date by every write."""
        entity = self.by_set[set_name]
        table = self.rows[set_name]
        if column == entity.primary_id and not self._odd_ids[set_name]:
            return {k for k in keys if isinstance(k, str) and k in table}
        index = self._indexes[set_name].get(column)
        if index is None:
            index = _ColumnIndex()
            for rid, row in table.items():
                index.add(rid, row.get(column))
            self._indexes[set_name][column] = index
        return index.lookup(keys)

    def entity(self, set_name: str) -> EntityDef:
        return self.by_set[set_name]

    def get(self, set_name: str, rid: str) -> dict[str, Any] | None:
        return self.rows[set_name].get(rid.lower())

    def find_by_key(self, set_name: str, key: dict[str, Any]) -> dict[str, Any] | None:
        for row in self.rows[set_name].values():
            if all(_fold(row.get(k)) == _fold(v) for k, v in key.items()):
                return row
        return None

    def check_key_defined(self, entity: EntityDef, columns: tuple[str, ...]) -> None:
        """Alternate keys must be defined first; leads/contacts ship with none [message unverified]."""
        if tuple(sorted(columns)) not in [tuple(sorted(k)) for k in self.keys.get(entity.logical_name, [])]:
            raise ApiError(
                400,
                "0x80060888",
                f"The specified key attributes are not a defined key for the {entity.logical_name} entity",
            )

    # -- writes ------------------------------------------------------------------------------
    def create(self, set_name: str, body: dict[str, Any], *, validate: bool = True) -> dict[str, Any]:
        entity = self.entity(set_name)
        values = self.prepare(entity, body, creating=True) if validate else self.admin_values(entity, body)
        rid = str(values.pop(entity.primary_id, None) or uuid.uuid4()).lower()
        if rid in self.rows[set_name]:
            raise ApiError(412, "0x80040237", "A record with matching key values already exists.")
        now = now_z()
        row: dict[str, Any] = {a.read_name: None for a in entity.attrs.values()}
        row.update({"statecode": 0, "statuscode": 1, "_ownerid_value": SYSTEM_USER, "merged": False})
        row.update(values)
        row.update({entity.primary_id: rid, "createdon": now, "modifiedon": now})
        self._finish(entity, row)
        self._check_unique(entity, row)
        self._check(set_name, None, row)
        self._remember(set_name, rid)
        row["versionnumber"] = self.next_version()
        self._put_row(set_name, rid, row)
        self._put_tomb(set_name, rid, None)
        self._changed(Change("Create", set_name, rid, values, None, row))
        return row

    def update(self, set_name: str, rid: str, body: dict[str, Any], *, validate: bool = True) -> dict[str, Any]:
        entity = self.entity(set_name)
        row = self.rows[set_name].get(rid.lower())
        if row is None:
            raise not_found(entity, rid)
        values = self.prepare(entity, body, creating=False) if validate else self.admin_values(entity, body)
        values.pop(entity.primary_id, None)
        new = dict(row)
        new.update(values)
        self._finish(entity, new)
        self._check_unique(entity, new)
        self._check(set_name, row, new)
        self._remember(set_name, row[entity.primary_id])
        new["modifiedon"] = now_z()
        new["versionnumber"] = self.next_version()
        self._put_row(set_name, row[entity.primary_id], new)
        self._changed(Change("Update", set_name, row[entity.primary_id], values, row, new))
        return new

    def delete(self, set_name: str, rid: str) -> None:
        entity = self.entity(set_name)
        rid = rid.lower()
        if rid not in self.rows[set_name]:
            raise not_found(entity, rid)
        old = self.rows[set_name][rid]
        self._check(set_name, old, None)
        self._remember(set_name, rid)
        self._put_row(set_name, rid, None)
        self._put_tomb(set_name, rid, self.next_version())
        self._changed(Change("Delete", set_name, rid, {}, old, None))

    def _finish(self, entity: EntityDef, row: dict[str, Any]) -> None:
        """Computed columns: fullname = "first last" (spec "Core columns": read-only computed)."""
        if "firstname" not in entity.attrs:
            return  # a user's or team's name is its own column here
        parts = [p for p in (row.get("firstname"), row.get("lastname")) if p]
        if "fullname" in entity.attrs:
            row["fullname"] = " ".join(parts) if parts else None
        typed.default_currency(entity, row)

    def _check_unique(self, entity: EntityDef, row: dict[str, Any]) -> None:
        """Alternate keys are unique: 0x80060892 DuplicateRecordEntityKey → 412."""
        for key in self.keys.get(entity.logical_name, []):
            if any(row.get(c) is None for c in key):
                continue
            for other in self.rows[entity.entity_set].values():
                if other[entity.primary_id] != row[entity.primary_id] and all(
                    _fold(other.get(c)) == _fold(row.get(c)) for c in key
                ):
                    raise ApiError(
                        412,
                        "0x80060892",
                        f"A record that has the attribute values {', '.join(key)} already exists. The entity key "
                        "requires that this set of attributes contains unique values.",
                    )

    def admin_values(self, entity: EntityDef, body: dict[str, Any]) -> dict[str, Any]:
        """Admin writes ("as a salesperson would") skip Web API rules but still know only real columns."""
        readable = entity.readable()
        out = {}
        for k, v in body.items():
            if k in readable and k not in {"fullname", "createdon", "modifiedon", "versionnumber"}:
                out[k] = v.lower() if isinstance(v, str) and readable[k].attribute_type in GUID_TYPES else v
            elif k in entity.attrs and entity.attrs[k].read_name in readable:
                out[entity.attrs[k].read_name] = v
            else:
                raise ApiError(400, "0x80048d19", f"unknown column {k!r} for {entity.logical_name}")
        return out

    def prepare(self, entity: EntityDef, body: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        """Validate a Web API body and return stored column values."""
        out: dict[str, Any] = {}
        for key, value in body.items():
            if key in {"@odata.type", "@odata.id"}:
                continue
            if key.endswith("@odata.bind"):
                nav = key[: -len("@odata.bind")]
                attr = next((a for a in entity.attrs.values() if nav in a.binds), None)
                if attr is None:
                    raise payload_error(
                        entity, f"An undeclared property '{nav}' which only has property annotations in the payload "
                        "but no property value was found in the payload."
                    )
                if value is None:
                    out[attr.read_name] = None
                    continue
                m = _BIND.match(str(value))
                if not m or m.group(1) not in bind_targets(attr, nav):
                    raise ApiError(400, "0x8004431a", f"Invalid reference '{value}' for navigation property '{nav}'.")
                if attr.attribute_type == "Owner":
                    check_owner(self, m.group(1), m.group(2).lower())
                out[attr.read_name] = m.group(2).lower()
                typed.check_target(self, m.group(1), out[attr.read_name])
                continue
            attr = entity.attrs.get(key)
            if attr is None or key != attr.read_name:
                raise payload_error(
                    entity,
                    f"The property '{key}' does not exist on type '{entity.type_name}'. Make sure to only use property "
                    "names that are defined by the type or mark the type as open type.",
                )
            if not (attr.valid_for_create if creating else attr.valid_for_update):
                if key == entity.primary_id and not creating:
                    continue  # the key in an update body must match the URL; ignored here
                raise ApiError(400, "0x80040203", f"The '{key}' attribute of the '{entity.logical_name}' entity is "
                               f"read-only and cannot be set on {'create' if creating else 'update'}.")
            out[key] = self._check_value(entity, attr, value)
        _state_and_status(entity, out)
        for attr in entity.attrs.values():
            if attr.required_level != "SystemRequired" or attr.logical_name == entity.primary_id:
                continue
            if attr.read_name in {"_ownerid_value", "statecode"}:
                continue  # defaulted by the platform
            missing = (creating and out.get(attr.read_name) is None) or (
                attr.read_name in out and out[attr.read_name] is None
            )
            if missing:
                raise ApiError(
                    400,
                    "0x80040203",  # [unverified] the service's documentation: "code varies"
                    f"A validation error occurred.  The value for the '{attr.logical_name}' attribute of the "
                    f"'{entity.logical_name}' entity is required (RequiredLevel SystemRequired).",
                )
        return out

    def _check_value(self, entity: EntityDef, attr: Attr, value: Any) -> Any:
        if value is None:
            return None
        t = attr.attribute_type
        if t in STRING_TYPES:
            if not isinstance(value, str):
                raise payload_error(entity, f"Cannot convert the literal '{value}' to the expected type 'Edm.String'.")
            if attr.max_length is not None and len(value) > attr.max_length:
                raise ApiError(
                    400,
                    "0x80044331",
                    f"A validation error occurred.  The length of the '{attr.logical_name}' attribute of the "
                    f"'{entity.logical_name}' entity exceeded the maximum allowed length of '{attr.max_length}'.",
                )
            if attr.format_name == "Email" and value and not _EMAIL.match(value):
                # [unverified code] the server validates e-mail syntax on Email-format columns → 400.
                raise ApiError(400, "0x80040203", f"Invalid e-mail address '{value}' for '{attr.logical_name}'.")
            return value
        if t in INT_TYPES:
            if isinstance(value, bool) or not isinstance(value, int):
                raise payload_error(
                    entity, f"Cannot convert the literal '{value}' to the expected type '{attr.edm_type}'."
                )
            if t in OPTION_TYPES and attr.options is not None and value not in attr.options:
                # [code from memory] 0x8004431A: value outside the valid range.
                raise ApiError(
                    400,
                    "0x8004431a",
                    f"A validation error occurred.  The value {value} of '{attr.logical_name}' on record of type "
                    f"'{entity.logical_name}' is outside the valid range. Accepted Values: "
                    f"{','.join(str(v) for v in attr.options)}",
                )
            return value
        if t == "Boolean":
            if not isinstance(value, bool):
                raise payload_error(entity, f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'.")
            return value
        if t in GUID_TYPES:
            if not isinstance(value, str) or not is_guid(value):
                raise payload_error(entity, f"Cannot convert the literal '{value}' to the expected type 'Edm.Guid'.")
            return value.lower()
        try:
            return typed.check_value(entity, attr, value)
        except typed.TypedValueError as exc:
            raise (payload_error(entity, exc.message) if exc.payload
                   else ApiError(exc.status, exc.code, exc.message)) from None

    # -- change tracking ---------------------------------------------------------------------
    def changes_since(
        self, set_name: str, since: int, upto: int, *, after: tuple[int, int] | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], list[Tombstone]]:
        """Rows created/updated and tombstones with version in (since, upto], each by version.

        Read as one list keyed (0, version) for rows then (1, version) for tombstones: `after` keeps only
        keys greater than it (the delta page cursor) and `limit` caps the total, rows first.
        """
        phase, last = after if after is not None else (-1, 0)
        table, tombs_now = self.rows[set_name], self.tombstones[set_name]
        rows: list[dict[str, Any]] = []
        tombs: list[Tombstone] = []
        if limit is not None and limit <= 0:
            return rows, tombs
        if phase <= 0:
            low = max(since, last) if phase == 0 else since
            for v, rid in self._row_log[set_name].between(low, upto):
                row = table.get(rid)
                if row is not None and row["versionnumber"] == v:
                    rows.append(row)
                    if limit is not None and len(rows) >= limit:
                        return rows, tombs
        if phase <= 1:
            low = max(since, last) if phase == 1 else since
            for v, rid in self._tomb_log[set_name].between(low, upto):
                if tombs_now.get(rid) == v:
                    tombs.append(Tombstone(v, rid))
                    if limit is not None and len(rows) + len(tombs) >= limit:
                        break
        return rows, tombs


def _state_and_status(entity: EntityDef, out: dict[str, Any]) -> None:
    """A status reason must belong to the state it is written with; a state alone takes its
    default status (the lowest of its reasons), as a SetState does."""
    statuses = STATUS_STATE.get(entity.logical_name)
    if not statuses or "statecode" not in out:
        return
    state, status = out["statecode"], out.get("statuscode")
    if status is None:
        out["statuscode"] = min(s for s, st in statuses.items() if st == state)
    elif statuses.get(status) != state:
        # [unverified code] the service refuses a status reason of another state.
        raise ApiError(400, "0x80040203", f"{status} is not a valid status code for state code "
                       f"{entity.logical_name.capitalize()}State {state} on {entity.logical_name}.")


def not_found(entity: EntityDef, rid: str) -> ApiError:
    return ApiError(404, "0x80040217", f"{entity.logical_name} With Id = {rid} Does Not Exist")


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value
