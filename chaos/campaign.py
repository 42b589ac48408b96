"""The fault campaign: seed people, edit both sides in rounds under faults, then check.

One run (`Campaign(config).run()`):

1. Azurite on disk (fixed ports), both emulators in this process, the app in a child
   process (`chaos.apphost`) with its pollers set to never fire on their own: the
   campaign runs them through the host's admin endpoint, so it knows where each sync
   cycle starts and ends.
2. Seed: Dynamics leads and contacts in bulk (some contacts have a Marketo person with the
   same email already); the first sync links them (and creates the missing people).
3. Rounds: edit people on both sides (some on the same field: collisions), merge a few
   pairs in Dynamics and in Marketo (chaos.merges), create a few Marketo people through
   the real-time webhook, push a few malformed and a few unknown-record messages into the
   work queues; then sync until drained while faults
   fire: Marketo 606/615/602/5xx/slow/drop, Dataverse 429/5xx/401/drop/slow and token
   revocation, the host SIGKILLed and restarted, Azurite restarted.
4. Checks (chaos.checks) against the oracle (chaos.oracle) and the services' own stats.

The random choices (who is edited, which fault, when a kill comes) follow `seed`; the
timing of threads and services does not, so two runs with one seed make the same edits
and the same fault plan, not the same interleaving.
"""

from __future__ import annotations

import random
import re
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from chaos import events
from chaos.apphost import AppProcess, HostDied
from chaos.faults import FaultInjector
from chaos.infra import QueueDepths, RestartableAzurite, free_ports
from chaos.merges import Merger
from chaos.oracle import DYNAMICS, MARKETO, Oracle, Person, column, fields_for
from devhost.emulators.dataverse import DataverseAdmin
from devhost.emulators.marketo import MarketoAdmin
from devhost.events import wire_app
from devhost.harness import POLL_DATAVERSE, POLL_MARKETO
from devhost.stack import DEV_FUNCTION_KEY, Stack, StackConfig
from shared.state.pending import PENDING_QUEUE
from shared.state.storage import Storage
from shared.state.workqueue import FROM_DYNAMICS, FROM_MARKETO

NEVER = "0 0 0 1 1 *"  # pollers run only when the campaign asks
DOMAIN = "chaos.example.com"


# The app's log lines for a `sync-person` request it kept: accepted, or answered from the link.
ACCEPTED = re.compile(r"sync-person m(\d+) (?:accepted|->|finished)")

@dataclass
class Config:
    seed: int = 20240601
    people: int = 2000
    rounds: int = 6
    contact_share: float = 0.25
    prelinked_share: float = 0.2  # of contacts: a Marketo person with that email exists first
    edit_share: float = 0.15  # of people, per side per round
    collision_share: float = 0.05  # of people per round: one field edited on both sides
    realtime_per_round: int = 4  # new Marketo people sent through POST /api/sync-person
    kill_rounds: float = 1.0  # share of rounds with a host SIGKILL (at a random moment)
    azurite_every: int = 3  # an Azurite restart in every n-th round (0: never)
    faults_per_kind: int = 2  # each kind 0..n times per round
    bad_messages_per_round: int = 1  # malformed (non-JSON / bad version) per round, alternating
    unknown_messages_per_round: int = 1  # valid messages naming records that do not exist
    merges_per_round: int = 1  # pairs of linked people merged per side per round (chaos.merges)
    lease_s: float = 20.0
    events: bool = True  # both emulators' change events wired to the app, with their faults (chaos.events)
    event_fault_rate: float = 0.1  # per kind of event fault, while faults are armed
    worker_processes: int = 1  # the app's FUNCTIONS_WORKER_PROCESS_COUNT
    workdir: Path | None = None
    log: Callable[[str], None] = print


@dataclass
class Tally:
    """What the campaign did, for the report."""

    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    edits: dict[str, int] = field(default_factory=lambda: {MARKETO: 0, DYNAMICS: 0})
    collisions_made: int = 0
    kills: int = 0
    azurite_restarts: int = 0
    revocations: int = 0
    bad_messages: list[str] = field(default_factory=list)  # markers
    unknown_messages: int = 0
    realtime: dict[str, int] = field(default_factory=dict)  # status -> count
    realtime_people: int = 0
    realtime_missing: list[str] = field(default_factory=list)  # accepted webhook people left without a lead
    # Webhook people none of whose calls the app accepted (each died with the host before
    # the request was kept): Marketo logs the errors and nothing is left to finish.
    realtime_unaccepted: list[str] = field(default_factory=list)
    sync_cycles: int = 0
    round_mismatches: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


class Campaign:
    def __init__(self, config: Config) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.oracle = Oracle()
        self.tally = Tally()
        self.log = config.log
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.stack: Stack | None = None
        self.azurite: RestartableAzurite | None = None
        self.app: AppProcess | None = None
        self._seq = 0

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> Campaign:
        if self.cfg.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="leadsync-chaos-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = self.cfg.workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.azurite = RestartableAzurite(self.workdir / "azurite")
            connection = self.azurite.start()
            config = StackConfig(connection_string=connection, start_host=False,
                                 # Deleted leads and merges every poll: a round's merges settle within it.
                                 extra_env={"MARKETO_POLL_SCHEDULE": NEVER, "DATAVERSE_POLL_SCHEDULE": NEVER,
                                            "MARKETO_DELETES_EVERY_S": "0",
                                            "FUNCTIONS_WORKER_PROCESS_COUNT": str(self.cfg.worker_processes),
                                            # just past a claim's 2 minutes: the finisher finds it stale
                                            "LEADSYNC_REALTIME_FINISH_AFTER_S": "130",
                                            # the quota phase's pause is re-checked often (chaos.quota)
                                            "MARKETO_QUOTA_RECHECK_S": "2"})
            self.stack = Stack(config, log=lambda _line: None).start()
            self.marketo = MarketoAdmin(self.stack.marketo.base_url)
            self.dataverse = DataverseAdmin(self.stack.dataverse.base_url, self.stack.dataverse.ca_path)
            self.merger = Merger(self.rng, self.oracle, self.marketo, self.dataverse, self._value)
            self.faults = FaultInjector(self.rng, self.marketo, self.dataverse, self.stack.dataverse.emulator,
                                        per_kind=self.cfg.faults_per_kind)
            self.depths = QueueDepths(connection)
            self.storage = Storage(connection)
            # One port for every start: the emulators' webhooks keep calling the same URL across kills.
            self.app = AppProcess(self.stack.env, function_key=DEV_FUNCTION_KEY, log_path=self.workdir / "app.log",
                                  lease_s=self.cfg.lease_s, port=free_ports(1)[0])
            self.app.start()
            self.events = events.EventFaults(self.marketo, self.dataverse, self.cfg.event_fault_rate)
            if self.cfg.events:
                wire_app(self.stack.env, self.app.url, DEV_FUNCTION_KEY)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.app is not None:
            self.app.stop()
            self.app = None
        if self.stack is not None:
            for client in (getattr(self, "marketo", None), getattr(self, "dataverse", None),
                           getattr(self, "depths", None)):
                if client is not None:
                    client.close()
            self.stack.stop()
            self.stack = None
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- the run -----------------------------------------------------------------------
    def run(self) -> Tally:
        t0 = time.monotonic()
        self.settle()  # first poll: the cursors start here
        self.seed()
        self.tally.seconds["seed"] = time.monotonic() - t0
        for number in range(1, self.cfg.rounds + 1):
            started = time.monotonic()
            self.round(number)
            self.log(f"round {number}/{self.cfg.rounds}: {time.monotonic() - started:.1f} s, "
                     f"{self.tally.round_mismatches[-1]} field(s) off the oracle")
        self.tally.seconds["total"] = time.monotonic() - t0
        assert self.app is not None
        self.tally.kills = self.app.kills
        self.tally.revocations = self.faults.revocations
        return self.tally

    def seed(self) -> None:
        cfg, rng = self.cfg, self.rng
        n_contacts = round(cfg.people * cfg.contact_share)
        entities = ["contact"] * n_contacts + ["lead"] * (cfg.people - n_contacts)
        records: dict[str, list[tuple[Person, dict[str, Any], dict[str, Any]]]] = {"lead": [], "contact": []}
        marketo_first: list[dict[str, Any]] = []
        for i, entity in enumerate(entities):
            key = f"p{i:05d}"
            person = Person(key, f"{key}.{cfg.seed}@{DOMAIN}", entity, dynamics_id="")
            values = {"firstName": f"F{i}", "lastName": f"L{i}", "title": f"T{i}", "city": f"City{i % 97}"}
            if entity == "lead":
                values["company"] = f"Co{i % 131}"
            marketo_values: dict[str, Any] | None = None
            if entity == "contact" and rng.random() < cfg.prelinked_share:
                marketo_values = {"firstName": values["firstName"], "lastName": values["lastName"],
                                  "title": rng.choice([None, f"MT{i}", values["title"]]),
                                  "state": rng.choice([None, f"S{i % 50}"]),
                                  "city": rng.choice([None, values["city"], f"MCity{i}"])}
                marketo_first.append({"email": person.email, **{k: v for k, v in marketo_values.items() if v}})
            records[entity].append((person, values, marketo_values or {}))
        if marketo_first:
            for start in range(0, len(marketo_first), 500):
                self.marketo.bulk(marketo_first[start:start + 500])
        for entity, items in records.items():
            set_name = "leads" if entity == "lead" else "contacts"
            for start in range(0, len(items), 500):
                chunk = items[start:start + 500]
                rows = []
                for person, values, _ in chunk:
                    row = {"emailaddress1": person.email, **{column(entity, k): v for k, v in values.items()}}
                    if entity == "lead":
                        row["subject"] = "chaos seed"
                    rows.append(row)
                ids = self.dataverse.bulk(set_name, rows)
                for (person, values, marketo_values), rid in zip(chunk, ids, strict=True):
                    person.dynamics_id = rid.lower()
                    if marketo_values:
                        self.oracle.add_linked_by_email(person, marketo_values, values)
                    else:
                        self.oracle.add(person, values)
        self.log(f"seeded {cfg.people} people ({n_contacts} contacts, {len(marketo_first)} of them already "
                 "in Marketo); initial sync under faults")
        self.chaotic_sync(kill=True, azurite=False)
        by_email = self._marketo_ids_by_email()
        for person in self.oracle.people.values():
            ids = by_email.get(person.email.lower(), [])
            person.marketo_id = ids[0] if ids else None
        self.tally.round_mismatches.append(len(self.compare()))
        self.log(f"initial sync done: {self.tally.round_mismatches[-1]} field(s) off the oracle")

    def round(self, number: int) -> None:
        self.oracle.begin_round(number)
        live, held = self.edit_round(number)
        if self.cfg.events:  # see chaos.events for why the collisions go with the events held
            self.events.live()
            kill = self.rng.random() < self.cfg.kill_rounds
            killer = threading.Thread(target=self._kill_later, args=(self.rng.uniform(0.2, 2.0),
                                                                      self.rng.uniform(0.2, 1.0)), daemon=True)
            if kill:
                killer.start()
            self.send_edits(live)
            if kill:
                killer.join()
            self.wait_events()
            self.events.hold()
        else:
            self.send_edits(live)
        self.send_edits(held)
        self.merger.round(number, self.cfg.merges_per_round)
        if self.cfg.events:
            self.events.live()
        kill = self.rng.random() < self.cfg.kill_rounds
        azurite = bool(self.cfg.azurite_every) and number % self.cfg.azurite_every == 0
        self.inject_messages(number)
        realtime = self.start_realtime(number)
        self.chaotic_sync(kill=kill, azurite=azurite)
        for thread in realtime:
            thread.join()
        self.settle()  # the webhook calls may have finished after the last poll
        self.finish_realtime()
        if self.cfg.events:
            self.events.clear()
            self.wait_events()  # late, duplicated and reordered events: they must change nothing
            self.settle()
        self.oracle.end_round()
        self.collect_realtime()
        self.tally.round_mismatches.append(len(self.compare()))

    # -- edits ---------------------------------------------------------------------------
    def _value(self, name: str, number: int) -> str:
        self._seq += 1
        tag = "".join(self.rng.choices(string.ascii_lowercase, k=4))
        return f"{name[:2]}{number}{tag}{self._seq % 1000}"

    def edit_round(self, number: int) -> tuple[Edits, Edits]:
        """The round's edits, told to the oracle and not yet made: (people with no field edited on
        both sides, people with one)."""
        cfg, rng = self.cfg, self.rng
        people = sorted((p for p in self.oracle.people.values() if p.marketo_id is not None), key=lambda p: p.key)
        # Per person: Marketo edits in two passes (a second edit of one field), Dynamics edits as
        # one PATCH with its edits in order: two PATCHes of one record sent from parallel threads
        # could land in either order, and the oracle needs the last one.
        plans: dict[str, tuple[Person, list[list[dict[str, Any]]], dict[str, Any]]] = {}

        def plan(person: Person) -> tuple[Person, list[list[dict[str, Any]]], dict[str, Any]]:
            return plans.setdefault(person.key, (person, [[], []], {}))

        def pick(person: Person) -> str:
            return rng.choice(fields_for(person.entity))

        def edit_marketo(person: Person, name: str, second_pass: bool = False) -> None:
            value = self._value(name, number)
            plan(person)[1][1 if second_pass else 0].append({"id": person.marketo_id, name: value})
            self.oracle.edit(MARKETO, person.key, name, value)

        def edit_dynamics(person: Person, name: str) -> None:
            value = self._value(name, number)
            plan(person)[2][str(column(person.entity, name))] = value
            self.oracle.edit(DYNAMICS, person.key, name, value)

        for person in people:
            if rng.random() < cfg.edit_share:
                name = pick(person)
                edit_marketo(person, name)
                if rng.random() < 0.2:
                    edit_marketo(person, name, second_pass=True)
            if rng.random() < cfg.edit_share:
                edit_dynamics(person, pick(person))
            if rng.random() < cfg.collision_share:
                name = pick(person)
                edit_marketo(person, name, second_pass=True)
                edit_dynamics(person, name)
                self.tally.collisions_made += 1
        live, held = Edits(), Edits()
        for person, passes, changes in plans.values():
            marketo_fields = {k for items in passes for item in items for k in item if k != "id"}
            both = any(column(person.entity, name) in changes for name in marketo_fields)
            target = held if both else live
            for i, items in enumerate(passes):
                target.marketo[i] += items
            if changes:
                target.dynamics.append((person, changes))
        return live, held

    def send_edits(self, edits: Edits) -> None:
        for items in edits.marketo:
            if items:
                self.marketo.bulk(items)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda pe: self.dataverse.update(_set(pe[0].entity), pe[0].dynamics_id, pe[1]),
                          edits.dynamics))
        self.tally.edits[MARKETO] += sum(len(i) for i in edits.marketo)
        self.tally.edits[DYNAMICS] += sum(len(changes) for _, changes in edits.dynamics)

    def wait_events(self) -> None:
        """Until no event is left anywhere (see chaos.events)."""
        assert self.stack is not None and self.azurite is not None
        connection = self.azurite.connection_string
        events.wait_idle(lambda: events.idle(self.marketo, self.dataverse, connection),
                         lambda: self._run_poll(POLL_DATAVERSE) and None)

    # -- real-time webhook ------------------------------------------------------------------
    def start_realtime(self, number: int) -> list[threading.Thread]:
        """New Marketo people, each sent to the webhook (twice at once for some, as retries do)."""
        self._realtime_new: list[tuple[Person, dict[str, Any]]] = []
        threads = []
        for i in range(self.cfg.realtime_per_round):
            key = f"r{number:02d}x{i:02d}"
            person = Person(key, f"{key}.{self.cfg.seed}@{DOMAIN}", "lead", dynamics_id="")
            values = {"firstName": f"RF{key}", "lastName": f"RL{key}", "company": f"RCo{key}", "title": f"RT{key}"}
            person.marketo_id = self.marketo.create_lead(email=person.email, **values)
            self._realtime_new.append((person, values))
            for _ in range(2 if i % 2 == 0 else 1):
                thread = threading.Thread(target=self._webhook, args=(person.marketo_id,), daemon=True)
                thread.start()
                threads.append(thread)
        return threads

    def _webhook(self, marketo_id: int) -> None:
        """Call like Marketo's webhook: once, 30 s timeout, no retry whatever the answer (a host
        killed mid-call must finish what it accepted by itself)."""
        assert self.app is not None
        url = self.app.url
        status = "down"
        if url:
            try:
                response = httpx.post(f"{url}/api/sync-person", json={"leadId": marketo_id},
                                      headers={"x-functions-key": DEV_FUNCTION_KEY}, timeout=30)
                status = str(response.status_code)
            except httpx.HTTPError:
                status = "connection error"
        with self.oracle_lock:
            self.tally.realtime[status] = self.tally.realtime.get(status, 0) + 1

    def finish_realtime(self, give_up_s: float = 400.0) -> None:
        """Run the Marketo timer (which finishes accepted requests whose calls died) until no
        accepted request is left, or `give_up_s` passes (what is left is then counted)."""
        pending = self.storage.queue(PENDING_QUEUE)
        deadline = time.monotonic() + give_up_s
        while pending.get_queue_properties().approximate_message_count and time.monotonic() < deadline:
            self._run_poll(POLL_MARKETO)
            self.drain()
            time.sleep(2.0)

    oracle_lock = threading.Lock()

    def accepted_webhook_people(self) -> set[int]:
        """Marketo ids whose `sync-person` request the app kept, by its log (`accepted`, or
        already linked, created or finished). A line the kill cut off only makes a person look
        unaccepted when it also has no lead, i.e. the app would have had to lose it too."""
        assert self.app is not None
        text = self.app.log_path.read_text(encoding="utf-8", errors="replace")
        return {int(m) for m in ACCEPTED.findall(text)}

    def collect_realtime(self) -> None:
        accepted = self.accepted_webhook_people()
        for person, values in self._realtime_new:
            found = self.dataverse.find("leads", emailaddress1=person.email)
            who = f"{person.key} (Marketo {person.marketo_id})"
            if not found and person.marketo_id not in accepted:
                self.log(f"real-time person {who}: the app accepted none of its calls (each died with the "
                         "host first), so nothing was left to finish")
                self.tally.realtime_unaccepted.append(who)
                continue
            if not found:
                self.log(f"real-time person {who} was accepted and has no Dynamics lead")
                self.tally.realtime_missing.append(who)
                continue
            person.dynamics_id = str(found[0]["leadid"]).lower()
            self.oracle.add(person, values)
            self.tally.realtime_people += 1

    # -- bad and odd messages -------------------------------------------------------------
    def inject_messages(self, number: int) -> None:
        for i in range(self.cfg.bad_messages_per_round):
            marker = f"chaos-bad-{number}-{i}-{uuid.uuid4().hex[:8]}"
            queue = FROM_MARKETO if (number + i) % 2 else FROM_DYNAMICS
            body = (f"not json {marker}" if (number + i) % 2 else
                    f'{{"v": 99, "source": "marketo", "kind": "changed", "ids": [1], "marker": "{marker}"}}')
            self.storage.queue(queue).send_message(body)
            self.tally.bad_messages.append(marker)
        for _ in range(self.cfg.unknown_messages_per_round):
            self.storage.queue(FROM_MARKETO).send_message(
                '{"v":1,"source":"marketo","kind":"changed","ids":[987654321],"reason":"chaos-unknown"}')
            self.storage.queue(FROM_DYNAMICS).send_message(
                '{"v":1,"source":"dynamics","kind":"changed","entity":"lead",'
                f'"ids":["{uuid.uuid4()}"],"reason":"chaos-unknown"}}')
            self.tally.unknown_messages += 2

    # -- syncing ----------------------------------------------------------------------------
    def chaotic_sync(self, *, kill: bool, azurite: bool) -> None:
        """Sync until drained while faults fire; then once more with the faults gone."""
        stop = threading.Event()
        actions = [threading.Thread(target=self.faults.feed, args=(self.faults.plan_round(), stop),
                                    daemon=True)]
        if kill:
            actions.append(threading.Thread(target=self._kill_later, args=(self.rng.uniform(0.5, 5.0),
                                                                           self.rng.uniform(0.2, 2.0)), daemon=True))
        if azurite:
            actions.append(threading.Thread(target=self._restart_azurite_later, args=(self.rng.uniform(0.5, 6.0),),
                                            daemon=True))
        revoke_at = self.rng.uniform(0.2, 4.0)
        actions.append(threading.Thread(target=self._later, args=(revoke_at, self.faults.revoke_tokens), daemon=True))
        for thread in actions:
            thread.start()
        self.settle()
        stop.set()  # faults not armed by now are not armed at all
        for thread in actions:
            thread.join()
        self.faults.end_round()
        self.settle()

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        time.sleep(delay)
        action()

    def _kill_later(self, delay: float, down: float) -> None:
        assert self.app is not None
        time.sleep(delay)
        self.app.kill()
        time.sleep(down)
        self.app.start()

    def _restart_azurite_later(self, delay: float) -> None:
        assert self.azurite is not None
        time.sleep(delay)
        self.azurite.restart()
        self.tally.azurite_restarts += 1

    def settle(self, max_cycles: int = 60) -> None:
        """Poll both feeds and drain the queues until a full cycle finds nothing new."""
        assert self.app is not None
        for _ in range(max_cycles):
            generation = self.app.generation
            mark = self.app.poll_messages_seen()
            ok = self._run_poll(POLL_DATAVERSE) and self._run_poll(POLL_MARKETO)
            self.drain()
            self.tally.sync_cycles += 1
            if ok and self.app.poll_messages_since(mark) == 0 and generation == self.app.generation \
                    and self.app.alive:
                return
        raise RuntimeError(f"the sync did not settle in {max_cycles} cycles")

    def _run_poll(self, name: str) -> bool:
        assert self.app is not None
        for _ in range(20):
            try:
                if self.app.run_timer(name):
                    return True
            except HostDied:
                pass
            time.sleep(0.5)
        return False

    def drain(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 3:
            if time.monotonic() > deadline:
                raise RuntimeError(f"work queues did not drain in {timeout} s")
            depth = self.depths.work()
            quiet = quiet + 1 if depth == 0 else 0
            time.sleep(0.2)

    # -- reading both sides ------------------------------------------------------------------
    def _marketo_ids_by_email(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for lead in self.marketo.all_leads():
            out.setdefault(str(lead.get("email") or "").lower(), []).append(int(lead["id"]))
        return out

    def snapshot(self) -> tuple[dict[int, dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """(Marketo people by id, Dynamics records by id, every Dynamics record with its entity)."""
        marketo = {int(p["id"]): p for p in self.marketo.all_leads()}
        dynamics: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        for entity in ("lead", "contact"):
            for row in self.dataverse.find(_set(entity)):
                rid = str(row[f"{entity}id"]).lower()
                dynamics[rid] = row
                rows.append({"entity": entity, **row})
        return marketo, dynamics, rows

    def compare(self) -> list[Any]:
        marketo, dynamics, _ = self.snapshot()
        return self.oracle.compare(marketo, dynamics)


@dataclass
class Edits:
    """Edits to make: Marketo in two passes (bulk each), Dynamics one PATCH per record."""

    marketo: list[list[dict[str, Any]]] = field(default_factory=lambda: [[], []])
    dynamics: list[tuple[Person, dict[str, Any]]] = field(default_factory=list)


def _set(entity: str) -> str:
    return "leads" if entity == "lead" else "contacts"
