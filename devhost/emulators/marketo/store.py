"""The emulator's in-memory Marketo instance: person database, activity log, custom activity types.

Nothing here knows about HTTP. Every method is synchronous and is only called from the
event loop thread (or under `Store.lock` by the admin helpers), so each call is atomic.

Sources, per behaviour:
- Field set and describe shape: the service's documentation; Adobe "List of standard fields" (help/rest-api/
  list-of-standard-fields.md) for REST names and 255-character strings.
- Sync Leads semantics (actions, lookupField, 1003–1007, input order): the service's documentation; Adobe
  help/rest-api/error-codes.md (record-level codes) and leads.md.
- Activities 12 / 13 / 37 and their item shape: the service's documentation. API writes log the same
  activities as UI edits (a "Change Data Value" per changed field): Adobe lead-database
  docs; the Source attribute value "Web service API" is from the service's documentation example, the
  UI value "Marketo UI" is an emulator choice (unverified).
- Paging tokens are date based (the service's documentation; Adobe paging-tokens.md): the token carries the
  date it stands for plus the log position, base32 encoded like Marketo's. A token whose
  date is older than the retention (90 days for 12/13, 14 days for 37; the service's documentation) is
  refused with 701 "nextPageToken expired" (code unverified: Adobe documents none).
"""

from __future__ import annotations

import base64
import bisect
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..collation import fold

NEW_LEAD = 12
CHANGE_DATA_VALUE = 13
DELETE_LEAD = 37
CUSTOM_TYPE_BASE = 100000

SOURCE_API = "Web service API"
SOURCE_UI = "Marketo UI"


class Clock:
    """Wall-clock time plus an offset that the admin API can only move forward."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset_s)

    def timestamp(self) -> float:
        return self.now().timestamp()


def fmt_date(value: datetime) -> str:
    """Marketo's activityDate format, `2014-09-17T22:31:49Z`: what the service and Adobe's activity
    examples send, and what clients parse (marketorestpython reads it with `%Y-%m-%dT%H:%M:%SZ`)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_datetime_field(value: datetime) -> str:
    """Lead datetime fields come back as `2014-09-17T22:31:49Z`."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime | None:
    """ISO-8601 with offset or Z; a date without an offset is read as UTC. None if unreadable."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "+"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldDef:
    id: int
    name: str
    display: str
    data_type: str
    length: int | None = None
    read_only: bool = False
    searchable: bool = False

    def describe(self) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "displayName": self.display, "dataType": self.data_type}
        if self.length is not None:
            item["length"] = self.length
        item["rest"] = {"name": self.name, "readOnly": self.read_only}
        item["soap"] = {"name": self.name[0].upper() + self.name[1:], "readOnly": self.read_only}
        return item


DEFAULT_FIELDS: tuple[FieldDef, ...] = (
    FieldDef(1, "id", "Id", "integer", read_only=True, searchable=True),
    FieldDef(2, "company", "Company Name", "string", 255),
    FieldDef(3, "website", "Website", "url", 255),
    FieldDef(4, "numberOfEmployees", "Num Employees", "integer"),
    FieldDef(5, "annualRevenue", "Annual Revenue", "currency"),
    FieldDef(6, "address", "Address", "text", 65535),
    FieldDef(7, "city", "City", "string", 255),
    FieldDef(8, "state", "State", "string", 255),
    FieldDef(9, "country", "Country", "string", 255),
    FieldDef(10, "postalCode", "Postal Code", "string", 255),
    FieldDef(27, "createdAt", "Created At", "datetime", read_only=True),
    FieldDef(28, "updatedAt", "Updated At", "datetime", read_only=True),
    FieldDef(29, "firstName", "First Name", "string", 255),
    FieldDef(31, "lastName", "Last Name", "string", 255),
    FieldDef(32, "title", "Job Title", "string", 255),
    FieldDef(44, "phone", "Phone Number", "phone", 255),
    FieldDef(45, "mobilePhone", "Mobile Phone Number", "phone", 255),
    FieldDef(48, "email", "Email Address", "email", 255, searchable=True),
    FieldDef(51, "dateOfBirth", "Date of Birth", "date"),
    # Custom fields of each richer type, as a marketing-operations admin adds them.
    FieldDef(1301, "expectedCloseDate", "Expected Close Date", "date"),
    FieldDef(1302, "lastWebVisit", "Last Web Visit", "datetime"),
    FieldDef(1303, "engagementScore", "Engagement Score", "float"),
    FieldDef(1304, "budget", "Budget", "currency"),
    FieldDef(1305, "productInterests", "Product Interests", "string", 255),
    FieldDef(1306, "accountName", "Account Name", "string", 255),
    FieldDef(1307, "campaignName", "Campaign Name", "string", 255),
    FieldDef(57, "leadSource", "Lead Source", "string", 255),
    FieldDef(61, "unsubscribed", "Unsubscribed", "boolean"),
    FieldDef(1201, "msftIsDeleted", "Microsoft is Deleted", "boolean"),
    FieldDef(1202, "msftLastModifiedOn", "Microsoft Last Modified On", "datetime"),
    FieldDef(62, "leadStatus", "Lead Status", "string", 255),
    FieldDef(1203, "dynamicsOwnerEmail", "Dynamics Owner Email", "email", 255),  # a custom field admins add
    # Set by the partition a person is created in; moved only by the partitions API.
    FieldDef(1210, "leadPartitionId", "Lead Partition Id", "integer", read_only=True),
)
DEFAULT_PARTITION = {"id": 1, "name": "Default", "description": "Initial system lead partition"}

SYSTEM_FIELDS = frozenset({"id", "createdAt", "updatedAt"})
DEFAULT_READ_FIELDS = ("id", "email", "updatedAt", "createdAt", "firstName", "lastName")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_STRINGY = {"string", "text", "phone", "url", "reference"}


class InvalidValue(Exception):
    """A value does not fit its field (becomes reason 1003)."""


def coerce(fdef: FieldDef, value: Any) -> Any:
    """The stored form of `value` for `fdef`, or InvalidValue. None / "" clear the field."""
    if value is None or value == "":
        return None
    t = fdef.data_type
    if t in _STRINGY or t == "email":
        if not isinstance(value, str):
            raise InvalidValue(f"Invalid value for '{fdef.name}': expected a string")
        if fdef.length is not None and len(value) > fdef.length:
            raise InvalidValue(f"Value for '{fdef.name}' is longer than {fdef.length}")
        if t == "email" and not _EMAIL.match(value):
            raise InvalidValue(f"Invalid email address '{value}'")
        return value
    if t == "integer":
        if isinstance(value, bool):
            raise InvalidValue(f"Invalid value for '{fdef.name}': expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise InvalidValue(f"Invalid value for '{fdef.name}': expected an integer")
    if t in {"float", "currency", "percent"}:
        if isinstance(value, bool):
            raise InvalidValue(f"Invalid value for '{fdef.name}': expected a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidValue(f"Invalid value for '{fdef.name}': expected a number") from None
    if t == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        raise InvalidValue(f"Invalid value for '{fdef.name}': expected a boolean")
    if t == "datetime":
        parsed = parse_iso(value) if isinstance(value, str) else None
        if parsed is None:
            raise InvalidValue(f"Invalid value for '{fdef.name}': expected an ISO-8601 datetime")
        return fmt_datetime_field(parsed)
    if t == "date":
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) and _real_date(value):
            return value
        raise InvalidValue(f"Invalid value for '{fdef.name}': expected YYYY-MM-DD")
    return value


def _real_date(text: str) -> bool:
    """2024-02-30 has the shape of a date but is none: Marketo refuses it like any bad date."""
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- activities


@dataclass
class Activity:
    seq: int
    lead_id: int
    date: datetime
    type_id: int
    fields: list[dict[str, Any]] = field(default_factory=list)
    attributes: list[dict[str, Any]] = field(default_factory=list)
    primary_value_id: int | None = None
    primary_value: str | None = None
    reported_date: datetime | None = None  # custom activities: the caller's activityDate

    def item(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.seq,
            "marketoGUID": str(self.seq),
            "leadId": self.lead_id,
            "activityDate": fmt_date(self.reported_date or self.date),
            "activityTypeId": self.type_id,
        }
        if self.primary_value_id is not None:
            out["primaryAttributeValueId"] = self.primary_value_id
        if self.primary_value is not None:
            out["primaryAttributeValue"] = self.primary_value
        if self.type_id in (NEW_LEAD, CHANGE_DATA_VALUE):
            out["fields"] = self.fields
        out["attributes"] = self.attributes
        return out


def encode_token(asof: datetime, position: int) -> str:
    raw = f"{asof.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')},{position}".encode()
    return base64.b32encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, int] | None:
    try:
        raw = base64.b32decode(token + "=" * (-len(token) % 8)).decode()
        date_text, position = raw.split(",")
        return datetime.fromisoformat(date_text).replace(tzinfo=UTC), int(position)
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class ActivityType:
    id: int
    api_name: str
    name: str
    trigger_name: str
    filter_name: str
    primary_attribute: dict[str, Any]
    description: str = ""
    attributes: list[dict[str, Any]] = field(default_factory=list)
    status: str = "draft"

    def item(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "apiName": self.api_name,
            "name": self.name,
            "description": self.description,
            "triggerName": self.trigger_name,
            "filterName": self.filter_name,
            "primaryAttribute": self.primary_attribute,
            "attributes": self.attributes,
            "status": self.status,
            "updatedAt": fmt_date(now),
        }


class RecordSkip(Exception):
    """One record of a batch cannot be written: becomes `status: skipped` with this reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- the store


class Store:
    def __init__(self, clock: Clock, fields: tuple[FieldDef, ...] = DEFAULT_FIELDS) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.fields = {f.name: f for f in fields}
        self.leads: dict[int, dict[str, Any]] = {}
        self.by_email: dict[str, set[int]] = {}
        self.log: list[Activity] = []
        self.types: dict[str, ActivityType] = {}
        self.next_lead_id = 1001
        self.partitions: list[dict[str, Any]] = [dict(DEFAULT_PARTITION)]

    # ---- leads

    def _index(self, lead_id: int, old: str | None, new: str | None) -> None:
        if old:
            self.by_email.get(fold(old), set()).discard(lead_id)
        if new:
            self.by_email.setdefault(fold(new), set()).add(lead_id)

    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Coerced values, or RecordSkip 1006 (unknown field) / 1003 (bad value, read-only field)."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            fdef = self.fields.get(name)
            if fdef is None:
                raise RecordSkip("1006", f"Field '{name}' not found")
            if fdef.read_only:
                raise RecordSkip("1003", f"Field '{name}' is read only")
            try:
                out[name] = coerce(fdef, value)
            except InvalidValue as exc:
                raise RecordSkip("1003", str(exc)) from None
        return out

    def create(self, values: dict[str, Any], source: str, partition_id: int = 1) -> int:
        """Create a person from validated values; logs a New Lead (12) activity."""
        lead_id = self.next_lead_id
        self.next_lead_id += 1
        now = fmt_datetime_field(self.clock.now())
        lead: dict[str, Any] = {name: None for name in self.fields}
        lead.update(values)
        if "leadPartitionId" in self.fields:
            lead["leadPartitionId"] = partition_id
        lead.update(id=lead_id, createdAt=now, updatedAt=now)
        self.leads[lead_id] = lead
        self._index(lead_id, None, lead.get("email"))
        self._append(
            lead_id,
            NEW_LEAD,
            attributes=[{"name": "Source Type", "value": source}, {"name": "Lead ID", "value": lead_id}],
            primary_value=lead.get("email") or "",
        )
        return lead_id

    def update(self, lead_id: int, values: dict[str, Any], source: str) -> list[str]:
        """Apply validated values; logs one Change Data Value (13) per field that really changed."""
        lead = self.leads[lead_id]
        changed = [name for name, value in values.items() if lead.get(name) != value]
        for name in changed:
            old, new = lead[name], values[name]
            if name == "email":
                self._index(lead_id, old, new)
            lead[name] = new
            fdef = self.fields[name]
            self._append(
                lead_id,
                CHANGE_DATA_VALUE,
                fields=[{"id": fdef.id, "name": name, "newValue": _text(new), "oldValue": _text(old)}],
                attributes=[
                    {"name": "Reason", "value": source},
                    {"name": "Source", "value": source},
                    {"name": "Lead ID", "value": lead_id},
                ],
                primary_value_id=fdef.id,
                primary_value=fdef.display,
            )
        if changed:
            lead["updatedAt"] = fmt_datetime_field(self.clock.now())
        return changed

    def delete(self, lead_id: int) -> None:
        lead = self.leads.pop(lead_id)
        self._index(lead_id, lead.get("email"), None)
        name = ", ".join(x for x in (lead.get("lastName"), lead.get("firstName")) if x)
        self._append(lead_id, DELETE_LEAD, primary_value_id=lead_id, primary_value=name,
                     attributes=[{"name": "Source", "value": SOURCE_UI}])

    def find(self, field_name: str, value: Any) -> list[int]:
        if field_name == "email":
            # Folded as a case-insensitive collation would: a look-alike address is found too.
            return sorted(self.by_email.get(fold(str(value)), set()))
        if field_name == "id":
            try:
                lead_id = int(value)
            except (TypeError, ValueError):
                return []
            return [lead_id] if lead_id in self.leads else []
        return [i for i, lead in self.leads.items() if lead.get(field_name) == value]

    def partition(self, name: str) -> dict[str, Any]:
        """The partition called `name`, or RecordSkip 1008 (the API user reaches no such workspace
        partition; Marketo's code for an unknown name is unverified, 1008 is its access error)."""
        for p in self.partitions:
            if p["name"] == name:
                return p
        raise RecordSkip("1008", f"Access denied to partition '{name}'")

    def sync(self, action: str, lookup: str, record: dict[str, Any], partition_name: str | None = None
             ) -> dict[str, Any]:
        """One Sync Leads input record → its result item. Raises RecordSkip.

        `partitionName` puts a created person in that partition and scopes the lookup to it;
        an existing person of another partition cannot be updated from it (1010)."""
        partition = self.partition(partition_name) if partition_name is not None else None
        if lookup not in self.fields:
            raise RecordSkip("1006", f"Field '{lookup}' not found")
        if not self.fields[lookup].searchable:
            raise RecordSkip("1011", f"Field '{lookup}' not supported")
        id_ok = action == "updateOnly" and lookup == "id"
        if lookup == "id" and not id_ok:
            raise RecordSkip("1003", "Lookup field 'id' is only allowed with updateOnly")
        if "id" in record and not id_ok:
            raise RecordSkip("1003", "Field 'id' is only allowed with action updateOnly and lookupField id")
        values = self.validate({k: v for k, v in record.items() if k != "id"})
        key = record.get(lookup)
        if action != "createDuplicate" and key in (None, ""):
            raise RecordSkip("1003", f"Value for lookup field '{lookup}' not specified")
        matches = [] if action == "createDuplicate" else self.find(lookup, key)
        if partition is not None and lookup != "id":
            matches = [i for i in matches if self.leads[i].get("leadPartitionId", 1) == partition["id"]]
        if action in ("createOnly", "createDuplicate") or (action == "createOrUpdate" and not matches):
            if matches:
                raise RecordSkip("1005", "Lead already exists")
            return {"id": self.create(values, SOURCE_API, partition["id"] if partition else 1), "status": "created"}
        if partition is not None and any(self.leads[i].get("leadPartitionId", 1) != partition["id"] for i in matches):
            raise RecordSkip("1010", "Partition update not allowed")
        if not matches:
            raise RecordSkip("1004", "Lead not found")
        if len(matches) > 1:
            raise RecordSkip("1007", "Multiple leads match the lookup criteria")
        self.update(matches[0], values, SOURCE_API)
        return {"id": matches[0], "status": "updated"}

    # ---- activity log

    def _append(self, lead_id: int, type_id: int, **kw: Any) -> Activity:
        activity = Activity(seq=len(self.log) + 1, lead_id=lead_id, date=self.clock.now(), type_id=type_id, **kw)
        self.log.append(activity)
        return activity

    def position_at(self, since: datetime) -> int:
        """Index of the first activity dated at or after `since` (the log is in date order)."""
        return bisect.bisect_left(self.log, since, key=lambda a: a.date)

    def scan(
        self, position: int, wanted: Any, limit: int, scan_limit: int
    ) -> tuple[list[Activity], int]:
        """Up to `limit` activities matching `wanted` from `position`, reading at most `scan_limit`."""
        found: list[Activity] = []
        end = min(len(self.log), position + scan_limit)
        while position < end and len(found) < limit:
            activity = self.log[position]
            position += 1
            if wanted(activity):
                found.append(activity)
        return found, position

    def add_custom(self, item: dict[str, Any]) -> dict[str, Any]:
        """One Add Custom Activity input → its result item. Raises RecordSkip."""
        try:
            lead_id = int(item.get("leadId"))  # type: ignore[arg-type]
            type_id = int(item.get("activityTypeId"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise RecordSkip("1003", "leadId and activityTypeId must be integers") from None
        atype = next((t for t in self.types.values() if t.id == type_id and t.status == "approved"), None)
        if atype is None:
            # Unknown or never-approved type. Code is an emulator choice (1013 "Object not found"), unverified.
            raise RecordSkip("1013", f"Activity type '{type_id}' not found")
        if lead_id not in self.leads:
            raise RecordSkip("1004", "Lead not found")
        date = parse_iso(str(item.get("activityDate", "")))
        if date is None:
            raise RecordSkip("1003", "Invalid activityDate")
        if item.get("primaryAttributeValue") in (None, ""):
            raise RecordSkip("1003", "primaryAttributeValue cannot be blank")
        # Adobe's Add Custom Activities names an attribute by `apiName` or by `name` (its display name;
        # Adobe's examples also put the API name there, so that is accepted too); either must be defined.
        by_key = {a["apiName"]: a["apiName"] for a in atype.attributes}
        by_name = {**by_key, **{a["name"]: a["apiName"] for a in atype.attributes}}
        attributes = []
        for attr in item.get("attributes") or []:
            if not isinstance(attr, dict):
                raise RecordSkip("1003", "Invalid attribute")
            api_name = by_key.get(attr.get("apiName")) if "apiName" in attr else by_name.get(attr.get("name"))
            if api_name is None:
                raise RecordSkip("1006", f"Field '{attr.get('apiName', attr.get('name'))}' not found")
            attributes.append({"apiName": api_name, "value": attr.get("value")})
        activity = Activity(
            seq=len(self.log) + 1,
            lead_id=lead_id,
            date=self.clock.now(),
            type_id=type_id,
            attributes=attributes,
            primary_value=str(item["primaryAttributeValue"]),
            reported_date=date,
        )
        self.log.append(activity)
        return {"id": activity.seq, "marketoGUID": str(activity.seq), "status": "added"}

    def custom_entries(self, lead_id: int, *, all_types: bool = False) -> list[dict[str, Any]]:
        out = []
        for a in self.log:
            if a.lead_id != lead_id or (not all_types and a.type_id < CUSTOM_TYPE_BASE):
                continue
            out.append(a.item())
        return out

    def create_type(self, body: dict[str, Any]) -> ActivityType:
        for required in ("apiName", "name", "triggerName", "filterName", "primaryAttribute"):
            if not body.get(required):
                raise RecordSkip("701", f"{required} cannot be blank")
        if body["apiName"] in self.types:
            raise RecordSkip("709", f"Activity type '{body['apiName']}' already exists")
        atype = ActivityType(
            id=CUSTOM_TYPE_BASE + 1 + len(self.types),
            api_name=body["apiName"],
            name=body["name"],
            trigger_name=body["triggerName"],
            filter_name=body["filterName"],
            primary_attribute=dict(body["primaryAttribute"]),
            description=body.get("description", ""),
        )
        self.types[atype.api_name] = atype
        return atype


def _text(value: Any) -> str | None:
    """Change Data Value carries old/new values as strings (booleans as 'true'/'false')."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
