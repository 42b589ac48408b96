"""Column definitions for `lead` and `contact` and their EntityDefinitions JSON.

Column list, lengths and formats: the standard lead and contact columns (typical OOB lengths, marked
[memory] there). Requirement levels: the service's documentation (ApplicationRequired is served, never enforced).
Choice values: spec "Core columns" (leadsourcecode, statecode, statuscode).
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

STRING_TYPES = {"String", "Memo"}
INT_TYPES = {"Integer", "BigInt", "Picklist", "State", "Status"}
GUID_TYPES = {"Uniqueidentifier", "Lookup", "Owner", "Customer"}
OPTION_TYPES = {"Picklist", "State", "Status"}


@dataclass
class Attr:
    logical_name: str
    attribute_type: str
    required_level: str = "None"
    max_length: int | None = None
    format_name: str | None = None
    options: dict[int, str] | None = None
    valid_for_create: bool = True
    valid_for_update: bool = True
    # Lookups: navigation properties that write this column, e.g. {"parentcustomerid_account": "accounts"}.
    binds: dict[str, str] = field(default_factory=dict)
    metadata_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Typed columns (see typed.py): numbers' Precision/MinValue/MaxValue, dates' behaviour and format.
    precision: int | None = None
    min_value: float | None = None
    max_value: float | None = None
    date_behavior: str | None = None
    date_format: str | None = None

    @property
    def read_name(self) -> str:
        """The name a query returns: lookups appear only as `_<name>_value` (spec "Core columns")."""
        if self.attribute_type in {"Lookup", "Owner", "Customer"}:
            return f"_{self.logical_name}_value"
        return self.logical_name

    @property
    def edm_type(self) -> str:
        t = self.attribute_type
        if t in STRING_TYPES:
            return "Edm.String"
        if t in GUID_TYPES:
            return "Edm.Guid"
        if t == "BigInt":
            return "Edm.Int64"
        if t in INT_TYPES:
            return "Edm.Int32"
        if t == "Boolean":
            return "Edm.Boolean"
        if t == "DateTime":
            return "Edm.Date" if self.date_behavior == "DateOnly" else "Edm.DateTimeOffset"
        if t in ("Money", "Decimal"):
            return "Edm.Decimal"
        if t == "Double":
            return "Edm.Double"
        return "Edm.String"


@dataclass
class EntityDef:
    logical_name: str
    entity_set: str
    primary_id: str
    attrs: dict[str, Attr]
    change_tracking: bool = True  # the table's ChangeTrackingEnabled (admin can turn it off to test preflight)

    @property
    def type_name(self) -> str:
        return f"Microsoft.Dynamics.CRM.{self.logical_name}"

    def readable(self) -> dict[str, Attr]:
        """Selectable/filterable names → attribute."""
        return {a.read_name: a for a in self.attrs.values()}


LEAD_SOURCES = {
    1: "Advertisement", 2: "Employee Referral", 3: "External Referral", 4: "Partner", 5: "Public Relations",
    6: "Seminar", 7: "Trade Show", 8: "Web", 9: "Word of Mouth", 10: "Other",
}
LEAD_STATES = {0: "Open", 1: "Qualified", 2: "Disqualified"}
LEAD_STATUSES = {
    1: "New", 2: "Contacted", 3: "Qualified", 4: "Lost", 5: "Cannot Contact", 6: "No Longer Interested", 7: "Canceled",
}
CONTACT_STATES = {0: "Active", 1: "Inactive"}
CONTACT_STATUSES = {1: "Active", 2: "Inactive"}
# Each status reason belongs to one state (StatusOptionMetadata.State): Disqualified holds Lost,
# Cannot Contact, No Longer Interested and Canceled.
STATUS_STATE = {"lead": {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 2, 7: 2}, "contact": {1: 0, 2: 1}}


def _s(name: str, length: int, fmt: str = "Text", level: str = "None") -> Attr:
    return Attr(name, "String", required_level=level, max_length=length, format_name=fmt)


def _shared(entity: str, key: str) -> list[Attr]:
    ro = {"valid_for_create": False, "valid_for_update": False}
    return [
        Attr(key, "Uniqueidentifier", required_level="SystemRequired", valid_for_update=False),
        _s("firstname", 50, level="Recommended"),
        _s("lastname", 50, level="ApplicationRequired"),
        Attr("fullname", "String", max_length=160, format_name="Text", **ro),  # type: ignore[arg-type]
        _s("emailaddress1", 100, "Email"),
        _s("jobtitle", 100),
        _s("telephone1", 50, "Phone"),
        _s("mobilephone", 50, "Phone"),
        _s("address1_line1", 250),
        _s("address1_line2", 250),
        _s("address1_city", 80),
        _s("address1_stateorprovince", 50),
        _s("address1_postalcode", 20),
        _s("address1_country", 80),
        Attr("createdon", "DateTime", **ro),  # type: ignore[arg-type]
        Attr("modifiedon", "DateTime", **ro),  # type: ignore[arg-type]
        Attr("versionnumber", "BigInt", **ro),  # type: ignore[arg-type]
        Attr("ownerid", "Owner", required_level="SystemRequired", binds={"ownerid": "systemusers"}),
        Attr("new_synctomkto", "Boolean", options={0: "No", 1: "Yes"}),
    ]


def build_entities() -> dict[str, EntityDef]:
    """Fresh definitions (admin overrides mutate a copy; reset rebuilds)."""
    lead_attrs = _shared("lead", "leadid") + [
        _s("companyname", 100, level="Recommended"),
        _s("subject", 300, level="ApplicationRequired"),
        Attr("leadsourcecode", "Picklist", options=dict(LEAD_SOURCES)),
        Attr("statecode", "State", required_level="SystemRequired", options=dict(LEAD_STATES)),
        Attr("statuscode", "Status", options=dict(LEAD_STATUSES)),
        Attr("parentcontactid", "Lookup", binds={"parentcontactid": "contacts"}),
        Attr("revenue", "Money"),  # OOB "Annual Revenue": the one money column, for formatted values
    ]
    contact_attrs = _shared("contact", "contactid") + [
        Attr("statecode", "State", required_level="SystemRequired", options=dict(CONTACT_STATES)),
        Attr("statuscode", "Status", options=dict(CONTACT_STATUSES)),
        Attr(
            "parentcustomerid",
            "Customer",
            binds={"parentcustomerid_account": "accounts", "parentcustomerid_contact": "contacts"},
        ),
        Attr("originatingleadid", "Lookup", binds={"originatingleadid": "leads"}),
    ]
    from . import typed  # it builds on this module's Attr

    lead_attrs += typed.typed_columns("lead")
    contact_attrs += typed.typed_columns("contact")
    return {
        "lead": EntityDef("lead", "leads", "leadid", {a.logical_name: a for a in lead_attrs}),
        "contact": EntityDef("contact", "contacts", "contactid", {a.logical_name: a for a in contact_attrs}),
        **typed.build_related(),
    }


_CAST = {
    "String": "StringAttributeMetadata",
    "Memo": "MemoAttributeMetadata",
    "Picklist": "PicklistAttributeMetadata",
    "State": "StateAttributeMetadata",
    "Status": "StatusAttributeMetadata",
    "Boolean": "BooleanAttributeMetadata",
    "DateTime": "DateTimeAttributeMetadata",
    "Uniqueidentifier": "UniqueIdentifierAttributeMetadata",
    "Lookup": "LookupAttributeMetadata",
    "Owner": "LookupAttributeMetadata",
    "Customer": "LookupAttributeMetadata",
    "BigInt": "BigIntAttributeMetadata",
    "Money": "MoneyAttributeMetadata",
    "Decimal": "DecimalAttributeMetadata",
    "Double": "DoubleAttributeMetadata",
    "Integer": "IntegerAttributeMetadata",
    "MultiSelectPicklist": "MultiSelectPicklistAttributeMetadata",
}


def cast_name(attr: Attr) -> str:
    return _CAST.get(attr.attribute_type, "AttributeMetadata")


def _label(text: str) -> dict[str, Any]:
    loc = {"Label": text, "LanguageCode": 1033}
    return {"LocalizedLabels": [loc], "UserLocalizedLabel": loc}


def attribute_json(entity: EntityDef, attr: Attr, expand_options: bool) -> dict[str, Any]:
    """One AttributeMetadata item as served by `EntityDefinitions(...)/Attributes`."""
    out: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{cast_name(attr)}",
        "MetadataId": attr.metadata_id,
        "LogicalName": attr.logical_name,
        "SchemaName": attr.logical_name,
        "EntityLogicalName": entity.logical_name,
        # A multi-select choice is a Virtual attribute named by its AttributeTypeName.
        "AttributeType": "Virtual" if attr.attribute_type == "MultiSelectPicklist" else attr.attribute_type,
        "AttributeTypeName": {"Value": f"{attr.attribute_type}Type"},
        "RequiredLevel": {
            "Value": attr.required_level,
            "CanBeChanged": attr.required_level != "SystemRequired",
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
        "IsValidForCreate": attr.valid_for_create,
        "IsValidForUpdate": attr.valid_for_update,
        "IsValidForRead": True,
        "IsPrimaryId": attr.logical_name == entity.primary_id,
    }
    if attr.attribute_type in STRING_TYPES:
        out["MaxLength"] = attr.max_length
        out["FormatName"] = {"Value": attr.format_name or "Text"}
        out["Format"] = attr.format_name or "Text"
    if attr.attribute_type in {"Lookup", "Owner", "Customer"}:
        out["Targets"] = sorted({t[:-3] + "y" if t.endswith("ies") else t.rstrip("s") for t in attr.binds.values()})
    from . import typed

    out.update(typed.attribute_extras(attr, expand_options))
    if attr.attribute_type in OPTION_TYPES and expand_options:
        options = []
        for value, text in (attr.options or {}).items():
            option: dict[str, Any] = {"Value": value, "Label": _label(text)}
            if attr.attribute_type == "Status":
                option["State"] = STATUS_STATE.get(entity.logical_name, {}).get(value, 0)
            options.append(option)
        out["OptionSet"] = {"Options": options}
        out["GlobalOptionSet"] = None
    return out


def select_keys(item: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return item
    keep = set(select) | {"@odata.type", "MetadataId", "OptionSet", "GlobalOptionSet"}
    return {k: v for k, v in item.items() if k in keep}


def clone(entities: dict[str, EntityDef]) -> dict[str, EntityDef]:
    return copy.deepcopy(entities)
