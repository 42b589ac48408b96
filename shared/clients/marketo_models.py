"""Marketo's wire shapes and the typed results the client returns: no I/O.

The `*JSON` TypedDicts are the envelopes and records as Marketo sends them; the dataclasses
are what `MarketoClient` hands callers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NotRequired, TypedDict, cast
from zoneinfo import ZoneInfo

from shared.errors import MarketoError

CENTRAL = ZoneInfo("America/Chicago")


# --------------------------------------------------------------------------- raw JSON


class ErrorJSON(TypedDict):
    code: str
    message: str


class EnvelopeJSON(TypedDict):
    requestId: str
    success: bool
    result: NotRequired[list[Any]]
    errors: NotRequired[list[ErrorJSON]]
    warnings: NotRequired[list[Any]]
    nextPageToken: NotRequired[str]
    moreResult: NotRequired[bool]


class FieldChangeJSON(TypedDict):
    id: int
    name: str
    newValue: str | None
    oldValue: str | None


class ActivityJSON(TypedDict):
    id: int
    marketoGUID: str
    leadId: int
    activityDate: str
    activityTypeId: int
    primaryAttributeValueId: NotRequired[int]
    primaryAttributeValue: NotRequired[str]
    fields: NotRequired[list[FieldChangeJSON]]
    attributes: NotRequired[list[dict[str, Any]]]


class RecordJSON(TypedDict):
    status: str
    id: NotRequired[int]
    marketoGUID: NotRequired[str]
    reasons: NotRequired[list[ErrorJSON]]
    errors: NotRequired[list[ErrorJSON]]


class DescribeJSON(TypedDict):
    id: int
    displayName: str
    dataType: str
    length: NotRequired[int]
    rest: dict[str, Any]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class FieldChange:
    old: str | None
    new: str | None


@dataclass(frozen=True)
class LeadChange:
    """One activity of type 12 (New Lead, `fields` empty) or 13 (Change Data Value, one field)."""

    marketo_guid: str
    lead_id: int
    activity_date: datetime
    activity_type_id: int
    fields: dict[str, FieldChange]
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangePage:
    changes: list[LeadChange]
    next_token: str
    more: bool


@dataclass(frozen=True)
class DeletedLead:
    marketo_guid: str
    lead_id: int
    activity_date: datetime


@dataclass(frozen=True)
class DeletedPage:
    deletions: list[DeletedLead]
    next_token: str
    more: bool

    @property
    def lead_ids(self) -> list[int]:
        return [d.lead_id for d in self.deletions]


MERGE_LEADS = 32  # the standard "Merge Leads" activity type


@dataclass(frozen=True)
class MergedLeads:
    """One Merge Leads (32) activity: `losers` were merged into `winner` (and deleted)."""

    marketo_guid: str
    winner: int
    losers: tuple[int, ...]
    activity_date: datetime


@dataclass(frozen=True)
class MergedPage:
    merges: list[MergedLeads]
    next_token: str
    more: bool


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True)
class RecordResult:
    """One input record's outcome, at the same index as its input."""

    status: Literal["created", "updated", "skipped", "added", "deleted"]
    id: int | None
    reasons: list[Reason] = field(default_factory=list)
    marketo_guid: str | None = None


@dataclass(frozen=True)
class FieldInfo:
    id: int
    name: str
    display_name: str
    data_type: str
    length: int | None
    read_only: bool


@dataclass(frozen=True)
class ActivityAttribute:
    api_name: str
    name: str
    data_type: str = "string"

    def json(self) -> dict[str, str]:
        return {"apiName": self.api_name, "name": self.name, "dataType": self.data_type}


@dataclass(frozen=True)
class ActivityEntry:
    """One custom activity to write to a person's Activity Log."""

    lead_id: int
    activity_type_id: int
    primary_attribute_value: str
    activity_date: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "leadId": self.lead_id,
            "activityTypeId": self.activity_type_id,
            "primaryAttributeValue": self.primary_attribute_value,
            "activityDate": self.activity_date.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "attributes": [{"apiName": k, "value": v} for k, v in self.attributes.items()],
        }


def next_reset(now: datetime | None = None) -> datetime:
    """The next midnight in US Central (when Marketo's daily quota resets), as an aware datetime."""
    local = (now or datetime.now(UTC)).astimezone(CENTRAL)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=CENTRAL)
    return midnight


def parse_date(text: str) -> datetime:
    """Marketo's activityDate (`2014-09-17T22:31:49+0000` or with `Z`) as an aware datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- parsing


def lead_change(item: ActivityJSON) -> LeadChange:
    """One activity of a `leadchanges` or `deletedleads` page."""
    return LeadChange(
        marketo_guid=str(item.get("marketoGUID") or item["id"]),
        lead_id=int(item["leadId"]),
        activity_date=parse_date(item["activityDate"]),
        activity_type_id=int(item["activityTypeId"]),
        fields={f["name"]: FieldChange(f.get("oldValue"), f.get("newValue")) for f in item.get("fields") or []},
        attributes={a["name"]: a.get("value") for a in item.get("attributes") or [] if "name" in a},
    )


def merged_leads(item: ActivityJSON) -> MergedLeads:
    """One Merge Leads activity; its "Merge Ids" attribute lists the losers (as "[1,2]" or a list)."""
    raw = next((a.get("value") for a in item.get("attributes") or [] if a.get("name") == "Merge Ids"), None)
    losers = raw if isinstance(raw, list) else re.findall(r"\d+", str(raw or ""))
    return MergedLeads(str(item.get("marketoGUID") or item["id"]), int(item["leadId"]),
                       tuple(int(i) for i in losers), parse_date(item["activityDate"]))


def record_results(envelope: EnvelopeJSON, expected: int) -> list[RecordResult]:
    """The per-record results of a write, in input order; MarketoError if they do not match the input."""
    items = cast(list[RecordJSON], envelope.get("result") or [])
    if len(items) != expected:
        raise MarketoError("result-count", f"{len(items)} results for {expected} records", envelope.get("requestId"))
    out = []
    for item in items:
        reasons = item.get("reasons") or item.get("errors") or []
        status = cast(Literal["created", "updated", "skipped", "added", "deleted"], item["status"])
        out.append(RecordResult(status, item.get("id"), [Reason(str(r["code"]), str(r.get("message", "")))
                                                         for r in reasons], item.get("marketoGUID")))
    return out
