"""Owners: who owns the leads LeadSync creates, and the owner's email for Marketo.

Dynamics routes leads by owner (a user or a team). The owner of a lead created in real
time comes from, in order:

    LEADSYNC_LEAD_OWNER_FIELD   a Marketo field holding a user's email (e.g. a lead-owner
                                email an assignment rule fills), when it is not blank
    LEADSYNC_LEAD_OWNER         a fixed user or team (by id, a user by email, a team by name)
    neither                     the application user, as Dataverse does by default

An owner that names nobody (no such id, email or team, or a disabled user) fails the
create with a clear reason; it never falls back to another owner silently. Lookups are
cached per process for a few minutes: owners change seldom and a webhook must stay fast.

The other way, LEADSYNC_OWNER_EMAIL_FIELD receives the email of a Dynamics record's owner
(a team has none) whenever LeadSync creates or updates that person in Marketo.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.config import OwnerRef
from shared.errors import Problem, ValidationRule
from shared.runtime import Services
from shared.sync.batch import Pending

CACHE_S = 300.0
# The owner whose email Marketo last got is kept in the link's base under this key (no Marketo
# field name holds an "@"), so an owner-only change in Dynamics is news, not an echo.
OWNER_BASE_KEY = "@ownerid"
USER_COLUMNS = ["systemuserid", "fullname", "internalemailaddress", "isdisabled"]
TEAM_COLUMNS = ["teamid", "name"]
OWNER_VALUE = "_ownerid_value"


@dataclass(frozen=True)
class Owner:
    table: str  # "systemuser" | "team"
    id: str
    name: str | None = None
    email: str | None = None

    def bind(self) -> dict[str, str]:
        """The create-body entry that makes this principal the owner."""
        return {"ownerid@odata.bind": f"/{self.table}s({self.id})"}


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple[str, ...], tuple[float, Any]] = {}

    def get(self, key: tuple[str, ...]) -> tuple[bool, Any]:
        with self._lock:
            hit = self._items.get(key)
        if hit is None or time.monotonic() - hit[0] > CACHE_S:
            return False, None
        return True, hit[1]

    def put(self, key: tuple[str, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), value)


_cache = _Cache()


def _owner(table: str, row: Mapping[str, Any]) -> Owner:
    if table == "team":
        return Owner("team", str(row["teamid"]).lower(), row.get("name"))
    return Owner("systemuser", str(row["systemuserid"]).lower(), row.get("fullname"), row.get("internalemailaddress"))


def resolve(svc: Services, ref: OwnerRef, setting: str, shown: str | None = None) -> Owner | Problem:
    """The principal `ref` names, or a Problem saying why none (no match, several, disabled).
    `shown`: how the problem names the owner (default: `ref` itself)."""
    what = shown or f"the lead owner ({ref})"
    key = (svc.settings.dataverse_url, ref.table, ref.by, ref.value.lower())
    found, cached = _cache.get(key)
    if not found:
        column = {"id": f"{ref.table}id", "email": "internalemailaddress", "name": "name"}[ref.by]
        select = TEAM_COLUMNS if ref.table == "team" else USER_COLUMNS
        if ref.by == "id":
            rows = svc.dataverse.get_by_ids(f"{ref.table}s", [ref.value], select)
        else:
            rows = svc.dataverse.find_by(f"{ref.table}s", column, [ref.value], select)
        cached = [dict(r) for r in rows]
        _cache.put(key, cached)
    rows = [r for r in cached if ref.by == "id" or str(r.get(
        "internalemailaddress" if ref.by == "email" else "name") or "").lower() == ref.value.lower()]
    if not rows:
        return Problem(setting, ValidationRule.OWNER, f"{what} is not a Dynamics {ref.table}")
    if len(rows) > 1:
        return Problem(setting, ValidationRule.OWNER,
                       f"{what} names {len(rows)} Dynamics {ref.table}s; name it by id")
    if rows[0].get("isdisabled"):
        return Problem(setting, ValidationRule.OWNER, f"{what} is a disabled Dynamics user")
    return _owner(ref.table, rows[0])


def for_new_lead(svc: Services, person: Mapping[str, Any]) -> Owner | Problem | None:
    """The owner a lead created from this Marketo person (as read) gets (None: the application user)."""
    settings = svc.settings
    field = settings.lead_owner_field
    if field:
        email = person.get(field)
        if email not in (None, ""):
            # The message names the field, not the address: activity entries carry no emails.
            return resolve(svc, OwnerRef("systemuser", "email", str(email).strip()), field,
                           f"the lead owner in {field}")
    if settings.lead_owner is not None:
        return resolve(svc, settings.lead_owner, "LEADSYNC_LEAD_OWNER")
    if field:
        return Problem(field, ValidationRule.OWNER,
                       f"{field} is blank and no LEADSYNC_LEAD_OWNER is set: the lead would have no chosen owner")
    return None


def emails_of(svc: Services, owner_ids: Iterable[str]) -> dict[str, str | None]:
    """Owner id -> that user's email (None for a team or a user without one), cached."""
    out: dict[str, str | None] = {}
    missing: list[str] = []
    for oid in {str(i).lower() for i in owner_ids if i}:
        found, email = _cache.get((svc.settings.dataverse_url, "email-of", oid))
        if found:
            out[oid] = email
        else:
            missing.append(oid)
    if missing:
        rows = svc.dataverse.get_by_ids("systemusers", missing, ["systemuserid", "internalemailaddress"])
        emails = {str(r["systemuserid"]).lower(): r.get("internalemailaddress") or None for r in rows}
        for oid in missing:
            out[oid] = emails.get(oid)
            _cache.put((svc.settings.dataverse_url, "email-of", oid), out[oid])
    return out


def owner_email_updates(svc: Services, records: Iterable[tuple[Mapping[str, Any], Mapping[str, Any] | None]]
                        ) -> list[dict[str, Any] | None]:
    """For (Dynamics record, Marketo person or None) pairs: the `{field: email}` to write to
    Marketo where the person's owner-email field differs from the record owner's email."""
    field = svc.settings.owner_email_field
    pairs = list(records)
    if not field:
        return [None] * len(pairs)
    emails = emails_of(svc, [str(r.get(OWNER_VALUE) or "") for r, _ in pairs])
    out: list[dict[str, Any] | None] = []
    for record, person in pairs:
        email = emails.get(str(record.get(OWNER_VALUE) or "").lower())
        current = (person or {}).get(field)
        same = (current or None) == email or (isinstance(current, str) and isinstance(email, str)
                                              and current.lower() == email.lower())
        out.append(None if same or (person is None and email is None) else {field: email})
    return out


def add_owner_emails(svc: Services, pending: Sequence[Pending], to_marketo: list[tuple[Pending, dict[str, Any]]]
                     ) -> None:
    """Put each merged person's owner email (when it differs) into its Marketo update, adding
    an update for a person that needed none."""
    if not svc.settings.owner_email_field:
        return
    merged = [p for p in pending if p.result is not None and not p.marketo_failed]
    queued = {id(p): record for p, record in to_marketo}
    for p, update in zip(merged, owner_email_updates(svc, [(p.dynamics, p.marketo) for p in merged]), strict=True):
        if update is None:
            continue
        if id(p) in queued:
            queued[id(p)].update(update)
        else:
            to_marketo.append((p, {"id": p.link.marketo_id, **update}))


def owner_news(svc: Services, base: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """The record's owner is not the one whose email Marketo last got."""
    if not svc.settings.owner_email_field or OWNER_VALUE not in record:
        return False
    return base.get(OWNER_BASE_KEY) != (str(record.get(OWNER_VALUE) or "").lower() or None)


def remember_owner(svc: Services, base: dict[str, Any], old: Mapping[str, Any], record: Mapping[str, Any],
                   *, written: bool) -> None:
    """Keep in `base` the owner Marketo now has: the record's when its email was `written`, else the old one."""
    if not svc.settings.owner_email_field or OWNER_VALUE not in record:
        return
    if written:
        base[OWNER_BASE_KEY] = str(record.get(OWNER_VALUE) or "").lower() or None
    elif OWNER_BASE_KEY in old:
        base[OWNER_BASE_KEY] = old[OWNER_BASE_KEY]
