"""State in a real (Azurite) storage account: links, cursors, the activity log, the work queues.

Every test has its own tables (`name_prefix`). The work queues have fixed names (the queue
triggers are bound to them), so the queue tests empty them first.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from azure.storage.queue import QueueClient

from shared.errors import StateConflict
from shared.state.activity import (
    COLLISION,
    CREATED,
    PARKED,
    REJECTED,
    SYNCED,
    VALIDATION_FAILED,
    ActivityLog,
    Entry,
    by_hour,
    counted,
)
from shared.state.cursors import CursorStore
from shared.state.links import CREATING, LINKED, Link, LinkStore, index_key, link_key
from shared.state.links import PARKED as LINK_PARKED
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO, Work, WorkQueues

T = TypeVar("T")


@pytest.fixture
def storage(storage_connection_string: str, name_prefix: str) -> Storage:
    return Storage(storage_connection_string, table_prefix=name_prefix)


@pytest.fixture
def links(storage: Storage) -> LinkStore:
    return LinkStore(storage)


def guid() -> str:
    return str(uuid.uuid4())


def race(n: int, action: Callable[[], T]) -> list[T | BaseException]:
    """Run `action` in n threads released at the same moment; results or exceptions, in any order."""
    barrier = threading.Barrier(n)
    results: list[T | BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            out: T | BaseException = action()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on by the test
            out = exc
        with lock:
            results.append(out)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


# -- links -----------------------------------------------------------------------------
def test_unknown_person_has_no_link(links: LinkStore) -> None:
    assert links.get(1042) is None
    assert links.by_dynamics("lead", guid()) is None


def test_a_saved_link_reads_back_from_both_sides(links: LinkStore) -> None:
    did = guid()
    base = {"email": "ann@example.com", "firstName": "Ann", "unsubscribed": False, "employees": 12, "title": None}
    saved = links.save(Link(1042, "lead", did, base))
    assert saved.etag and saved.updated_at is not None

    got = links.get(1042)
    assert got is not None
    assert (got.marketo_id, got.entity, got.dynamics_id, got.base, got.state) == (1042, "lead", did, base, LINKED)
    assert got.etag == saved.etag and got.person == "m1042"
    assert links.by_dynamics("lead", did) == got
    assert links.by_dynamics("lead", did.upper()) == got  # Dataverse GUIDs in any case
    assert links.by_dynamics("contact", did) is None


def test_parked_state_is_kept(links: LinkStore) -> None:
    saved = links.save(Link(7, "contact", guid(), {"email": "a@b.co"}))
    links.save(saved.parked("lastname is required", "fp1"))
    got = links.get(7)
    assert got is not None
    assert (got.state, got.parked_reason, got.parked_fingerprint) == (LINK_PARKED, "lastname is required", "fp1")
    agreed = links.save(got.agreed({"email": "a@b.co", "lastName": "Lee"}))
    again = links.get(7)
    assert again is not None and again.state == LINKED and again.parked_reason is None
    assert again.base == {"email": "a@b.co", "lastName": "Lee"} and again.etag == agreed.etag


def test_two_copies_of_one_link_cannot_both_be_saved(links: LinkStore) -> None:
    links.save(Link(1042, "lead", guid(), {"title": "Engineer"}))
    mine, theirs = links.get(1042), links.get(1042)
    assert mine is not None and theirs is not None
    links.save(mine.agreed({"title": "Manager"}))
    with pytest.raises(StateConflict):
        links.save(theirs.agreed({"title": "Director"}))
    current = links.get(1042)
    assert current is not None and current.base == {"title": "Manager"}
    links.save(current.agreed({"title": "Director"}))  # re-read and retry succeeds


def test_two_new_links_for_one_person_conflict(links: LinkStore) -> None:
    links.save(Link(5, "lead", guid()))
    with pytest.raises(StateConflict):
        links.save(Link(5, "contact", guid()))


def test_save_many_returns_conflicts_in_place(links: LinkStore) -> None:
    links.save(Link(2, "lead", guid()))
    out = links.save_many([Link(1, "lead", guid()), Link(2, "lead", guid()), Link(3, "contact", guid())])
    assert [type(o) for o in out] == [Link, StateConflict, Link]


def test_only_one_of_many_concurrent_claims_wins(links: LinkStore) -> None:
    results = race(20, lambda: links.claim(1042))
    assert not [r for r in results if isinstance(r, BaseException)]
    winners = [r for r in results if isinstance(r, Link)]
    assert len(winners) == 1 and results.count(None) == 19
    assert winners[0].state == CREATING and winners[0].etag
    stored = links.get(1042)
    assert stored is not None and stored.state == CREATING


def test_a_fresh_claim_is_not_taken_over(links: LinkStore) -> None:
    assert links.claim(9) is not None
    assert links.claim(9) is None


def test_a_linked_person_cannot_be_claimed(links: LinkStore) -> None:
    links.save(Link(9, "lead", guid()))
    assert links.claim(9, stale_after=timedelta(0)) is None
    stored = links.get(9)
    assert stored is not None and stored.state == LINKED


def test_a_stale_claim_is_taken_over_and_the_old_holder_loses(links: LinkStore) -> None:
    dead = links.claim(9)
    assert dead is not None
    taken = links.claim(9, stale_after=timedelta(0))
    assert taken is not None and taken.state == CREATING and taken.etag != dead.etag
    with pytest.raises(StateConflict):  # the holder that was presumed dead wakes up too late
        links.save(replace_link(dead, entity="lead", dynamics_id=guid(), state=LINKED))
    finished = links.save(replace_link(taken, entity="lead", dynamics_id=guid(), state=LINKED))
    assert links.by_dynamics("lead", str(finished.dynamics_id)) is not None


def replace_link(link: Link, **changes: object) -> Link:
    return replace(link, **changes)  # type: ignore[arg-type]


def test_move_lead_to_contact(links: LinkStore) -> None:
    lead, contact = guid(), guid()
    link = links.save(Link(1042, "lead", lead, {"title": "Engineer"}))
    moved = links.move(link, "contact", contact)
    assert (moved.entity, moved.dynamics_id, moved.base) == ("contact", contact, {"title": "Engineer"})
    assert links.by_dynamics("lead", lead) is None
    found = links.by_dynamics("contact", contact)
    assert found is not None and found.marketo_id == 1042
    with pytest.raises(StateConflict):  # the pre-move copy is stale
        links.save(link)


def test_a_pointer_left_behind_by_a_crash_is_ignored(storage: Storage, links: LinkStore) -> None:
    lead, contact = guid(), guid()
    link = links.save(Link(1042, "lead", lead))
    links.save(replace_link(link, entity="contact", dynamics_id=contact))  # crashed before removing the pointer
    table = storage.table("links")
    pointer = table.get_entity(*index_key("lead", lead))
    assert pointer["marketo_id"] == 1042  # still there ...
    assert links.by_dynamics("lead", lead) is None  # ... and ignored
    assert links.by_dynamics_many("lead", [lead]) == {}
    found = links.by_dynamics("contact", contact)
    assert found is not None and found.marketo_id == 1042


def test_a_pointer_to_a_missing_link_is_ignored(storage: Storage, links: LinkStore) -> None:
    did = guid()
    links.save(Link(77, "lead", did))
    storage.table("links").delete_entity(*link_key(77))
    assert links.by_dynamics("lead", did) is None


def test_delete_ends_the_link(links: LinkStore) -> None:
    did = guid()
    link = links.save(Link(1042, "contact", did))
    links.delete(link)
    assert links.get(1042) is None and links.by_dynamics("contact", did) is None
    links.delete(link)  # twice is harmless
    assert links.claim(1042) is not None  # the person may be linked afresh


def test_delete_with_a_stale_copy_conflicts(links: LinkStore) -> None:
    link = links.save(Link(1042, "lead", guid(), {"title": "A"}))
    links.save(link.agreed({"title": "B"}))
    with pytest.raises(StateConflict):
        links.delete(link)
    assert links.get(1042) is not None


def test_many_at_once(links: LinkStore) -> None:
    dids = {i: guid() for i in range(1, 31)}
    links.save_many([Link(i, "lead" if i % 2 else "contact", d) for i, d in dids.items()])
    got = links.get_many([1, 2, 2, 3, 999])
    assert sorted(got) == [1, 2, 3] and got[2].dynamics_id == dids[2]
    leads = [dids[i] for i in (1, 3, 5)]
    by_d = links.by_dynamics_many("lead", [*leads, leads[0], dids[2], guid()])
    assert sorted(by_d) == sorted(leads)  # dids[2] is a contact, the last one unknown
    assert {by_d[d].marketo_id for d in leads} == {1, 3, 5}
    assert sorted(link.marketo_id for link in links.all()) == list(range(1, 31))


def test_links_spread_over_partitions_and_are_written_in_transactions(storage: Storage) -> None:
    counting = CountingStorage(storage)
    links = LinkStore(counting)
    out = links.save_many([Link(100_000 + i, "lead", guid()) for i in range(300)])  # consecutive, as Marketo creates
    assert all(isinstance(o, Link) and o.etag for o in out)
    rows = list(storage.table("links").list_entities(select=["PartitionKey", "RowKey"]))
    assert len(rows) == 600
    assert len({r["PartitionKey"] for r in rows if r["PartitionKey"].startswith("m")}) == 16
    assert len({r["PartitionKey"] for r in rows if r["PartitionKey"].startswith("d")}) == 16
    assert counting.requests <= 2 * 16 + 2  # one transaction per partition per kind, not 600 requests
    assert sum(1 for _ in links.all()) == 300
    assert links.lookup("lead", [str(o.dynamics_id) for o in out if isinstance(o, Link)]).links.keys()


def test_a_conflict_inside_a_transaction_fails_only_its_own_link(links: LinkStore) -> None:
    stale = links.save(Link(16, "lead", guid(), {"title": "A"}))  # 16, 32 and 48 share a partition
    links.save(stale.agreed({"title": "B"}))  # someone else moved it on
    fresh = [links.save(Link(i, "lead", guid())) for i in (32, 48)]
    out = links.save_many([fresh[0].agreed({"title": "x"}), stale.agreed({"title": "C"}),
                           fresh[1].agreed({"title": "y"}), Link(64, "contact", guid())])
    assert [type(o) for o in out] == [Link, StateConflict, Link, Link]
    assert links.get(16).base == {"title": "B"}  # type: ignore[union-attr]
    assert links.get(32).base == {"title": "x"} and links.get(48).base == {"title": "y"}  # type: ignore[union-attr]
    saved = out[0]
    assert isinstance(saved, Link)
    links.save(saved.agreed({"title": "z"}))  # the etag a transaction returned is the row's real one


def test_a_tombstone_answers_the_same_lookup_until_the_record_is_linked_again(links: LinkStore) -> None:
    did, at = guid(), datetime.now(UTC).replace(microsecond=0)
    link = links.save(Link(1042, "lead", did))
    links.delete(link, tombstone_at=at)
    found = links.lookup("lead", [did, guid()])
    assert found.links == {} and found.buried == {did: at}
    relinked = links.save(Link(2042, "lead", did))
    found = links.lookup("lead", [did])
    assert found.links == {did: relinked} and found.buried == {}
    links.delete(relinked)  # ended for another reason: no tombstone, no pointer
    assert links.lookup("lead", [did]) == type(found)()


def test_a_merge_marker_keeps_the_record_out_and_an_ended_row_names_a_tombstoned_record(links: LinkStore) -> None:
    did, other, at = guid(), guid(), datetime.now(UTC).replace(microsecond=0)
    links.delete(links.save(Link(3001, "lead", did)), tombstone_at=at, merged_into=3000)
    found = links.lookup("lead", [did])
    assert found.links == {} and found.merged == {did: 3000} and found.buried == {}
    links.delete(links.save(Link(3002, "contact", other)), tombstone_at=at)
    assert links.lookup("contact", [other]).merged == {} and links.lookup("contact", [other]).buried == {other: at}
    assert links.ended(3002) == ("contact", other) and links.ended(3001) == ("lead", did)
    assert links.ended(3003) is None and sum(1 for _ in links.all()) == 0  # ended rows are no links


def test_transfer_hands_the_link_and_its_base_to_another_person(links: LinkStore) -> None:
    did = guid()
    link = links.save(Link(4001, "lead", did, {"title": "A"}))
    moved = links.transfer(link, 4000)
    assert links.get(4001) is None and moved.marketo_id == 4000
    assert links.get(4000).base == {"title": "A"}  # type: ignore[union-attr]
    assert links.by_dynamics("lead", did) == links.get(4000)
    links.save(Link(4002, "lead", guid()))
    with pytest.raises(StateConflict):
        links.transfer(moved, 4002)  # that person has a link of its own


def test_a_tombstone_written_before_a_failed_delete_does_not_hide_the_live_link(links: LinkStore) -> None:
    did = guid()
    stale = links.save(Link(1042, "lead", did, {"title": "A"}))
    links.save(stale.agreed({"title": "B"}))
    with pytest.raises(StateConflict):
        links.delete(stale, tombstone_at=datetime.now(UTC))
    found = links.lookup("lead", [did])
    assert found.links[did].base == {"title": "B"} and found.buried == {}


def test_reserving_index_rows_tells_unindexed_records_in_a_transaction_per_partition(storage: Storage) -> None:
    counting = CountingStorage(storage)
    links = LinkStore(counting)
    linked, buried, held = "a" + guid()[1:], "a" + guid()[1:], "b" + guid()[1:]  # among the new ones' partitions
    links.delete(links.save(Link(7, "lead", buried)), tombstone_at=datetime.now(UTC).replace(microsecond=0))
    links.save(Link(8, "lead", linked))
    assert links.reserve_index("lead", [held]) == {held}
    new = [guid() for _ in range(300)]
    before = counting.requests
    assert links.reserve_index("lead", [linked, *new, buried, held, new[0]]) == set(new)
    assert counting.requests - before <= 16 + 3  # a transaction per partition, one resend per row that exists
    # A reservation is no link and no tombstone; the other rows answer as before.
    found = links.lookup("lead", [held, new[0], linked, buried])
    assert found.links.keys() == {linked} and found.buried.keys() == {buried}
    saved = links.save(Link(9, "lead", new[0]))  # a link's pointer replaces the reservation
    assert links.by_dynamics("lead", new[0]) == saved
    assert links.reserve_index("lead", new[:50]) == set()
    assert links.reserve_index("contact", new[:3]) == set(new[:3])  # one entity's rows are not another's


def test_concurrent_reservations_of_the_same_records_reserve_each_once(links: LinkStore) -> None:
    ids = [guid() for _ in range(120)]
    results = race(4, lambda: links.reserve_index("lead", ids))
    won = [r for r in results if isinstance(r, set)]
    assert len(won) == 4
    assert sorted(i for r in won for i in r) == sorted(ids)


class CountingStorage(Storage):
    """The same account, counting the table requests the code under test makes."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner.connection_string, table_prefix=inner.table_prefix)
        self.requests = 0
        self._counting = threading.Lock()
        self._transport.session.hooks["response"].append(self._count)

    def _count(self, response: object, *args: object, **kwargs: object) -> None:
        with self._counting:
            self.requests += 1


# -- cursors ---------------------------------------------------------------------------
def test_cursor_lifecycle(storage: Storage) -> None:
    cursors = CursorStore(storage)
    assert cursors.get("marketo-leadchanges") is None
    first = cursors.save("marketo-leadchanges", "token-1", previous=None)
    assert first.etag and cursors.get("marketo-leadchanges") == first
    second = cursors.save("marketo-leadchanges", "token-2", previous=first)
    assert second.etag != first.etag
    got = cursors.get("marketo-leadchanges")
    assert got is not None and got.value == "token-2" and got.etag == second.etag
    cursors.save("dataverse-lead", "https://delta", previous=None)
    assert sorted(c.name for c in cursors.all()) == ["dataverse-lead", "marketo-leadchanges"]
    cursors.delete("dataverse-lead")
    cursors.delete("dataverse-lead")
    assert cursors.get("dataverse-lead") is None


def test_overlapping_pollers_cannot_move_a_cursor_backwards(storage: Storage) -> None:
    cursors = CursorStore(storage)
    start = cursors.save("dataverse-contact", "delta-1", previous=None)
    cursors.save("dataverse-contact", "delta-2", previous=start)
    with pytest.raises(StateConflict):
        cursors.save("dataverse-contact", "delta-2-from-the-slow-poller", previous=start)
    got = cursors.get("dataverse-contact")
    assert got is not None and got.value == "delta-2"


def test_two_first_polls_conflict(storage: Storage) -> None:
    cursors = CursorStore(storage)
    cursors.save("marketo-deletedleads", "a", previous=None)
    with pytest.raises(StateConflict):
        cursors.save("marketo-deletedleads", "b", previous=None)


def test_concurrent_saves_from_one_cursor_have_one_winner(storage: Storage) -> None:
    cursors = CursorStore(storage)
    start = cursors.save("dataverse-lead", "delta-0", previous=None)
    results = race(10, lambda: cursors.save("dataverse-lead", uuid.uuid4().hex, previous=start))
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, StateConflict) for r in results if isinstance(r, BaseException))
    got = cursors.get("dataverse-lead")
    assert got is not None and got.value == winners[0].value


def test_saving_over_a_cursor_deleted_meanwhile_conflicts(storage: Storage) -> None:
    cursors = CursorStore(storage)
    start = cursors.save("marketo-leadchanges", "token-1", previous=None)
    cursors.delete("marketo-leadchanges")  # another poller re-baselined
    with pytest.raises(StateConflict):
        cursors.save("marketo-leadchanges", "token-2", previous=start)


# -- activity log ----------------------------------------------------------------------
def test_a_persons_log_is_theirs_newest_first(storage: Storage) -> None:
    log = ActivityLog(storage)
    now = datetime.now(UTC)
    entries = [
        Entry("m1", SYNCED, "first", "marketo->dynamics", {"to_dynamics": {"title": "A"}}, now - timedelta(minutes=9)),
        Entry("m2", SYNCED, "other person", at=now - timedelta(minutes=8)),
        Entry("m1", COLLISION, "second", details={"field": "title"}, at=now - timedelta(minutes=5),
              operation_id="op7"),
        Entry("m2", PARKED, "other again", at=now - timedelta(minutes=4)),
        Entry("m1", VALIDATION_FAILED, "third", at=now - timedelta(minutes=1)),
    ]
    log.write(entries)
    mine = log.for_person("m1")
    assert [e.message for e in mine] == ["third", "second", "first"]
    assert mine[1] == entries[2]  # every field comes back
    assert mine[2].details == {"to_dynamics": {"title": "A"}} and mine[2].direction == "marketo->dynamics"
    assert [e.message for e in log.for_person("m2")] == ["other again", "other person"]
    assert [e.message for e in log.for_person("m1", limit=2)] == ["third", "second"]
    assert log.for_person("m3") == []


def test_a_person_key_cannot_widen_the_query(storage: Storage) -> None:
    log = ActivityLog(storage)
    log.write([Entry("m1", SYNCED, "someone else")])
    assert log.for_person("x' or PartitionKey ne 'x") == []
    log.write([Entry("lead:o'brien", SYNCED, "quoted")])
    assert [e.message for e in log.for_person("lead:o'brien")] == ["quoted"]


def test_since_returns_the_window_by_kind_newest_first(storage: Storage) -> None:
    log = ActivityLog(storage)
    now = datetime.now(UTC)
    log.write([
        Entry("m1", VALIDATION_FAILED, "too old", at=now - timedelta(hours=3)),
        Entry("m1", VALIDATION_FAILED, "in window, older", at=now - timedelta(minutes=50)),
        Entry("m2", SYNCED, "not a failure", at=now - timedelta(minutes=40)),
        Entry("m3", PARKED, "in window, newer", at=now - timedelta(minutes=2)),
    ])
    start = now - timedelta(hours=1)
    failures = list(log.since(start, kinds={VALIDATION_FAILED, PARKED}))
    assert [e.message for e in failures] == ["in window, newer", "in window, older"]
    # A routine outcome is counted by hour, not listed: its entry there is a summary.
    assert [(e.person, e.message) for e in log.since(start)] == [
        ("m3", "in window, newer"), ("", "1 synced"), ("m1", "in window, older")]
    assert [e.message for e in log.since(now - timedelta(hours=4), kinds={VALIDATION_FAILED})] == [
        "in window, older", "too old"]


def test_the_hourly_view_counts_routine_outcomes_and_keeps_the_others_whole() -> None:
    at = datetime(2026, 11, 26, 10, 59, 58, tzinfo=UTC)
    entries = [Entry(f"m{i}", SYNCED, "to Marketo: title", "dynamics->marketo", at=at + timedelta(seconds=i))
               for i in range(4)]  # two in the 10:00 hour, two in the 11:00 hour
    entries += [Entry("m9", SYNCED, "to Dynamics: city", "marketo->dynamics", at=at),
                Entry("m8", CREATED, "created", "dynamics->marketo", at=at),
                Entry("m7", VALIDATION_FAILED, "email is blank", at=at),
                Entry("m6", COLLISION, "title changed on both sides", at=at)]
    kept = by_hour(entries)
    assert sorted((e.person, e.kind, e.direction, e.count, e.at.hour) for e in kept) == [
        ("", CREATED, "dynamics->marketo", 1, 10), ("", SYNCED, "dynamics->marketo", 2, 10),
        ("", SYNCED, "dynamics->marketo", 2, 11), ("", SYNCED, "marketo->dynamics", 1, 10),
        ("m6", COLLISION, "", 1, 10), ("m7", VALIDATION_FAILED, "", 1, 10)]
    assert counted(kept) == counted(entries) == {SYNCED: 5, CREATED: 1, VALIDATION_FAILED: 1, COLLISION: 1}


def test_a_batch_larger_than_one_transaction_is_written_whole(storage: Storage) -> None:
    log = ActivityLog(storage)
    at = datetime.now(UTC)
    log.write([Entry(f"m{i}", SYNCED, f"n{i}", at=at - timedelta(seconds=i)) for i in range(250)])
    summaries = list(log.since(at - timedelta(minutes=10)))
    assert sum(e.count for e in summaries) == 250 and len(summaries) <= 2  # 2 if the 250 s span an hour
    assert [e.message for e in log.for_person("m249")] == ["n249"]


def test_large_details_do_not_break_reading_the_log(storage: Storage) -> None:
    log = ActivityLog(storage)
    log.write([Entry("m1", VALIDATION_FAILED, "huge record", details={"record": "x" * 40_000})])
    (entry,) = log.for_person("m1")
    assert entry.message == "huge record"


def test_long_messages_are_kept_within_limits(storage: Storage) -> None:
    log = ActivityLog(storage)
    log.write([Entry("m1", VALIDATION_FAILED, "y" * 20_000)])
    (entry,) = log.for_person("m1")
    assert entry.message == "y" * 8000


# -- work queues -----------------------------------------------------------------------
def test_sent_work_is_base64_json_on_the_queue(storage: Storage, storage_connection_string: str) -> None:
    queues = WorkQueues(storage)
    for name in (FROM_MARKETO, FROM_DYNAMICS):
        storage.queue(name).clear_messages()
    marketo = Work("marketo", "changed", (1042, 7))
    dynamics = [Work("dynamics", "deleted", (guid(),), "contact") for _ in range(3)]
    queues.send([marketo, *dynamics])
    assert queues.depth(FROM_MARKETO) == 1
    assert queues.depth(FROM_DYNAMICS) == 3

    raw = QueueClient.from_connection_string(storage_connection_string, FROM_MARKETO)  # no decode policy
    (message,) = raw.peek_messages(max_messages=5)
    text = message.content
    assert not text.startswith("{")
    assert json.loads(base64.b64decode(text, validate=True)) == json.loads(marketo.to_json())
    assert Work.from_json(base64.b64decode(text)) == marketo

    received = [Work.from_json(m.content) for m in storage.queue(FROM_DYNAMICS).receive_messages(max_messages=5)]
    assert sorted(w.operation_id for w in received) == sorted(w.operation_id for w in dynamics)
    for name in (FROM_MARKETO, FROM_DYNAMICS):
        storage.queue(name).clear_messages()


def test_queues_are_created_on_first_use(storage: Storage) -> None:
    name = f"{storage.table_prefix}-work"
    queue = storage.queue(name)
    assert name in storage.queue_names()
    assert storage.queue(name) is queue
    assert WorkQueues(storage).depth(name) == 0


def test_an_entry_quoting_an_unencodable_value_is_stored_with_it_escaped(storage: Storage) -> None:
    log = ActivityLog(storage)
    log.write([Entry("m9", REJECTED, "Marketo 1003: Invalid value 'Ann\ud800'", details={"value": "Ann\udfff"})])
    (entry,) = log.for_person("m9")
    assert entry.message == "Marketo 1003: Invalid value 'Ann\\ud800'"
    entry.message.encode("utf-8")  # any reader can print, log or serve it
    assert entry.details == {"value": "Ann\udfff"}  # JSON keeps the value exactly, as an ASCII escape
