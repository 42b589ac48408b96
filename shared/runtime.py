"""The composition root: the one place the app's services are built, shared and closed.

Why one place: tokens, connection pools, thread pools and the Marketo call budget must be
shared by every invocation in a worker process (the health page included), and released
when the settings change. Functions call `services()`; the first call reads and checks the
settings (failing with one line naming a bad setting), loads the field map, and creates
the clients. Settings come from the process environment (app settings, as on Azure) unless
`configure` injected others.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shared import config
from shared.clients.dataverse import DataverseClient
from shared.clients.marketo import MarketoClient
from shared.clients.ownuser import OwnUser
from shared.clients.ratelimit import CallBudget
from shared.config import Settings
from shared.errors import ConfigError, StateConflict
from shared.rules import fieldmap as fieldmap_mod
from shared.rules.fieldmap import FieldMap
from shared.rules.typevalidation import Limits
from shared.rules.validation import ColumnRule, EntityRules, labelled
from shared.state.activity import ActivityLog
from shared.state.budget import TableAllowance
from shared.state.budgetrow import BudgetLimits
from shared.state.cursors import CursorStore
from shared.state.eventbuffer import EventBuffer
from shared.state.links import LinkStore
from shared.state.outbox import MarketoOutbox
from shared.state.pause import PauseStore
from shared.state.pending import PendingRequests
from shared.state.storage import Storage
from shared.state.trends import Recorder, TrendStore
from shared.state.workqueue import WorkQueues

log = logging.getLogger("leadsync")

ENTITY_SETS = {"lead": "leads", "contact": "contacts"}
PRIMARY_KEYS = {"lead": "leadid", "contact": "contactid"}
ACTIVITY_TYPE_CURSOR = "marketo-activity-type-id"
# Per service: the limit's window, the block of calls a process leases at a time, and how
# long a calm spell must last before pressure gives back a step of the share.
BUDGET_SHAPES = {"marketo": (20.0, 10, 20.0), "dataverse": (300.0, 25, 60.0)}
# While the budget has ample room, blocks and slots last this long (a crashed holder's come back after it).
BUDGET_LONG_S = 60.0

_budgets: dict[tuple[object, ...], CallBudget] = {}
_budgets_lock = threading.Lock()


def budget_limits(settings: Settings, service: str) -> tuple[BudgetLimits, int]:
    """The shared budget's limits for `service` ("marketo" or "dataverse") and the block of
    calls a process leases at a time."""
    calls, concurrency = settings.marketo_budget() if service == "marketo" else settings.dataverse_budget()
    window_s, block, calm_s = BUDGET_SHAPES[service]
    return BudgetLimits(calls, window_s, concurrency, calm_s=calm_s, long_s=BUDGET_LONG_S), min(block, calls)


def shared_budget(settings: Settings, service: str) -> CallBudget:
    """This process's `CallBudget` for `service` ("marketo" or "dataverse"), drawing on the one
    budget row every instance and process of the deployment shares (`shared.state.budget`).

    One per process and storage, so every rebuild of the services draws on the same one.
    """
    limits, block = budget_limits(settings, service)
    calls, window_s, concurrency = limits.calls, limits.window_s, limits.concurrency
    where = settings.storage_account or settings.storage_connection.reveal()
    key = (service, where, settings.table_prefix, limits)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None:
            # Its own storage: the budget outlives any one build of the services.
            storage = Storage(settings.storage_connection.reveal(), table_prefix=settings.table_prefix,
                              account=settings.storage_account)
            budget = _budgets[key] = CallBudget(calls, window_s, concurrency, block=block,
                                                source=TableAllowance(storage, service, limits))
            if len(_budgets) == 1:
                atexit.register(_give_back_budgets)
        return budget


GIVE_BACK_S = 5.0  # the longest exit waits on storage; what is not given back expires by itself


def _give_back_budgets() -> None:
    """At exit, hand back unstarted calls and slots, so a short-lived process (a CLI command)
    does not keep them from the other instances until they expire. In parallel and for at
    most GIVE_BACK_S: with storage unreachable, the SDK's retries would hold the exit up."""
    def give_back(budget: CallBudget) -> None:
        try:
            budget.close()
        except Exception:  # noqa: BLE001 - exiting anyway; what is held expires by itself
            log.debug("could not give back the shared call budget at exit", exc_info=True)

    threads = [threading.Thread(target=give_back, args=(b,), daemon=True) for b in list(_budgets.values())]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + GIVE_BACK_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


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
    # The webhook's lead and contact lookups run at once on this pool.
    lookups: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="realtime"))
    _rules: dict[str, EntityRules] = field(default_factory=dict)
    _rule_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _activity_type_id: int | None = None
    _last_deletes_poll: float | None = None
    _last_cap_check: float | None = None
    _trends: Recorder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, *, marketo: MarketoClient | None = None,
                      dataverse: DataverseClient | None = None) -> Services:
        fmap = fieldmap_mod.load(settings.field_map)
        storage = Storage(settings.storage_connection.reveal(), table_prefix=settings.table_prefix,
                          account=settings.storage_account)
        if marketo is None:
            marketo = MarketoClient(
                settings.marketo_base_url, settings.marketo_client_id, settings.marketo_client_secret.reveal(),
                budget=shared_budget(settings, "marketo"),
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
                budget=shared_budget(settings, "dataverse"),
            )
        return cls(settings, fmap, storage, LinkStore(storage), CursorStore(storage), ActivityLog(storage),
                   WorkQueues(storage), marketo, dataverse)

    def close(self) -> None:
        """Release what the services hold: thread pools (after work in flight) and HTTP clients."""
        self.lookups.shutdown(wait=True)
        self.links.close()
        self.activity.close()
        self.marketo.close()
        self.dataverse.close()
        self.storage.close()

    # -- derived, cached ---------------------------------------------------------------
    @cached_property
    def pauses(self) -> PauseStore:
        """The shared pause (Marketo's daily quota) every instance reads before spending calls;
        one store per process, so its short "no pause" memory serves every caller."""
        return PauseStore(self.storage, recheck_s=self.settings.marketo_quota_recheck_s,
                          paused_by_setting=self.settings.background_paused)

    @cached_property
    def outbox(self) -> MarketoOutbox:
        """Marketo Activity Log entries the webhook leaves for the Marketo poll timer to batch."""
        return MarketoOutbox(self.storage)

    @cached_property
    def events(self) -> EventBuffer:
        """Ids from the services' change events, coalesced into work messages (`shared.state.eventbuffer`)."""
        return EventBuffer(self.storage, self.queues, delay_s=self.settings.events_coalesce_s,
                           batch_size=self.settings.batch_size, max_window_s=self.settings.events_max_window_s)

    @cached_property
    def own_user(self) -> OwnUser:
        """LeadSync's Dataverse user, so the event receiver can drop the echoes of our own writes."""
        return OwnUser(self.dataverse.who_am_i, self.lookups.submit)

    @cached_property
    def pending(self) -> PendingRequests:
        """Accepted real-time requests, finished by the app if their call dies."""
        return PendingRequests(self.storage, finish_after_s=self.settings.realtime_finish_after_s)

    @property
    def trends(self) -> Recorder:
        """This process's hourly sample for the health page's trends (created on first use)."""
        with self._lock:
            if self._trends is None:
                self._trends = Recorder(TrendStore(self.storage), every_s=self.settings.trends_every_s)
            return self._trends

    def select(self, entity: str) -> list[str]:
        """Dataverse columns read for `entity`: mapped ones plus what the sync decides on."""
        cols = self.fields.columns(entity) + [self.settings.sync_filter_field, "statecode", "createdon", "modifiedon"]
        cols += ["merged", "_masterid_value"]  # a record merged into another in Dynamics (sync/merges)
        if entity == "contact":
            cols.append("_originatingleadid_value")
        else:  # how a closed lead ended: qualified into which contact, disqualified or cancelled
            cols += ["statuscode", "_parentcontactid_value"]
        if self.settings.owner_email_field:
            cols.append("_ownerid_value")
        return cols

    def marketo_fields(self) -> list[str]:
        extra = [f for f in (self.settings.lead_owner_field, self.settings.owner_email_field) if f]
        return list(dict.fromkeys(["id", *self.fields.marketo_fields(), *extra]))

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
                                       frozenset(a.options) if a.options is not None else None,
                                       limits=Limits(a.precision, a.min_value, a.max_value, a.date_only, a.targets))
            for a in meta.attributes.values()
        }
        labels = {c: spec.marketo for spec in self.fields.for_entity(entity) if (c := spec.column(entity))}
        return labelled(EntityRules(entity, columns), labels)

    def check_field_map(self) -> None:
        """Refuse a field map naming fields either service doesn't have (ConfigError).

        Run once per process before the first sync: one Marketo describe call and the
        entity metadata the validator needs anyway.
        """
        marketo_fields = {f.name: f for f in self.marketo.describe()}
        columns = {entity: self.dataverse.attributes(entity).attributes for entity in ENTITY_SETS}
        fieldmap_mod.check_against(self.fields, marketo_fields, columns)
        for entity, column in ((e, self.settings.sync_filter_field) for e in ENTITY_SETS):
            if column not in columns[entity]:
                raise ConfigError("DATAVERSE_SYNC_FILTER_FIELD", f"Dataverse {entity} has no column {column!r}")
        if self.settings.marketo_deleted_field not in marketo_fields:
            raise ConfigError("MARKETO_DELETED_FIELD", f"Marketo has no field {self.settings.marketo_deleted_field!r}")
        s = self.settings
        for setting, name in (("LEADSYNC_LEAD_OWNER_FIELD", s.lead_owner_field),
                              ("LEADSYNC_OWNER_EMAIL_FIELD", s.owner_email_field),
                              ("LEADSYNC_CLOSED_LEAD_ACTION", s.closed_lead_action.field)):
            if name and name not in marketo_fields:
                raise ConfigError(setting, f"Marketo has no field {name!r}")

    def deletes_due(self) -> bool:
        """Whether the Marketo deleted-leads feed is due (claims the slot when it is)."""
        now = time.monotonic()
        with self._lock:
            if self._last_deletes_poll is not None and \
                    now - self._last_deletes_poll < self.settings.marketo_deletes_every_s:
                return False
            self._last_deletes_poll = now
            return True

    def cap_check_due(self, every_s: float) -> bool:
        """Whether the daily cap is due to be checked against Marketo's usage (claims the slot)."""
        now = time.monotonic()
        with self._lock:
            if self._last_cap_check is not None and now - self._last_cap_check < every_s:
                return False
            self._last_cap_check = now
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
_checked = False
_services_lock = threading.Lock()


def configure(env: Mapping[str, str] | None) -> None:
    """Run this process with the app settings `env` (None: the process environment again).

    For a host that runs the app in its own process (devhost, tests): the settings are handed
    over instead of written into `os.environ`. The services built from the old ones are closed.
    """
    with _services_lock:
        config.use_env(env)
        _forget()


def services(*, checked: bool = True) -> Services:
    """This process's services, built on first use and again when the settings change.

    `checked=False` skips the start-up check of the field map against both APIs (the health
    page must load while Dataverse or Marketo is down); a later checked call still runs it
    once. Raises ConfigError naming a bad setting.
    """
    global _services, _checked
    settings = Settings.from_env()
    with _services_lock:
        if _services is not None and _services.settings != settings:
            _forget()
        if _services is None:
            _services = Services.from_settings(settings)
        if checked and not _checked:
            _services.check_field_map()
            _checked = True
            log.info("LeadSync services ready: %d mapped fields", len(_services.fields.fields))
        return _services


def reset_services() -> None:
    """Close and forget this process's services; the next `services()` builds them again."""
    with _services_lock:
        _forget()


def _forget() -> None:
    global _services, _checked
    if _services is not None:
        _services.close()
    _services, _checked = None, False
