"""Merge Leads: `POST /rest/v1/leads/{id}/merge.json?leadId=…|leadIds=…&mergeInCRM=false`.

Source: Adobe lead-database docs (leads.md "Merge", the swagger's `mergeLeadsUsingPOST`): the
lead in the path is the winner; `leadId` names one losing lead, `leadIds` a comma list of
them; "if there are any fields which are in conflict, the values from the winner will be
kept", so a field blank on the winner takes the first loser's value; the losers are
deleted. The answer is an envelope with no result. The winner's Activity Log gets a
"Merge Leads" activity (type 32) and each loser a Delete Lead (37), so the losers appear
in the deleted-leads feed.

Not in the docs, marked (unverified): the attribute names and value format of the Merge
Leads activity, the cap on losers per call, and the codes for bad input (1003 for a bad
parameter, 1004 for an unknown lead, as the other lead endpoints use).
"""

from __future__ import annotations

import re
from typing import Any

from devhost.emulators.marketo.app import ApiError, Call, Emulator, Handler, _split
from devhost.emulators.marketo.store import MERGE_LEADS, SOURCE_API, Store, fmt_datetime_field

MAX_LOSERS = 3  # (unverified) the UI merges at most 4 people at once; the API is taken to match


def merge_leads(store: Store, winner: int, losers: list[int], *, source: str = SOURCE_API) -> bool:
    """Merge `losers` into `winner`; whether the winner took any value from them.

    Raises ApiError 1004 for an unknown lead. The caller holds the store lock.
    """
    for lead_id in (winner, *losers):
        if lead_id not in store.leads:
            raise ApiError("1004", f"Lead '{lead_id}' not found")
    lead = store.leads[winner]
    taken: dict[str, Any] = {}
    for loser in losers:
        for name, value in store.leads[loser].items():
            if name in ("id", "createdAt", "updatedAt") or value in (None, ""):
                continue
            if lead.get(name) in (None, "") and name not in taken:
                taken[name] = value
    for name, value in taken.items():
        if name == "email":
            store._index(winner, lead.get(name), value)
        lead[name] = value
    lead["updatedAt"] = fmt_datetime_field(store.clock.now())
    for loser in losers:
        store.delete(loser, source=source)
    name = ", ".join(x for x in (lead.get("lastName"), lead.get("firstName")) if x)
    store._append(winner, MERGE_LEADS, primary_value_id=winner, primary_value=name, attributes=[
        {"name": "Merge Ids", "value": "[" + ",".join(str(i) for i in losers) + "]"},
        {"name": "Merged in Sales", "value": False},
        {"name": "Merge Source", "value": source},
        {"name": "Master Updated", "value": bool(taken)},
    ])
    return bool(taken)


def _int(text: str, name: str) -> int:
    if not re.fullmatch(r"\d{1,18}", text):
        raise ApiError("1003", f"Invalid {name} '{text}'")
    return int(text)


def merge(emu: Emulator, call: Call) -> dict[str, Any]:
    winner = _int(call.groups["id"], "lead id")
    one, many = call.param("leadId"), call.param("leadIds")
    if one and many:
        raise ApiError("1003", "Use either leadId or leadIds, not both")
    if not one and not many:
        raise ApiError("701", "leadId or leadIds cannot be blank")
    losers = [_int(one, "leadId")] if one else [_int(v, "leadIds") for v in _split(many)]
    if not losers:
        raise ApiError("701", "leadIds cannot be blank")
    if len(set(losers)) != len(losers):
        raise ApiError("1003", "leadIds holds the same lead twice")
    if len(losers) > MAX_LOSERS:
        raise ApiError("1003", f"At most {MAX_LOSERS} leads can be merged into one")
    if winner in losers:
        raise ApiError("1003", f"Lead {winner} cannot be merged into itself")
    in_crm = call.param("mergeInCRM").lower()
    if in_crm not in ("", "false", "true"):
        raise ApiError("1003", f"Invalid mergeInCRM '{call.param('mergeInCRM')}': true or false")
    if in_crm == "true":
        # This instance has no natively synced CRM to merge in.
        raise ApiError("1003", "mergeInCRM needs a natively synced CRM; this instance has none")
    with emu.store.lock:
        merge_leads(emu.store, winner, losers)
    return emu.envelope()


def merge_routes() -> list[tuple[str, re.Pattern[str], Handler]]:
    return [("POST", re.compile(r"/rest/v1/leads/(?P<id>[^/]+)/merge\.json$"), merge)]
