"""Settings, read once from environment variables (Function App settings / local.settings.json).

`Settings.from_env()` validates everything at once and fails with one line naming the
setting, so a misconfigured app stops at start, not with a KeyError deep in a request.
Secrets are kept in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from shared.errors import ConfigError

_injected: Mapping[str, str] | None = None  # settings a host handed over; None: the process environment


def use_env(env: Mapping[str, str] | None) -> None:
    """Read the app settings from `env` from now on (None: the process environment again).

    For a host that runs the app inside its own process (devhost, tests): it hands the
    settings over here instead of writing them into `os.environ`.
    """
    global _injected
    _injected = dict(env) if env is not None else None


def app_env() -> Mapping[str, str]:
    """The app settings: what a host handed over with `use_env`, else the process environment."""
    return _injected if _injected is not None else os.environ

DEFAULT_POLL_SCHEDULE = "*/30 * * * * *"
# The services' own limits (per Marketo subscription, per Dataverse application user).
MARKETO_CALLS_PER_20S = 100
MARKETO_CONCURRENCY = 10
DATAVERSE_REQUESTS_PER_5MIN = 6000
DATAVERSE_CONCURRENCY = 52
# Settings of earlier versions, refused so that a stale value is not silently ignored.
REPLACED = {"MARKETO_CALLS_PER_20S": "LEADSYNC_MARKETO_SHARE_PCT",
            "MARKETO_MAX_CONCURRENCY": "LEADSYNC_MARKETO_SHARE_PCT"}
_NCRONTAB = re.compile(r"^\s*(\S+\s+){5}\S+\s*$")
_TIMESPAN = re.compile(r"^\d{1,2}:\d{2}:\d{2}$")


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _secret() -> Secret:
    return Secret("")


@dataclass(frozen=True)
class Settings:
    storage_connection: Secret  # empty when the app uses its managed identity (storage_account)
    marketo_base_url: str
    marketo_client_id: str
    marketo_client_secret: Secret
    dataverse_url: str
    dataverse_tenant_id: str
    dataverse_client_id: str
    dataverse_client_secret: Secret = field(default_factory=_secret)
    dataverse_certificate_path: str | None = None
    dataverse_certificate_thumbprint: str | None = None
    dataverse_authority_host: str = "https://login.microsoftonline.com"
    dataverse_ca_bundle: str | None = None
    marketo_share_pct: int = 90  # of Marketo's rate and concurrency limits, for every instance together
    dataverse_share_pct: int = 90  # of Dataverse's service-protection limits, for every instance together
    worker_processes: int = 1  # FUNCTIONS_WORKER_PROCESS_COUNT
    marketo_activity_type: str = "leadsyncEvent"
    marketo_deleted_field: str = "msftIsDeleted"
    sync_filter_field: str = "new_synctomkto"
    field_map: str | None = None
    table_prefix: str = "leadsync"
    storage_account: str | None = None  # AzureWebJobsStorage__accountName: managed identity
    marketo_deletes_every_s: int = 300
    marketo_quota_recheck_s: int = 300  # while paused for the daily quota, how often one caller re-checks
    realtime_finish_after_s: int = 150  # a sync-person call not answered by then is finished by the app
    marketo_daily_quota: int = 50_000  # the subscription's daily API quota (subscriptions differ)
    daily_cap_pct: int = 80  # LeadSync's share of that quota; the rest is left to other integrations
    realtime_reserve_pct: int = 5  # of the quota, kept inside the cap for the real-time endpoint
    background_paused: bool = False  # an operator's lever: the background sync waits, real time serves
    cap_check_s: int = 300  # how often a process reads Marketo's usage to apply the daily cap (one call)
    webhook_secret: Secret = field(default_factory=_secret)
    batch_size: int = 300
    trends_every_s: int = 600  # how often a process writes its hourly trend sample, at most
    lead_owner: OwnerRef | None = None  # LEADSYNC_LEAD_OWNER: who owns the leads LeadSync creates
    lead_owner_field: str | None = None  # LEADSYNC_LEAD_OWNER_FIELD: a Marketo field holding the owner's email
    owner_email_field: str | None = None  # LEADSYNC_OWNER_EMAIL_FIELD: Marketo field the owner's email goes to
    closed_lead_action: ClosedLeadAction = field(default_factory=lambda: ClosedLeadAction("keep"))
    marketo_partition: str | None = None  # MARKETO_PARTITION: where new Marketo people are created
    duplicate_detection: bool = True  # DATAVERSE_DUPLICATE_DETECTION: real-time creates obey the org's rules
    events_coalesce_s: int = 1  # change events arriving within this window become one drain's work messages
    events_max_window_s: int = 30  # a busy lane's window stretches up to this while ids keep coming

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and check every setting; raise ConfigError naming the first bad one."""
        e = app_env() if env is None else env
        for old, new in REPLACED.items():
            if e.get(old, "").strip():
                raise ConfigError(old, f"is replaced by {new}: one budget for every instance, not a cap per instance")

        def required(name: str) -> str:
            value = e.get(name, "").strip()
            if not value:
                raise ConfigError(name, "is required but not set")
            return value

        def optional(name: str) -> str | None:
            value = e.get(name, "").strip()
            return value or None

        def url(name: str, *, https_only: bool) -> str:
            value = required(name).rstrip("/")
            try:
                parts = urlsplit(value)
            except ValueError:
                parts = urlsplit("")
            allowed = ("https",) if https_only else ("https", "http")
            if parts.scheme not in allowed or not parts.netloc:
                want = "an https:// URL" if https_only else "an http(s):// URL"
                raise ConfigError(name, f"must be {want}, got {value!r}")
            return value

        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = optional(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
            if not low <= value <= high:
                raise ConfigError(name, f"must be between {low} and {high}, got {value}")
            return value

        def boolean(name: str, default: bool) -> bool:
            raw = optional(name)
            if raw is None:
                return default
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(name, f"must be true or false, got {raw!r}")
            return raw.lower() in ("true", "1")

        cap = integer("LEADSYNC_DAILY_CAP_PCT", 80, 1, 100)
        reserve = integer("LEADSYNC_REALTIME_RESERVE_PCT", 5, 0, 99)
        if reserve >= cap:
            raise ConfigError("LEADSYNC_REALTIME_RESERVE_PCT", f"must be below LEADSYNC_DAILY_CAP_PCT ({cap}), "
                                                               f"got {reserve}")
        storage = optional("AzureWebJobsStorage")
        if storage is None and optional("AzureWebJobsStorage__accountName") is None:
            raise ConfigError("AzureWebJobsStorage", "is required (or AzureWebJobsStorage__accountName)")
        secret = optional("DATAVERSE_CLIENT_SECRET")
        cert = optional("DATAVERSE_CERTIFICATE_PATH")
        if secret is None and cert is None:
            raise ConfigError("DATAVERSE_CLIENT_SECRET", "is required (or DATAVERSE_CERTIFICATE_PATH)")
        thumbprint = optional("DATAVERSE_CERTIFICATE_THUMBPRINT")
        if cert is not None and thumbprint is None:
            raise ConfigError("DATAVERSE_CERTIFICATE_THUMBPRINT", "is required with DATAVERSE_CERTIFICATE_PATH")
        ca_bundle = optional("DATAVERSE_CA_BUNDLE")
        if ca_bundle is not None and not os.path.isfile(ca_bundle):
            raise ConfigError("DATAVERSE_CA_BUNDLE", f"file {ca_bundle!r} does not exist")
        for name in ("MARKETO_POLL_SCHEDULE", "DATAVERSE_POLL_SCHEDULE"):
            poll_schedule(name, e)
        prefix = optional("LEADSYNC_TABLE_PREFIX") or "leadsync"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,40}", prefix):
            raise ConfigError("LEADSYNC_TABLE_PREFIX", "must be letters and digits, starting with a letter")
        return cls(
            storage_connection=Secret(storage or ""),
            marketo_base_url=url("MARKETO_BASE_URL", https_only=False),
            marketo_client_id=required("MARKETO_CLIENT_ID"),
            marketo_client_secret=Secret(required("MARKETO_CLIENT_SECRET")),
            dataverse_url=url("DATAVERSE_URL", https_only=True),
            dataverse_tenant_id=required("DATAVERSE_TENANT_ID"),
            dataverse_client_id=required("DATAVERSE_CLIENT_ID"),
            dataverse_client_secret=Secret(secret or ""),
            dataverse_certificate_path=cert,
            dataverse_certificate_thumbprint=thumbprint,
            dataverse_authority_host=(
                url("DATAVERSE_AUTHORITY_HOST", https_only=True)
                if optional("DATAVERSE_AUTHORITY_HOST")
                else "https://login.microsoftonline.com"
            ),
            dataverse_ca_bundle=ca_bundle,
            marketo_share_pct=integer("LEADSYNC_MARKETO_SHARE_PCT", 90, 1, 100),
            dataverse_share_pct=integer("LEADSYNC_DATAVERSE_SHARE_PCT", 90, 1, 100),
            worker_processes=integer("FUNCTIONS_WORKER_PROCESS_COUNT", 1, 1, 10),
            marketo_activity_type=optional("MARKETO_ACTIVITY_TYPE") or "leadsyncEvent",
            marketo_deleted_field=optional("MARKETO_DELETED_FIELD") or "msftIsDeleted",
            sync_filter_field=optional("DATAVERSE_SYNC_FILTER_FIELD") or "new_synctomkto",
            field_map=optional("LEADSYNC_FIELD_MAP"),
            table_prefix=prefix,
            storage_account=optional("AzureWebJobsStorage__accountName") if storage is None else None,
            marketo_deletes_every_s=integer("MARKETO_DELETES_EVERY_S", 300, 0, 86400),
            marketo_quota_recheck_s=integer("MARKETO_QUOTA_RECHECK_S", 300, 1, 86400),
            realtime_finish_after_s=integer("LEADSYNC_REALTIME_FINISH_AFTER_S", 150, 1, 3600),
            marketo_daily_quota=integer("MARKETO_DAILY_QUOTA", 50_000, 1, 100_000_000),
            daily_cap_pct=cap,
            realtime_reserve_pct=reserve,
            background_paused=boolean("LEADSYNC_BACKGROUND_PAUSED", False),
            cap_check_s=integer("LEADSYNC_CAP_CHECK_S", 300, 0, 86400),
            webhook_secret=Secret(optional("LEADSYNC_WEBHOOK_SECRET") or ""),
            batch_size=integer("LEADSYNC_BATCH_SIZE", 300, 1, 300),
            trends_every_s=integer("LEADSYNC_TRENDS_EVERY_S", 600, 0, 3600),
            lead_owner=parse_owner("LEADSYNC_LEAD_OWNER", optional("LEADSYNC_LEAD_OWNER")),
            lead_owner_field=optional("LEADSYNC_LEAD_OWNER_FIELD"),
            owner_email_field=optional("LEADSYNC_OWNER_EMAIL_FIELD"),
            closed_lead_action=parse_closed_lead_action(optional("LEADSYNC_CLOSED_LEAD_ACTION")),
            marketo_partition=optional("MARKETO_PARTITION"),
            duplicate_detection=boolean("DATAVERSE_DUPLICATE_DETECTION", True),
            events_coalesce_s=integer("LEADSYNC_EVENTS_COALESCE_S", 1, 0, 60),
            events_max_window_s=integer("LEADSYNC_EVENTS_MAX_WINDOW_S", 30, 0, 300),
        )

    def marketo_budget(self) -> tuple[int, int]:
        """LeadSync's share of Marketo's limits: (calls per 20 s, concurrent calls), for every
        instance and process together (the shared budget, `shared.state.budget`)."""
        return (max(1, MARKETO_CALLS_PER_20S * self.marketo_share_pct // 100),
                max(1, MARKETO_CONCURRENCY * self.marketo_share_pct // 100))

    def dataverse_budget(self) -> tuple[int, int]:
        """LeadSync's share of Dataverse's service-protection limits: (requests per 5 min,
        concurrent requests), for every instance and process together."""
        return (max(1, DATAVERSE_REQUESTS_PER_5MIN * self.dataverse_share_pct // 100),
                max(1, DATAVERSE_CONCURRENCY * self.dataverse_share_pct // 100))

    def __repr__(self) -> str:
        # Secret already masks itself; listing fields keeps the repr useful in logs.
        inner = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"Settings({inner})"


def poll_schedule(name: str, env: Mapping[str, str] | None = None) -> str:
    """A timer schedule setting (six-field NCRONTAB or hh:mm:ss), with the 30 s default.

    Read at import time by the timer blueprint, since the host needs schedules when it
    indexes the functions.
    """
    e = app_env() if env is None else env
    value = e.get(name, "").strip() or DEFAULT_POLL_SCHEDULE
    if not (_NCRONTAB.match(value) or _TIMESPAN.match(value)):
        raise ConfigError(name, f"must be a six-field NCRONTAB expression or hh:mm:ss, got {value!r}")
    return value


_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class OwnerRef:
    """A Dynamics owner as configured: a user or team, named by id, a user by email, a team by name."""

    table: str  # "systemuser" | "team"
    by: str  # "id" | "email" | "name"
    value: str

    def __str__(self) -> str:
        return f"{self.table} {self.by} {self.value}"


def parse_owner(name: str, raw: str | None) -> OwnerRef | None:
    """`systemuser:<id|email>`, `team:<id|name>`, or a bare email (a user); ConfigError otherwise."""
    if raw is None:
        return None
    table, sep, value = raw.partition(":")
    if not sep:
        table, value = "systemuser", raw
    table, value = table.strip().lower(), value.strip()
    if table not in ("systemuser", "team") or not value:
        raise ConfigError(name, f"must be systemuser:<id or email>, team:<id or name> or an email, got {raw!r}")
    if _GUID.match(value):
        return OwnerRef(table, "id", value.lower())
    if table == "team":
        return OwnerRef(table, "name", value)
    if not _EMAIL.match(value):
        raise ConfigError(name, f"a user is named by its id or its email, got {value!r}")
    return OwnerRef(table, "email", value)


@dataclass(frozen=True)
class ClosedLeadAction:
    """What a disqualified or cancelled lead does to its Marketo person: keep (nothing is written),
    unlink (the link ends, the person is free for a new lead), or mark (its status goes to `field`)."""

    action: str  # "keep" | "unlink" | "mark"
    field: str | None = None


def parse_closed_lead_action(raw: str | None) -> ClosedLeadAction:
    if raw is None or raw.strip().lower() == "keep":
        return ClosedLeadAction("keep")
    if raw.strip().lower() == "unlink":
        return ClosedLeadAction("unlink")
    action, _, marketo_field = raw.partition(":")
    if action.strip().lower() == "mark" and marketo_field.strip():
        return ClosedLeadAction("mark", marketo_field.strip())
    raise ConfigError("LEADSYNC_CLOSED_LEAD_ACTION", f"must be keep, unlink or mark:<Marketo field>, got {raw!r}")
