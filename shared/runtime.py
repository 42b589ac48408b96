"""The process-wide services the functions use, built once from Settings.

Functions call `services()`; the first call reads and checks the settings (failing with
one line naming a bad setting), loads the field map, and creates the clients. Later calls
return the same object, so tokens, connection pools and the Marketo call budget are
shared by every invocation in the worker process.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from shared import fieldmap as fieldmap_mod
from shared.activity import ActivityLog
from shared.config import Settings
from shared.cursors import CursorStore
from shared.dataverse import DataverseClient
from shared.errors import ConfigError, StateConflict
from shared.fieldmap import FieldMap
from shared.links import LinkStore
from shared.marketo import CallBudget, MarketoClient
from shared.pause import PauseStore
from shared.storage import Storage
from shared.validation import ColumnRule, EntityRules, labelled
from shared.workqueue import WorkQueues

log = logging.getLogger("leadsync")

ENTITY_SETS = {"lead": "leads", "contact": "contacts"}
PRIMARY_KEYS = {"lead": "leadid", "contact": "contactid"}
ACTIVITY_TYPE_CURSOR = "marketo-activity-type-id"


@dataclass
class Services:
    settings: Settings
    fields: FieldMap
    storage: Storage
    links: LinkStore
    cursors: CursorStore
    activity: ActivityLog
    queues: WorkQueues
    marketo: MarketoClient
    dataverse: DataverseClient
    _rules: dict[str, EntityRules] = field(default_factory=dict)
    _rule_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _activity_type_id: int | None = None
    _last_deletes_poll: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, marketo: MarketoClient | None = None,
                      dataverse: DataverseClient | None = None) -> Services:
        fmap = fieldmap_mod.load(settings.field_map)
        storage = Storage(settings.storage_connection.reveal(), table_prefix=settings.table_prefix,
                          account=settings.storage_account)
        if marketo is None:
            calls, concurrency = settings.marketo_budget()
            marketo = MarketoClient(
                settings.marketo_base_url, settings.marketo_client_id, settings.marketo_client_secret.reveal(),
                budget=CallBudget(calls=calls, window_s=20, concurrency=concurrency),
            )
        if dataverse is None:
            certificate: dict[str, Any] | None = None
            if settings.dataverse_certificate_path:
                with open(settings.dataverse_certificate_path) as fh:
                    certificate = {"private_key": fh.read(),
                                   "thumbprint": settings.dataverse_certificate_thumbprint}
            dataverse = DataverseClient(
                settings.dataverse_url, settings.dataverse_tenant_id, settings.dataverse_client_id,
                client_secret=settings.dataverse_client_secret.reveal() or None,
                client_certificate=certificate,
                authority_host=settings.dataverse_authority_host,
                ca_bundle=settings.dataverse_ca_bundle,
            )
        return cls(settings, fmap, storage, LinkStore(storage), CursorStore(storage), ActivityLog(storage),
                   WorkQueues(storage), marketo, dataverse)

    # -- derived, cached ---------------------------------------------------------------
    @property
    def pauses(self) -> PauseStore:
        """The shared pause (Marketo's daily quota) every instance reads before spending calls."""
        return PauseStore(self.storage, recheck_s=self.settings.marketo_quota_recheck_s)

    def select(self, entity: str) -> list[str]:
        """Dataverse columns read for `entity`: mapped ones plus what the sync decides on."""
        cols = self.fields.columns(entity) + [self.settings.sync_filter_field, "statecode", "createdon", "modifiedon"]
        if entity == "contact":
            cols.append("_originatingleadid_value")
        return cols

    def marketo_fields(self) -> list[str]:
        return ["id", *self.fields.marketo_fields()]

    def rules(self, entity: str) -> EntityRules:
        """Dynamics' validation rules for `entity`, read once per process from its metadata."""
        with self._lock:
            entity_lock = self._rule_locks.setdefault(entity, threading.Lock())
        with entity_lock:  # one fetch per entity, however many batches start at once
            cached = self._rules.get(entity)
            if cached is None:
                cached = self._rules[entity] = self._fetch_rules(entity)
            return cached

    def _fetch_rules(self, entity: str) -> EntityRules:
        meta = self.dataverse.attributes(entity)
        columns = {
            a.logical_name: ColumnRule(a.logical_name, a.attribute_type, a.required_level, a.max_length, a.format,
                                       frozenset(a.options) if a.options is not None else None)
            for a in meta.attributes.values()
        }
        labels = {c: spec.marketo for spec in self.fields.for_entity(entity) if (c := spec.column(entity))}
        return labelled(EntityRules(entity, columns), labels)

    def check_field_map(self) -> None:
        """Refuse a field map naming fields either service doesn't have (ConfigError).

        Run once per process before the first sync: one Marketo describe call and the
        entity metadata the validator needs anyway.
        """
        marketo_fields = {f.name for f in self.marketo.describe()}
        columns = {entity: set(self.dataverse.attributes(entity).attributes) for entity in ENTITY_SETS}
        fieldmap_mod.check_against(self.fields, marketo_fields, columns)
        for entity, column in ((e, self.settings.sync_filter_field) for e in ENTITY_SETS):
            if column not in columns[entity]:
                raise ConfigError("DATAVERSE_SYNC_FILTER_FIELD", f"Dataverse {entity} has no column {column!r}")
        if self.settings.marketo_deleted_field not in marketo_fields:
            raise ConfigError("MARKETO_DELETED_FIELD", f"Marketo has no field {self.settings.marketo_deleted_field!r}")

    def deletes_due(self) -> bool:
        """Whether the Marketo deleted-leads feed is due (claims the slot when it is)."""
        now = time.monotonic()
        with self._lock:
            if self._last_deletes_poll is not None and \
                    now - self._last_deletes_poll < self.settings.marketo_deletes_every_s:
                return False
            self._last_deletes_poll = now
            return True

    def activity_type_id(self) -> int:
        """The Marketo custom activity type LeadSync writes to person Activity Logs."""
        with self._lock:
            if self._activity_type_id is not None:
                return self._activity_type_id
        stored = self.cursors.get(ACTIVITY_TYPE_CURSOR)
        if stored is not None:
            type_id = int(stored.value)
        else:
            type_id = self.marketo.ensure_activity_type(
                self.settings.marketo_activity_type, "LeadSync Dynamics Sync", "reason",
                [("detail", "Detail", "text"), ("operation", "Operation", "string")],
            )
            try:
                self.cursors.save(ACTIVITY_TYPE_CURSOR, str(type_id), previous=None)
            except StateConflict:
                pass  # another worker stored the same type id first
        with self._lock:
            self._activity_type_id = type_id
        return type_id


_services: Services | None = None
_services_lock = threading.Lock()


def services() -> Services:
    global _services
    with _services_lock:
        if _services is None:
            svc = Services.from_settings(Settings.from_env())
            svc.check_field_map()
            _services = svc
            log.info("LeadSync services ready: %d mapped fields", len(svc.fields.fields))
        return _services


def reset_services() -> None:
    """Forget the cached services (tests and devhost change settings between runs)."""
    global _services
    with _services_lock:
        _services = None
