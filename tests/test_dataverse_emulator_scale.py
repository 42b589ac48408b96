"""The Dataverse emulator at scale: delta paging and primary-key lookups over 20,000 rows.

Drives `WebApi.dispatch` in-process (no HTTP) and checks every answer against a brute-force
reading of the store (what the emulator computed before it had indexes).
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from devhost.emulators.dataverse.store import Store
from devhost.emulators.dataverse.webapi import Req, WebApi
from shared.clients import odata

N = 20_000
SELECT = ("$select", "firstname,emailaddress1")


class _Rollback(Exception):
    pass


def _get(api: WebApi, query: list[tuple[str, str]], prefer: str) -> dict[str, Any]:
    resp = api.dispatch(Req("GET", "leads", query, {"prefer": prefer}))
    assert resp.status == 200, resp.body[:300]
    return dict(json.loads(resp.body))


def _pages(api: WebApi, query: list[tuple[str, str]], prefer: str) -> tuple[list[dict[str, Any]], int, str | None]:
    """Every item across nextLinks, the page count, and the final deltaLink."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        doc = _get(api, query, prefer)
        items += doc["value"]
        pages += 1
        if "@odata.nextLink" not in doc:
            return items, pages, doc.get("@odata.deltaLink")
        assert "@odata.deltaLink" not in doc
        query = parse_qsl(urlsplit(doc["@odata.nextLink"]).query)


def _token(link: str | None) -> list[tuple[str, str]]:
    assert link is not None
    return parse_qsl(urlsplit(link).query)


def _expected_delta(store: Store, since: int) -> tuple[list[str], list[str]]:
    """Brute force: live rows changed after `since` by version, then tombstones by version."""
    rows = sorted((r for r in store.rows["leads"].values() if r["versionnumber"] > since),
                  key=lambda r: r["versionnumber"])
    tombs = sorted((v, rid) for rid, v in store.tombstones["leads"].items() if v > since)
    return [r["leadid"] for r in rows], [rid for _, rid in tombs]


@pytest.fixture(scope="module")
def seeded() -> tuple[Store, WebApi, list[str], int]:
    store = Store()
    api = WebApi(store, "https://dv.example")
    before = store.version
    with store.lock, store.transaction():  # as the admin bulk API does
        ids = [store.create("leads", {"firstname": f"F{i}", "lastname": f"L{i}", "emailaddress1": f"p{i}@x.com"},
                            validate=False)["leadid"] for i in range(N)]
    return store, api, ids, before


def test_delta_pages_every_change_once_in_version_order_with_tombstones_last(
    seeded: tuple[Store, WebApi, list[str], int],
) -> None:
    store, api, ids, before = seeded
    prefer = "odata.track-changes,odata.maxpagesize=5000"

    # Full read: every row once, ascending id, then a deltaLink.
    items, pages, link = _pages(api, [SELECT], prefer)
    assert pages == 4 and [r["leadid"] for r in items] == sorted(ids)
    token = _token(link)

    rng = random.Random(7)
    updated = rng.sample(ids, 1500)
    deleted = rng.sample(ids, 700)
    for rid in updated:
        store.update("leads", rid, {"firstname": "Changed"}, validate=False)
    for rid in updated[:200]:  # a second update moves the row to the end of the delta
        store.update("leads", rid, {"firstname": "Twice"}, validate=False)
    for rid in deleted:
        store.delete("leads", rid)
    new = [store.create("leads", {"lastname": f"New{i}"}, validate=False)["leadid"] for i in range(300)]
    for rid in new[:50]:  # created and deleted between polls: reported as deleted only
        store.delete("leads", rid)
    recreated = deleted[:20]  # a deleted id created again: an upsert, no longer a tombstone
    for rid in recreated:
        store.create("leads", {"leadid": rid, "lastname": "Back"}, validate=False)
    with pytest.raises(_Rollback), store.transaction():  # rolled back: leaves no trace
        store.update("leads", ids[0], {"firstname": "Never"}, validate=False)
        store.delete("leads", ids[1])
        raise _Rollback()

    for since, query in ((None, token), (before, [SELECT, ("$deltatoken", f"{before}!01/01/2025 00:00:00")])):
        items, pages, link = _pages(api, query, prefer)
        changed = [r for r in items if "reason" not in r]
        gone = [r for r in items if "reason" in r]
        assert items[: len(changed)] == changed  # upserts first, then deletions
        if since is None:
            since = int(dict(token)["$deltatoken"].split("!")[0])
        want_rows, want_tombs = _expected_delta(store, since)
        assert [r["leadid"] for r in changed] == want_rows
        assert [d["id"] for d in gone] == want_tombs
        versions = [int(r["@odata.etag"][3:-1]) for r in changed]
        assert versions == sorted(set(versions))  # version order, each row once
        assert len(items) == len({r.get("leadid") or r["id"] for r in items})
        assert pages == -(-len(items) // 5000) and link is not None
    assert set(want_tombs) == (set(deleted) - set(recreated)) | set(new[:50])
    assert len(want_rows) == N - len(deleted) + len(recreated) + 250

    # Smaller pages give the same sequence; the final deltaLink then reports nothing new.
    small, _, link = _pages(api, token, "odata.track-changes,odata.maxpagesize=997")
    assert small == _pages(api, token, prefer)[0]
    assert _get(api, _token(link), prefer)["value"] == []


def test_primary_key_in_query_returns_exactly_those_rows(seeded: tuple[Store, WebApi, list[str], int]) -> None:
    store, api, ids, _ = seeded
    rng = random.Random(11)
    live = list(store.rows["leads"])
    gone = [i for i in ids if i not in store.rows["leads"]][:5]
    wanted = rng.sample(live, 290) + [str(uuid.uuid4()) for _ in range(5)] + gone
    mixed_case = [w.upper() if n % 3 == 0 else w for n, w in enumerate(wanted)]
    expected = sorted(w for w in wanted if w in store.rows["leads"])
    assert len(expected) == 290

    in_filter = odata.in_("leadid", [odata.Guid(w) for w in mixed_case])
    or_filter = " or ".join(f"leadid eq {w}" for w in mixed_case[:60])
    for flt, want in ((in_filter, expected), (or_filter, sorted(w for w in wanted[:60] if w in store.rows["leads"]))):
        items, pages, _ = _pages(api, [SELECT, ("$filter", flt)], "odata.maxpagesize=5000")
        assert [r["leadid"] for r in items] == want and pages == 1
        paged, pages, _ = _pages(api, [SELECT, ("$filter", flt)], "odata.maxpagesize=100")
        assert paged == items and pages == -(-len(want) // 100)

    # The full filter still applies to the looked-up rows; other columns' In() agree with a scan.
    first = store.rows["leads"][expected[0]]["firstname"]
    both = odata.and_(in_filter, odata.compare("firstname", "eq", first))
    assert [r["leadid"] for r in _get(api, [SELECT, ("$filter", both)], "")["value"]] == sorted(
        w for w in expected if store.rows["leads"][w]["firstname"] == first)
    emails = [f"P{i}@X.com" for i in range(0, 3000, 10)]
    by_email = odata.in_("emailaddress1", emails)

    def scan() -> list[str]:
        folded = {e.casefold() for e in emails}
        return sorted(rid for rid, r in store.rows["leads"].items() if (r["emailaddress1"] or "").casefold() in folded)

    touched = {*expected[:3], *expected[-3:]}  # rows the loop updates: never the one it deletes
    for step in range(3):  # the column index follows writes, including rolled-back ones
        assert [r["leadid"] for r in _get(api, [SELECT, ("$filter", by_email)], "")["value"]] == scan()
        hit = [rid for rid in scan() if rid not in touched][step]
        store.update("leads", expected[step], {"emailaddress1": emails[-1 - step]}, validate=False)
        store.delete("leads", hit)
        with pytest.raises(_Rollback), store.transaction():
            store.update("leads", expected[-1 - step], {"emailaddress1": emails[step]}, validate=False)
            store.delete("leads", scan()[-1])
            raise _Rollback()
