"""Dynamics' rules for a record, checked before we send it: required, length, format, options.

`EntityRules` is built from the entity metadata Dataverse serves
(`EntityDefinitions(LogicalName=…)/Attributes`); `validate` is pure. Messages name the
field and the rule; text values never appear in them, but an option, true/false or number
check quotes the offending value (shortened), so whatever shows a message to others
redacts quoted values. A record that fails is never sent: the caller logs the problems to
the person's activity logs and parks it.

Required levels: `SystemRequired` is enforced by the platform; `ApplicationRequired`
("business required") is enforced by Dynamics forms, not the Web API. A sync that
creates records without business-required values produces records sales cannot save
in the UI, so we enforce both (configurable per call).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.errors import Problem, ValidationRule
from shared.rules import typevalidation
from shared.rules.typevalidation import Limits

# Columns the platform fills itself on create; required in metadata but never ours to send.
SERVER_DEFAULTED = frozenset({
    "ownerid", "owningbusinessunit", "owninguser", "owningteam", "statecode", "statuscode",
    "createdon", "modifiedon", "createdby", "modifiedby", "versionnumber", "leadid", "contactid",
    "transactioncurrencyid", "exchangerate", "fullname", "yomifullname",
})
STRING_TYPES = frozenset({"String", "Memo"})
REQUIRED_LEVELS = frozenset({"SystemRequired", "ApplicationRequired"})
ENCODING = ValidationRule.ENCODING  # the Problem rule of a value that cannot be encoded at all

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\\\]]+@" + _LABEL + r"(?:\." + _LABEL + r")+$")
_PHONE = re.compile(r"^[0-9+()\-./ xXextEXT#*]{1,}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A lone UTF-16 surrogate can arrive in JSON ("\\ud800") but no UTF-8 or UTF-16 encoder will
# write it, so a record carrying one can never be sent: it fails alone, before any encoding.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class ColumnRule:
    name: str
    attribute_type: str = "String"
    required: str = "None"
    max_length: int | None = None
    format: str | None = None  # "Email" | "Phone" | "Url" | "Text" | "TextArea" | …
    options: frozenset[int] | None = None
    label: str | None = None  # the Marketo field it is mapped from, for messages
    limits: Limits = Limits()  # dates, numbers, lookups: what their metadata allows


@dataclass(frozen=True)
class EntityRules:
    entity: str
    columns: Mapping[str, ColumnRule] = field(default_factory=dict)

    def required_columns(self, *, business_required: bool) -> Iterable[ColumnRule]:
        levels = REQUIRED_LEVELS if business_required else frozenset({"SystemRequired"})
        for rule in self.columns.values():
            if rule.required in levels and rule.name not in SERVER_DEFAULTED:
                yield rule


def _name(entity: str, rule: ColumnRule) -> str:
    return f"{rule.label} ({entity}.{rule.name})" if rule.label else f"{entity}.{rule.name}"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def validate(
    rules: EntityRules,
    record: Mapping[str, Any],
    *,
    creating: bool,
    business_required: bool = True,
) -> list[Problem]:
    """Every problem that would make Dynamics reject (or sales unable to save) `record`.

    `record` holds Dataverse column names and values; on update, only the columns being
    written. An empty list means it may be sent.
    """
    problems: list[Problem] = []
    entity = rules.entity
    for rule in rules.required_columns(business_required=business_required):
        present = rule.name in record
        if (creating and not present) or (present and _blank(record[rule.name])):
            problems.append(Problem(rule.name, ValidationRule.REQUIRED,
                                    f"{_name(entity, rule)} is required by Dynamics but is blank"))
    for column, value in record.items():
        column_rule = rules.columns.get(column)
        if column_rule is None and column.endswith("@odata.bind"):
            problems.extend(_check_bind(rules, column.removesuffix("@odata.bind"), value))
            continue
        if column_rule is None:
            problems.append(Problem(column, ValidationRule.UNKNOWN,
                                    f"{entity}.{column} is not a column Dynamics knows"))
            continue
        if _blank(value):
            continue
        problems.extend(_check_value(entity, column_rule, value))
    return problems


def _check_value(entity: str, rule: ColumnRule, value: Any) -> list[Problem]:
    name = _name(entity, rule)
    kind = rule.attribute_type
    if kind in STRING_TYPES:
        if not isinstance(value, str):
            return [Problem(rule.name, ValidationRule.TYPE, f"{name} must be text, got {type(value).__name__}")]
        if _CONTROL.search(value):
            return [Problem(rule.name, ValidationRule.FORMAT, f"{name} contains control characters")]
        if _SURROGATE.search(value):
            return [Problem(rule.name, ENCODING, _unencodable_message(name))]
        # Dataverse counts MaxLength in UTF-16 code units (.NET string length), not code points.
        length = len(value.encode("utf-16-le")) // 2
        if rule.max_length is not None and length > rule.max_length:
            return [Problem(rule.name, ValidationRule.MAX_LENGTH,
                            f"{name} is too long: {length} characters, Dynamics allows {rule.max_length}")]
        fmt = (rule.format or "").lower()
        if fmt == "email" and not _EMAIL.fullmatch(value):
            return [Problem(rule.name, ValidationRule.FORMAT, f"{name} is not a valid email address")]
        if fmt == "phone" and not _PHONE.fullmatch(value):
            return [Problem(rule.name, ValidationRule.FORMAT, f"{name} is not a valid phone number")]
        if fmt == "url" and not _URL.fullmatch(value):
            return [Problem(rule.name, ValidationRule.FORMAT, f"{name} is not a valid URL")]
        return []
    if kind in ("Picklist", "State", "Status"):
        if isinstance(value, bool) or not isinstance(value, int) or (rule.options is not None
                                                                     and value not in rule.options):
            allowed = sorted(rule.options) if rule.options is not None else "an option value"
            return [Problem(rule.name, ValidationRule.OPTION,
                            f"{name} has no option {_short(value)} (allowed: {allowed})")]
        return []
    if kind == "Boolean":
        if not isinstance(value, bool):
            return [Problem(rule.name, ValidationRule.TYPE, f"{name} must be true or false, got {_short(value)}")]
        return []
    if kind in ("Integer", "BigInt"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [Problem(rule.name, ValidationRule.TYPE, f"{name} must be a whole number, got {_short(value)}")]
        return []
    return typevalidation.check(name, rule.name, kind, rule.limits, rule.options, value)


def _check_bind(rules: EntityRules, navigation: str, value: Any) -> list[Problem]:
    """A lookup written by navigation property: `parentaccountid`, or `parentcustomerid_account`."""
    column = navigation if navigation in rules.columns else navigation.rsplit("_", 1)[0]
    rule = rules.columns.get(column)
    if rule is None or rule.attribute_type not in typevalidation.LOOKUP_TYPES:
        return [Problem(navigation, ValidationRule.UNKNOWN,
                        f"{rules.entity}.{navigation} is not a lookup Dynamics knows")]
    return typevalidation.check_bind(_name(rules.entity, rule), column, rule.limits.targets, value)


def unencodable(values: Mapping[str, Any]) -> list[Problem]:
    """A problem for each text value that no encoder can write (a lone UTF-16 surrogate).

    For values on their way anywhere (a lookup, a write to Marketo): one bad value fails
    its own record with this reason instead of raising for the whole request or batch.
    """
    return [Problem(name, ENCODING, _unencodable_message(name)) for name, value in values.items()
            if isinstance(value, str) and _SURROGATE.search(value)]


def _unencodable_message(name: str) -> str:
    return f"{name} contains an invalid character (a lone UTF-16 surrogate) that cannot be sent"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def labelled(rules: EntityRules, labels: Mapping[str, str]) -> EntityRules:
    """The same rules with Marketo field names attached, so messages speak both languages."""
    cols = {name: replace(r, label=labels.get(name, r.label)) for name, r in rules.columns.items()}
    return EntityRules(rules.entity, cols)
