"""The principals a record can belong to: `systemuser` and `team`, and the owner rules.

Sources: spec "Core columns" (`_ownerid_value`) and the service's documentation of owner
lookups: `ownerid` is a polymorphic lookup written with one navigation property,
`"ownerid@odata.bind": "/systemusers(<id>)"` or `"/teams(<id>)"`; a bind to a record that
does not exist fails with 0x80040217 (404) naming it, and a disabled user cannot be given
records [unverified code 0x80040225, message shape from client repos].
"""

from __future__ import annotations

from typing import Any

from .metadata import Attr, EntityDef

# The application user LeadSync signs in as; it owns what it creates unless told otherwise.
APPLICATION_USER = "a1b2c3d4-0000-4000-8000-000000000001"
# The person behind the admin API's edits ("as a salesperson would in the app"): a change
# event names who made the change, and LeadSync tells its own writes from hers by it.
SALESPERSON_USER = "a1b2c3d4-0000-4000-8000-000000000002"
OWNER_SETS = ("systemusers", "teams")


def _s(name: str, length: int, fmt: str = "Text") -> Attr:
    return Attr(name, "String", max_length=length, format_name=fmt)


def build_principals() -> dict[str, EntityDef]:
    user = [
        Attr("systemuserid", "Uniqueidentifier", required_level="SystemRequired", valid_for_update=False),
        _s("fullname", 200),
        _s("internalemailaddress", 100, "Email"),
        _s("domainname", 1024),
        Attr("isdisabled", "Boolean", options={0: "Enabled", 1: "Disabled"}),
        Attr("createdon", "DateTime", valid_for_create=False, valid_for_update=False),
        Attr("modifiedon", "DateTime", valid_for_create=False, valid_for_update=False),
        Attr("versionnumber", "BigInt", valid_for_create=False, valid_for_update=False),
    ]
    team = [
        Attr("teamid", "Uniqueidentifier", required_level="SystemRequired", valid_for_update=False),
        _s("name", 160),
        Attr("createdon", "DateTime", valid_for_create=False, valid_for_update=False),
        Attr("modifiedon", "DateTime", valid_for_create=False, valid_for_update=False),
        Attr("versionnumber", "BigInt", valid_for_create=False, valid_for_update=False),
    ]
    return {
        "systemuser": EntityDef("systemuser", "systemusers", "systemuserid", {a.logical_name: a for a in user},
                                change_tracking=False),
        "team": EntityDef("team", "teams", "teamid", {a.logical_name: a for a in team}, change_tracking=False),
    }


def application_user() -> dict[str, Any]:
    """The row of the application user every fresh store holds (it exists in a real org too)."""
    return {"systemuserid": APPLICATION_USER, "fullname": "LeadSync Emulator", "internalemailaddress": None,
            "domainname": "leadsync-app@contoso.onmicrosoft.com", "isdisabled": False}


def salesperson() -> dict[str, Any]:
    """The row of the user the admin API's edits are made by (no e-mail: she owns nothing synced)."""
    return {"systemuserid": SALESPERSON_USER, "fullname": "Sam Seller", "internalemailaddress": None,
            "domainname": "sam.seller@contoso.onmicrosoft.com", "isdisabled": False}


def bind_targets(attr: Attr, nav: str) -> tuple[str, ...]:
    """The entity sets a navigation property may point at: `ownerid` takes a user or a team."""
    if attr.attribute_type == "Owner":
        return OWNER_SETS
    return (attr.binds[nav],)


def check_owner(store: Any, set_name: str, rid: str) -> None:
    """Refuse an owner that does not exist or is a disabled user, as Dataverse does."""
    from .store import ApiError, not_found

    row = store.rows.get(set_name, {}).get(rid)
    if row is None:
        raise not_found(store.by_set[set_name], rid)
    if row.get("isdisabled"):
        raise ApiError(400, "0x80040225", f"The user with SystemUserId={rid} is disabled. Disabled users "
                       "cannot be assigned records.")  # [unverified code]
