"""Preflight I/O: ask each configured service what `shared.ops.preflight` needs to judge.

Only reads: every Marketo endpoint LeadSync reads is called once (the write endpoints
cannot be probed without writing, so their permissions show up only as failures); on
Dataverse, WhoAmI, `$top=1` reads of lead and contact, and their metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from azure.core.exceptions import AzureError

from shared.clients.dataverse_models import EntityMetadata
from shared.clients.marketo_models import FieldInfo
from shared.errors import ConfigError, DataverseError, LeadSyncError, MarketoError, Problem, QuotaExhausted
from shared.ops import preflight
from shared.ops.preflight import Finding, Report
from shared.runtime import ACTIVITY_TYPE_CURSOR, ENTITY_SETS, Services
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO
from shared.sync import owners

T = TypeVar("T")
IDENTITY_REFUSED = {"400", "401"}


def run(svc: Services) -> Report:
    report = Report()
    report.findings += _storage(svc)
    marketo_fields = _marketo(svc, report)
    columns = _dataverse(svc, report)
    if marketo_fields is not None and len(columns) == len(ENTITY_SETS):
        report.findings += preflight.field_findings(svc.fields, marketo_fields, columns)
        report.findings += preflight.setting_field_findings(
            svc.settings.sync_filter_field, svc.settings.marketo_deleted_field, marketo_fields, columns)
    report.findings += _owner_and_partition(svc)
    return report


def _owner_and_partition(svc: Services) -> list[Finding]:
    """The configured lead owner names an enabled user or a team; the partition exists."""
    found: list[Finding] = []
    s = svc.settings
    if s.lead_owner is not None:
        try:
            owner = owners.resolve(svc, s.lead_owner, "LEADSYNC_LEAD_OWNER")
        except DataverseError as exc:
            found.append(preflight.privilege_finding("read the lead owner", exc.code, exc.message))
        else:
            if isinstance(owner, Problem):
                found.append(Finding("lead-owner", owner.message, "set LEADSYNC_LEAD_OWNER to an enabled user's "
                                     "id or email, or a team's id or name"))
    if s.marketo_partition:
        try:
            names = [str(p.get("name")) for p in svc.marketo.partitions()]
        except MarketoError as exc:
            found.append(preflight.marketo_denied("GET /rest/v1/leads/partitions.json", "Read-Write Person",
                                                  exc.code, exc.message))
        else:
            if s.marketo_partition not in names:
                found.append(Finding("marketo-partition", f"Marketo has no lead partition {s.marketo_partition!r} "
                                     f"(it has {', '.join(names) or 'none'})", "set MARKETO_PARTITION to one of "
                                     "them, or add it in Admin > Workspaces & Partitions"))
    return found


def storage_unreachable(exc: AzureError) -> Finding:
    """Storage refused or never answered (also when opening the services, which creates the tables)."""
    first = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).splitlines()[0]
    return Finding("storage", f"storage unreachable: {first}",
                   "check AzureWebJobsStorage (or the managed identity's Storage Queue/Table Data roles)")


def _storage(svc: Services) -> list[Finding]:
    try:
        for queue in (FROM_MARKETO, FROM_DYNAMICS):
            svc.queues.depth(queue)
        svc.cursors.get(ACTIVITY_TYPE_CURSOR)
    except AzureError as exc:
        return [storage_unreachable(exc)]
    return []


def _marketo(svc: Services, report: Report) -> dict[str, FieldInfo] | None:
    """Credentials, then each read endpoint; returns the describe result (None if it failed)."""
    client = svc.marketo
    quota = svc.settings.marketo_daily_quota
    probes: list[tuple[str, str, Callable[[], Any]]] = [
        ("GET /rest/v1/leads/describe.json", "Read-Write Person", client.describe),
        ("GET /rest/v1/leads.json", "Read-Write Person", lambda: client.get_leads([0], ["id"])),
        ("GET /rest/v1/activities/pagingtoken.json", "Read-Write Activity",
         lambda: client.paging_token(datetime.now(UTC))),
        ("GET /rest/v1/activities/external/types.json", "Read-Only Activity Metadata", client.activity_types),
        ("GET /rest/v1/stats/usage.json", "Access API", client.usage),
    ]
    answers: dict[str, Any] = {}
    for endpoint, permission, call in probes:
        try:
            answers[endpoint] = call()
        except QuotaExhausted as exc:
            report.findings += preflight.quota_findings(quota, quota)
            report.facts["marketo_quota_resets_at"] = exc.resets_at.isoformat()
            break
        except MarketoError as exc:
            if exc.code in IDENTITY_REFUSED and not answers:
                report.findings.append(Finding("marketo-credentials", f"Marketo refused the credentials: "
                                               f"{exc.message}", "check MARKETO_CLIENT_ID and "
                                               "MARKETO_CLIENT_SECRET (Admin > LaunchPoint > View Details)"))
                return None
            report.findings.append(preflight.marketo_denied(endpoint, permission, exc.code, exc.message))
    types = answers.get("GET /rest/v1/activities/external/types.json")
    if types is not None:
        in_use = svc.cursors.get(ACTIVITY_TYPE_CURSOR) is not None
        report.findings += preflight.activity_type_findings(types, svc.settings.marketo_activity_type, in_use=in_use)
    used = answers.get("GET /rest/v1/stats/usage.json")
    if used is not None:
        report.facts["marketo_calls_today"] = used
        report.facts["marketo_daily_quota"] = quota
        report.findings += preflight.quota_findings(used, quota)
    fields = answers.get("GET /rest/v1/leads/describe.json")
    return {f.name: f for f in fields} if fields is not None else None


def _dataverse(svc: Services, report: Report) -> dict[str, EntityMetadata]:
    """Credentials, reads of lead and contact, their metadata and change tracking."""
    client = svc.dataverse
    try:
        client.who_am_i()
    except (ConfigError, DataverseError) as exc:
        report.findings.append(Finding("dataverse-credentials", f"Dataverse refused the application user: {exc}",
                                       "check DATAVERSE_TENANT_ID, DATAVERSE_CLIENT_ID and the secret or "
                                       "certificate, and that the app registration is an application user"))
        return {}
    columns: dict[str, EntityMetadata] = {}
    tracking: dict[str, bool] = {}
    for entity, entity_set in ENTITY_SETS.items():
        _dv(report, f"read {entity_set}", partial(client.query, entity_set, None, [f"{entity}id"], top=1))
        meta = _dv(report, f"read {entity} metadata", partial(client.attributes, entity))
        facts = _dv(report, f"read the {entity} table definition",
                    partial(client.entity_definition, entity, ["ChangeTrackingEnabled"]))
        if meta is not None:
            columns[entity] = meta
        if facts is not None:
            tracking[entity] = bool(facts.get("ChangeTrackingEnabled"))
    report.findings += preflight.change_tracking_findings(tracking)
    return columns


def _dv(report: Report, what: str, call: Callable[[], T]) -> T | None:
    try:
        return call()
    except DataverseError as exc:
        report.findings.append(preflight.privilege_finding(what, exc.code, exc.message))
    except LeadSyncError as exc:
        report.findings.append(Finding("dataverse", f"{what} failed: {exc}", "see the error; run the check again"))
    return None
