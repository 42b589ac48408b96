"""Read both sides of some linked people in bulk: the applier's read, shared with the resync preview.

One Marketo call per 300 people and batched Dataverse `In()` queries per entity (records
the caller already holds are not read again), so a preview reads exactly what an apply of
the same people would read, at the same cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.runtime import ENTITY_SETS, PRIMARY_KEYS, Services
from shared.state.links import Link

Records = dict[tuple[str, str], Mapping[str, Any]]  # (entity, lower-case id) -> Dataverse record


def read_both(svc: Services, links: Sequence[Link], prefetched: Mapping[tuple[str, str], Mapping[str, Any]],
              people: Mapping[int, dict[str, Any]] | None = None) -> tuple[dict[int, dict[str, Any]], Records]:
    """The Marketo person of each link (by id) and its Dynamics record (by entity and id).

    A person or record missing from the answer no longer exists on that side. `people`:
    the links' Marketo people, already read (Marketo is not read again).
    """
    if people is None:
        people = read_marketo(svc, links)
    marketo = {lk.marketo_id: people[lk.marketo_id] for lk in links if lk.marketo_id in people}
    dynamics: Records = dict(prefetched)
    for entity in ("lead", "contact"):
        missing = [str(lk.dynamics_id) for lk in links if lk.entity == entity
                   and (entity, str(lk.dynamics_id)) not in dynamics]
        if missing:
            key = PRIMARY_KEYS[entity]
            for r in svc.dataverse.get_by_ids(ENTITY_SETS[entity], missing, svc.select(entity)):
                dynamics[(entity, r[key].lower())] = r
    return marketo, dynamics


def read_marketo(svc: Services, links: Sequence[Link]) -> dict[int, dict[str, Any]]:
    """The Marketo person of each link, by id (one call per 300); a missing one no longer exists."""
    return {int(r["id"]): r for r in svc.marketo.get_leads([lk.marketo_id for lk in links], svc.marketo_fields())}
