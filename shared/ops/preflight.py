"""Preflight: what `leadsync check` concludes from what the services answered (pure, no I/O).

`shared.ops.preflight_probe` asks Marketo, Dataverse and storage; the functions here turn the
answers into findings, one per problem, each with the fix an admin applies. A `PROBLEM`
makes the check fail; a `WARNING` is listed on request but does not (e.g. a Dynamics column
shorter than its Marketo field: a longer value fails validation and is reported, never cut).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from shared.clients.dataverse_models import EntityMetadata
from shared.clients.marketo_models import FieldInfo
from shared.rules import fieldcompat
from shared.rules.fieldcompat import Mismatch
from shared.rules.fieldmap import FieldMap

PRIVILEGE_DENIED = "0x80040220"
ACCESS_DENIED = "603"
_PRIVILEGE = re.compile(r"\bprv[A-Za-z]+")


class Severity(StrEnum):
    PROBLEM = "problem"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    check: str  # which check found it, e.g. "dataverse-privileges"
    problem: str
    fix: str
    severity: Severity = Severity.PROBLEM

    def line(self) -> str:
        return f"{self.check}: {self.problem} -> {self.fix}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # what was learned on the way, e.g. calls used today

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.PROBLEM]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [asdict(f) for f in self.problems],
                "warnings": [asdict(f) for f in self.warnings], "facts": self.facts}


def privilege_of(message: str) -> str | None:
    """The privilege a Dataverse 0x80040220 message names ("... is missing prvReadLead privilege ...")."""
    match = _PRIVILEGE.search(message)
    return match.group(0) if match else None


def privilege_finding(what: str, code: str, message: str) -> Finding:
    """A Dataverse refusal of `what` (e.g. "reading leads") as a finding with its fix."""
    privilege = privilege_of(message) if code == PRIVILEGE_DENIED else None
    if privilege:
        return Finding("dataverse-privileges", f"the application user may not {what} ({privilege} missing)",
                       f"grant {privilege} (organization level) to the application user's security role")
    return Finding("dataverse-privileges", f"{what} failed: {code or 'no code'} {message}".strip(),
                   "check the application user's security roles and the environment's state")


def marketo_denied(endpoint: str, permission: str, code: str, message: str) -> Finding:
    """A Marketo refusal of one endpoint LeadSync uses."""
    if code == ACCESS_DENIED:
        return Finding("marketo-permissions", f"the API user may not call {endpoint} (603 Access denied)",
                       f"give the API user's role the {permission} permission (Admin > Users & Roles)")
    return Finding("marketo-permissions", f"{endpoint} failed: {code} {message}",
                   "check the Marketo instance and the API user")


def field_findings(fmap: FieldMap, marketo: Mapping[str, FieldInfo],
                   columns: Mapping[str, EntityMetadata]) -> list[Finding]:
    """Every mapped field exists on both sides with a type that carries it and a length that fits."""
    out: list[Finding] = []
    for spec in fmap.fields:
        info = marketo.get(spec.marketo)
        if info is None:
            out.append(Finding("fields", f"Marketo has no field {spec.marketo!r}",
                               f"create {spec.marketo!r} in Marketo (Admin > Field Management) or remove it "
                               "from LEADSYNC_FIELD_MAP"))
        else:
            out += _findings(fieldcompat.marketo_mismatch(spec, info))
        for entity, column in spec.columns.items():
            attr = columns[entity].attributes.get(column) if entity in columns else None
            if attr is None:
                out.append(Finding("fields", f"Dataverse {entity} has no column {column!r}",
                                   f"create {column!r} on {entity} or remove it from LEADSYNC_FIELD_MAP"))
                continue
            target = spec.lookup.target if spec.lookup else None
            out += _findings(fieldcompat.column_mismatch(spec, info, entity, column, attr, target))
    return out


def _findings(mismatches: list[Mismatch]) -> list[Finding]:
    return [Finding("fields", m.problem, m.fix, Severity.WARNING if m.warning else Severity.PROBLEM)
            for m in mismatches]


def setting_field_findings(filter_field: str, deleted_field: str, marketo: Mapping[str, FieldInfo],
                           columns: Mapping[str, EntityMetadata]) -> list[Finding]:
    """The fields the sync itself relies on (the sync filter column, the Marketo deleted flag)."""
    out = [Finding("fields", f"Dataverse {entity} has no column {filter_field!r} (DATAVERSE_SYNC_FILTER_FIELD)",
                   f"create the Two Options column {filter_field!r} on {entity} or change the setting")
           for entity, meta in columns.items() if filter_field not in meta.attributes]
    if deleted_field not in marketo:
        out.append(Finding("fields", f"Marketo has no field {deleted_field!r} (MARKETO_DELETED_FIELD)",
                           f"create the Boolean field {deleted_field!r} in Marketo or change the setting"))
    return out


def change_tracking_findings(enabled: Mapping[str, bool]) -> list[Finding]:
    return [Finding("change-tracking", f"change tracking is off on {entity}",
                    f"turn on 'Track changes' for the {entity} table (make.powerapps.com > Tables > {entity} > "
                    "Properties > Advanced options)")
            for entity, on in enabled.items() if not on]


def activity_type_findings(types: list[dict[str, Any]], api_name: str, *, in_use: bool) -> list[Finding]:
    """The custom activity type: the app creates and approves it on first use, so only a type it
    already uses (`in_use`) that is gone or back to draft is a problem."""
    found = next((t for t in types if t.get("apiName") == api_name), None)
    if found is None:
        if in_use:
            return [Finding("activity-type", f"the custom activity type {api_name!r} LeadSync writes to is gone",
                            f"recreate {api_name!r} (Admin > Marketo Custom Activities), or delete LeadSync's "
                            "cursor 'marketo-activity-type-id' so the app creates it again")]
        return [Finding("activity-type", f"no custom activity type {api_name!r} yet",
                        "none needed: the app creates and approves it on first write (its role needs "
                        "Read-Write Activity Metadata)", Severity.WARNING)]
    if found.get("status") != "approved":
        return [Finding("activity-type", f"the custom activity type {api_name!r} is {found.get('status')}, "
                                         "not approved", f"approve {api_name!r} (Admin > Marketo Custom Activities)")]
    return []


def quota_findings(used: int, limit: int) -> list[Finding]:
    if used >= limit:
        return [Finding("quota", f"Marketo API calls today: {used} of {limit}: none left",
                        "wait for the quota to reset at midnight US Central, or raise the subscription's quota")]
    return []
