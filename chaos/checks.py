"""The campaign's verdicts, each a `Check` with a pass/fail, a figure and examples.

- lost updates      every synced field of every person, both sides, equals the oracle
- duplicates        no email held by two Marketo people or two Dynamics records, and
                    every person on both sides (webhook people included)
- rule violations   every collision in the activity log was won by the configured side,
                    and every collision the oracle expects is in the log
- poison messages   the poison queues hold exactly the malformed messages we sent, each
                    with its activity-log entry (person "poison")
- API limits        606/615/607 (Marketo) and 429 (Dataverse) only as many as injected
- merges            merges on both sides left 0 duplicates and 0 lost values (chaos.merges)
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos import merges as merge_checks
from chaos.campaign import Campaign
from chaos.infra import POISON_QUEUES
from chaos.oracle import DYNAMICS, MARKETO, blank, winner
from shared.state import activity
from shared.state.activity import ActivityLog


@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    examples: list[str] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)  # for chaos/results.json, by dotted name
    problems: int = 0  # how many things were wrong (examples holds the first few)


def run_checks(c: Campaign) -> list[Check]:
    marketo, dynamics, rows = c.snapshot()
    return [
        lost_updates(c, marketo, dynamics),
        duplicates(c, marketo, rows),
        rule_violations(c),
        poison(c),
        api_limits(c),
        merges(c, marketo, dynamics),
    ]


def lost_updates(c: Campaign, marketo: dict[int, dict[str, Any]], dynamics: dict[str, dict[str, Any]]) -> Check:
    mismatches = c.oracle.compare(marketo, dynamics)
    fields = sum(len(p.agreed) * 2 for p in c.oracle.people.values())
    return Check("lost updates", not mismatches, f"{len(mismatches)} of {fields} field values off",
                 [f"{m.person} {m.side}.{m.field}: expected {m.expected!r}, found {m.actual!r}"
                  for m in mismatches[:10]], problems=len(mismatches))


def duplicates(c: Campaign, marketo: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> Check:
    ours = {p.email.lower() for p in c.oracle.people.values()}
    in_marketo = Counter(str(p.get("email") or "").lower() for p in marketo.values())
    in_dynamics = Counter(str(r.get("emailaddress1") or "").lower() for r in rows)
    twice = [f"Marketo {e} x{n}" for e, n in in_marketo.items() if n > 1 and e]
    twice += [f"Dynamics {e} x{n}" for e, n in in_dynamics.items() if n > 1 and e]
    missing = [f"Marketo has no {e}" for e in ours if in_marketo[e] == 0]
    missing += [f"Dynamics has no {e}" for e in ours if in_dynamics[e] == 0]
    missing += [f"webhook person {who} never got its Dynamics lead" for who in c.tally.realtime_missing]
    problems = twice + missing
    return Check("duplicates", not problems,
                 f"{len(twice)} emails held twice, {len(missing)} missing; {len(ours)} people", problems[:10],
                 problems=len(problems))


def rule_violations(c: Campaign) -> Check:
    log = ActivityLog(c.storage)
    by_marketo_id = {p.marketo_id: p for p in [*c.oracle.people.values(), *c.oracle.retired.values()]
                     if p.marketo_id is not None}
    entries = list(log.since(c.tally.started_at, [activity.COLLISION]))
    problems: list[str] = []
    logged: set[tuple[str, str, str]] = set()
    for e in entries:
        person = by_marketo_id.get(int(e.person[1:])) if e.person.startswith("m") else None
        if person is None:
            problems.append(f"collision for unknown person {e.person}: {e.message}")
            continue
        d = e.details
        expected = winner(person.entity)
        if d.get("initial") and blank(d.get("marketo")) != blank(d.get("dynamics")):
            expected = DYNAMICS if blank(d.get("marketo")) else MARKETO
        if d.get("winner") != expected:
            problems.append(f"{person.key} {d.get('field')}: {d.get('winner')} won, {expected} should have")
        logged.add((person.key, str(d.get("field")), str(d.get("winner"))))
    unlogged = [x for x in c.oracle.collisions if (x.person, x.field, x.winner) not in logged]
    problems += [f"{x.person} {x.field} (round {x.round}): collision not in the activity log" for x in unlogged]
    return Check("rule violations", not problems,
                 f"{len(entries)} collision entries, {len(c.oracle.collisions)} expected, {len(problems)} wrong",
                 problems[:10], problems=len(problems))


def poison(c: Campaign) -> Check:
    bodies: list[str] = []
    ids: dict[str, str] = {}  # poison message id -> its body
    for name in POISON_QUEUES:
        queue = c.depths.client(name)
        for message in queue.peek_messages(max_messages=32):
            bodies.append(_decode(message.content))
            ids[message.id] = bodies[-1]
        depth = c.depths.depth(name) or 0
        if depth > 32:
            bodies += ["<more than 32 poison messages>"] * (depth - 32)
    markers = set(c.tally.bad_messages)
    unexpected = [b[:120] for b in bodies if not any(m in b for m in markers)]
    missing = [m for m in markers if not any(m in b for b in bodies)]
    # Entries mask the body's values (it may hold names), so they are matched by the poison copy's id.
    noted = {str(e.details.get("poison_message_id")) for e in ActivityLog(c.storage).for_person("poison", limit=1000)}
    logged_markers = {m for i, b in ids.items() if i in noted for m in markers if m in b}
    problems = [f"unexpected poison message: {b}" for b in unexpected]
    problems += [f"malformed message {m} not poisoned" for m in missing]
    problems += [f"malformed message {m} has no activity-log entry" for m in markers - logged_markers]
    return Check("poison messages", not problems,
                 f"{len(bodies)} poisoned, {len(markers)} sent malformed, {len(unexpected)} unexpected",
                 problems[:10])


def api_limits(c: Campaign) -> Check:
    m = c.marketo.stats()
    d = c.dataverse.stats()
    served_m = c.faults.marketo_served()
    problems = []
    figures = []
    for code in ("606", "615", "607"):
        seen = int(m["responses_by_code"].get(code, 0))
        own = seen - served_m.get(code, 0)
        figures.append(f"Marketo {code}: {seen} ({own} by the sync)")
        if own:
            problems.append(f"Marketo answered {code} {own} time(s) beyond the injected ones")
    seen_429 = int(d["responses_by_status"].get("429", 0))
    own_429 = seen_429 - c.faults.dataverse_served["429"]
    figures.append(f"Dataverse 429: {seen_429} ({own_429} by the sync)")
    if own_429:
        problems.append(f"Dataverse answered 429 {own_429} time(s) beyond the injected ones")
    return Check("API limits", not problems, "; ".join(figures), problems)


def merges(c: Campaign, marketo: dict[int, dict[str, Any]], dynamics: dict[str, dict[str, Any]]) -> Check:
    log = c.merger.log
    duplicates, lost = merge_checks.check(log, c.oracle, marketo, dynamics)
    made = log.made[DYNAMICS] + log.made[MARKETO]
    return Check("merges", made > 0 and not duplicates and not lost,
                 f"{log.made[DYNAMICS]} in Dynamics, {log.made[MARKETO]} in Marketo: {len(duplicates)} duplicates, "
                 f"{len(lost)} lost values", (duplicates + lost)[:10],
                 {"merges.dynamics": log.made[DYNAMICS], "merges.marketo": log.made[MARKETO],
                  "merges.duplicates": len(duplicates), "merges.lost": len(lost)})


def _decode(content: Any) -> str:
    text = content if isinstance(content, str) else bytes(content).decode("utf-8", "replace")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except ValueError:
        return text


def table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  figure", f"{'-' * width}  ------  ------"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {'PASS' if c.ok else 'FAIL':<6}  {c.figure}")
        lines += [f"{'':<{width}}          - {x}" for x in c.examples]
    return "\n".join(lines)

