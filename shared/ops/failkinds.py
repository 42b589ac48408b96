"""What kind of failure an activity entry records, which side must act, and the fix to suggest.

Pure: no I/O. `leadsync failures`, `leadsync retry` and the health page all classify with
`classify`, so an operator sees one vocabulary everywhere.

Adding a kind: one `FailureKind` member and its line in `FIXES` (a test checks that every
kind has a fix); a kind told by the service's error code also gets its line in `CODE_KINDS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.errors import ValidationRule


class FailureKind(StrEnum):
    """A record-level failure, as the operator sees it; stored nowhere (derived on reading)."""

    BLANK_EMAIL = "blank_email"
    REQUIRED_FIELD = "required_field"
    TOO_LONG = "too_long"
    BAD_FORMAT = "bad_format"
    BAD_OPTION = "bad_option"
    BAD_TYPE = "bad_type"
    UNKNOWN_FIELD = "unknown_field"
    UNENCODABLE = "unencodable"
    LOOKALIKE_EMAIL = "lookalike_email"
    MARKETO_REFUSED = "marketo_refused"
    DATAVERSE_REFUSED = "dataverse_refused"
    DATAVERSE_PRIVILEGE = "dataverse_privilege"
    QUOTA_PAUSED = "quota_paused"
    LEAD_OWNER = "lead_owner"  # the configured owner of a new lead names no enabled user or team
    DATAVERSE_DUPLICATE = "dataverse_duplicate"  # a duplicate detection rule refused the create
    DATAVERSE_PLUGIN = "dataverse_plugin"  # a plug-in refused the write
    LEAD_DISQUALIFIED = "lead_disqualified"  # a state, not a fault: sales disqualified the linked lead
    LEAD_CANCELLED = "lead_cancelled"  # likewise: the linked lead was cancelled
    LINK_CONFLICT = "link_conflict"  # a lead qualified into a contact another person is linked to
    PARKED = "parked"  # a parked person whose failure entry is no longer in the log
    POISON_MESSAGE = "poison_message"


class Side(StrEnum):
    """Where the fix is made: the service holding the bad value, or the one that refused it."""

    MARKETO = "marketo"
    DYNAMICS = "dynamics"
    QUEUE = "queue"  # a work message, not a record


_WHERE = {Side.MARKETO: "Marketo", Side.DYNAMICS: "the Dynamics record", Side.QUEUE: "the message"}

FIXES: Mapping[FailureKind, str] = {
    FailureKind.BLANK_EMAIL: "fill in the email in {where}: a person without one is never linked",
    FailureKind.REQUIRED_FIELD: "fill in the required field in {where}",
    FailureKind.TOO_LONG: "shorten the value in {where}, or lengthen the Dynamics column",
    FailureKind.BAD_FORMAT: "correct the value's format in {where}",
    FailureKind.BAD_OPTION: "pick one of the column's options in {where}, or add the option in Dynamics",
    FailureKind.BAD_TYPE: "correct the value in {where}, or the field's type in the field map",
    FailureKind.UNKNOWN_FIELD: "create the column in Dynamics, or remove the field from the field map",
    FailureKind.UNENCODABLE: "retype the value in {where}: it holds a character no service can store",
    FailureKind.LOOKALIKE_EMAIL: "correct the email in {where}: the other side has only a look-alike address",
    FailureKind.MARKETO_REFUSED: "read Marketo's reason; fix the person in Marketo or the API user's permissions",
    FailureKind.DATAVERSE_REFUSED: "read Dynamics' reason; fix the record or the column's rules in Dynamics",
    FailureKind.DATAVERSE_PRIVILEGE: "grant the missing privilege (e.g. prvWriteLead) to the application user's "
                                     "security role in Dynamics",
    FailureKind.QUOTA_PAUSED: "nothing: LeadSync finishes it after Marketo's daily reset (midnight US Central); "
                              "raise LEADSYNC_DAILY_CAP_PCT if LeadSync's own cap stopped it",
    FailureKind.LEAD_OWNER: "set the owner field in {where} to an enabled Dynamics user's email, or "
                            "LEADSYNC_LEAD_OWNER to a user or team that exists",
    FailureKind.DATAVERSE_DUPLICATE: "merge or tell the two apart in Dynamics (its duplicate detection rule "
                                     "matched), or link the person to the existing record",
    FailureKind.DATAVERSE_PLUGIN: "read the plug-in's message: fix what it asks for in {where}, or ask the "
                                  "plug-in's owner",
    FailureKind.LEAD_DISQUALIFIED: "nothing, unless sales reopens the lead: it syncs again then",
    FailureKind.LEAD_CANCELLED: "nothing, unless sales reopens the lead: it syncs again then",
    FailureKind.LINK_CONFLICT: "merge the two Marketo people: the contact can be linked to one of them only",
    FailureKind.PARKED: "run `leadsync explain` on the person; retry once the cause is fixed",
    FailureKind.POISON_MESSAGE: "read the reason: a readable message goes back with "
                                "`leadsync retry --kind poison_message`; an unreadable one never will",
}

CODE_KINDS: Mapping[str, FailureKind] = {  # the service's code on a refused record -> its kind
    "0x80040220": FailureKind.DATAVERSE_PRIVILEGE,
    "0x80040333": FailureKind.DATAVERSE_DUPLICATE,
    "0x80040265": FailureKind.DATAVERSE_PLUGIN,
}
# Activity kinds that are states of a linked lead, not problems with values (shared.sync.closing).
STATE_KINDS: Mapping[str, FailureKind] = {
    "disqualified": FailureKind.LEAD_DISQUALIFIED,
    "cancelled": FailureKind.LEAD_CANCELLED,
    "link_conflict": FailureKind.LINK_CONFLICT,
}

_RULE_KINDS: Mapping[str, FailureKind] = {
    ValidationRule.REQUIRED: FailureKind.REQUIRED_FIELD,
    ValidationRule.MAX_LENGTH: FailureKind.TOO_LONG,
    ValidationRule.FORMAT: FailureKind.BAD_FORMAT,
    ValidationRule.OPTION: FailureKind.BAD_OPTION,
    ValidationRule.TYPE: FailureKind.BAD_TYPE,
    ValidationRule.UNKNOWN: FailureKind.UNKNOWN_FIELD,
    ValidationRule.ENCODING: FailureKind.UNENCODABLE,
    ValidationRule.NEAR_MISS: FailureKind.LOOKALIKE_EMAIL,
    ValidationRule.OWNER: FailureKind.LEAD_OWNER,
}


def fix(kind: FailureKind, side: Side) -> str:
    """The suggested fix for `kind`, naming the side where it is made."""
    return FIXES[kind].format(where=_WHERE[side])


@dataclass(frozen=True)
class Verdict:
    kind: FailureKind
    side: Side
    fields: tuple[str, ...]

    @property
    def fix(self) -> str:
        return fix(self.kind, self.side)


def classify(person: str, activity_kind: str, direction: str, details: Mapping[str, Any]) -> Verdict:
    """The failure kind of one activity entry (`details` as the log stores it), its side and fields.

    The first problem decides the kind; a refusal is classified by the service's code first.
    """
    problems = [p for p in details.get("problems") or [] if isinstance(p, Mapping)]
    fields = tuple(dict.fromkeys(str(p["field"]) for p in problems if p.get("field")))
    source = _source_side(person, direction)
    if activity_kind == "paused":
        return Verdict(FailureKind.QUOTA_PAUSED, Side.MARKETO, fields)
    if activity_kind in STATE_KINDS:
        return Verdict(STATE_KINDS[activity_kind], Side.DYNAMICS, fields)
    if not problems:
        return Verdict(FailureKind.PARKED, source, fields)
    first = problems[0]
    rule, code = str(first.get("rule") or ""), str(first.get("code") or "")
    target = Side.MARKETO if source is Side.DYNAMICS else Side.DYNAMICS
    if rule == ValidationRule.REJECTED:
        by_code = CODE_KINDS.get(code.lower())
        if by_code is not None:
            return Verdict(by_code, target, fields)
        return Verdict(FailureKind.MARKETO_REFUSED if target is Side.MARKETO else FailureKind.DATAVERSE_REFUSED,
                       target, fields)
    kind = _RULE_KINDS.get(rule, FailureKind.PARKED)
    if kind is FailureKind.REQUIRED_FIELD and "email" in str(first.get("field") or "").lower():
        kind = FailureKind.BLANK_EMAIL
    return Verdict(kind, Side.DYNAMICS if kind is FailureKind.UNKNOWN_FIELD else source, fields)


def _source_side(person: str, direction: str) -> Side:
    """The side the values came from: the write's direction, else who the person key names."""
    if direction == "marketo->dynamics":
        return Side.MARKETO
    if direction == "dynamics->marketo":
        return Side.DYNAMICS
    return Side.DYNAMICS if person.startswith(("lead:", "contact:")) else Side.MARKETO


# -- filters ------------------------------------------------------------------------------
_AGO = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `1d`, `1w` before `now`, or an ISO 8601 date or time (UTC when it names no zone)."""
    raw = text.strip().lower()
    m = _AGO.fullmatch(raw)
    if m:
        return now - timedelta(**{_UNITS[m[2]]: int(m[1])})
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r} is neither a duration (30m, 2h, 1d, 1w) nor an ISO 8601 time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_kinds(texts: Iterable[str]) -> frozenset[FailureKind]:
    """Kinds by name (`blank_email`, or `blank-email`); an unknown one names every known kind."""
    out: set[FailureKind] = set()
    for text in texts:
        try:
            out.add(FailureKind(text.strip().lower().replace("-", "_")))
        except ValueError:
            raise ValueError(f"--kind {text!r} is not one of: {', '.join(k.value for k in FailureKind)}") from None
    return frozenset(out)


def parse_sides(texts: Iterable[str]) -> frozenset[Side]:
    out: set[Side] = set()
    for text in texts:
        try:
            out.add(Side(text.strip().lower()))
        except ValueError:
            raise ValueError(f"--side {text!r} is not one of: {', '.join(s.value for s in Side)}") from None
    return frozenset(out)


@dataclass(frozen=True)
class Filter:
    """Which failures to list or retry; an empty set matches everything."""

    since: datetime | None = None
    kinds: frozenset[FailureKind] = frozenset()
    sides: frozenset[Side] = frozenset()
    fields: frozenset[str] = frozenset()  # lower case; matches any field the failure names

    @classmethod
    def parse(cls, *, since: str | None, kinds: Iterable[str] = (), sides: Iterable[str] = (),
              fields: Iterable[str] = (), now: datetime) -> Filter:
        """From command-line text; ValueError names the option that is wrong."""
        return cls(parse_since(since, now) if since else None, parse_kinds(kinds), parse_sides(sides),
                   frozenset(f.strip().lower() for f in fields if f.strip()))

    @property
    def empty(self) -> bool:
        return self.since is None and not (self.kinds or self.sides or self.fields)

    def matches(self, kind: FailureKind, side: Side, fields: Iterable[str], at: datetime | None) -> bool:
        if self.since is not None and (at is None or at < self.since):
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.sides and side not in self.sides:
            return False
        return not self.fields or bool(self.fields & {f.lower() for f in fields})
