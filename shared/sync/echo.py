"""Recognise our own writes coming back through a change feed, before they cost any work.

Every value LeadSync writes to one side shows up in that side's change feed. The merge
would recognise it anyway (it equals the base), but only after reading both sides; the
pollers drop it earlier. A change is an echo when, for a linked person in good standing,
every field it reports already equals the last agreed (base) value; anything else, and
every person not linked yet, is kept. Dropping is safe because the base only ever holds
values both sides agreed on: a feed value equal to it is no news for the other side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.clients.marketo import LeadChange
from shared.rules import eligibility
from shared.runtime import PRIMARY_KEYS, Services
from shared.state.links import LINKED, Link
from shared.sync import owners
from shared.sync.lookups import dereferenced


def marketo_news(svc: Services, changes: Sequence[LeadChange]) -> list[int]:
    """Lead ids whose latest reported values differ from their base (echoes dropped).

    Changes for people that are not linked are dropped too: a Marketo person reaches
    Dynamics only through the real-time endpoint, never the background sync.
    """
    latest: dict[int, dict[str, Any]] = {}
    for change in sorted(changes, key=lambda c: c.activity_date):
        fields = latest.setdefault(change.lead_id, {})
        for name, value in change.fields.items():
            fields[name] = value.new
    links = svc.links.get_many(latest)
    return [lead_id for lead_id, fields in latest.items()
            if (link := links.get(lead_id)) is not None and not _echo(svc, link, fields)]


def marketo_people_news(svc: Services, links: Sequence[Link],
                        people: Mapping[int, Mapping[str, Any]]) -> list[Link]:
    """The links whose Marketo person, as read, differs from its base (or is gone).

    For change events: Marketo's webhook names a person, not what changed or who changed
    it, so the person's mapped fields are compared whole; LeadSync's own writes coming back
    are dropped here, before they cost a Dynamics read.
    """
    return [link for link in links
            if (person := people.get(link.marketo_id)) is None
            or not _echo(svc, link, {name: person.get(name) for name in svc.fields.marketo_fields()})]


def dataverse_news(svc: Services, entity: str, records: Iterable[Mapping[str, Any]], *, delta: bool) -> list[str]:
    """Record ids whose mapped values differ from their base, or that need a decision.

    `delta`: the records come from a delta (not a full read). There, a record whose
    `modifiedon` equals its `createdon` was created since the last poll: it has no base to
    compare with (the rare one the real-time endpoint linked meanwhile is merged by the
    applier, which writes nothing when nothing differs), so it is news without the index
    read that a lookup costs. An initial sync of 100,000 leads skips 100,000 reads here.
    """
    key = PRIMARY_KEYS[entity]
    by_id = {str(r[key]).lower(): r for r in dereferenced(svc, entity, records)}  # lookups compare by their keys
    links = svc.links.by_dynamics_many(entity, [rid for rid, r in by_id.items() if not (delta and never_modified(r))])
    news = []
    for rid, record in by_id.items():
        link = links.get(rid)
        # A record not ours to sync as it stands (filter off, lead closed, merged into
        # another) needs the applier's decision.
        if (link is None or record.get("merged")
                or not eligibility.check(record, entity=entity, email=None, linking=False,
                                         sync_filter_field=svc.settings.sync_filter_field).ok
                or not _echo(svc, link, svc.fields.from_dynamics(entity, record))
                or owners.owner_news(svc, link.base, record)):
            news.append(rid)
    return news


def never_modified(record: Mapping[str, Any]) -> bool:
    """The record is as it was created (Dataverse's `modifiedon` equals `createdon`)."""
    created = record.get("createdon")
    return created is not None and created == record.get("modifiedon")


def _echo(svc: Services, link: Link, values: Mapping[str, Any]) -> bool:
    if link.state != LINKED:
        return False
    for name, raw in values.items():
        try:
            spec = svc.fields.spec(name)
        except KeyError:
            continue  # a field outside the map: nothing to sync
        if name not in link.base:
            return False
        if spec.comparable(spec.canonical(raw)) != spec.comparable(link.base[name]):
            return False
    return True
