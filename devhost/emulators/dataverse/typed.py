"""Dates, numbers, money, multi-select choices and the tables lookups point at.

Sources (learn.microsoft.com, Dataverse "Behavior and format of the date and time column",
"Multi-select choices", "Currency (Money) columns", Web API "Associate table rows on create"):
- DateTime columns: `DateTimeBehavior` UserLocal (stored in UTC, a value with an offset is
  converted, answered with `Z`), DateOnly (an `Edm.Date` "2024-05-01", no time or zone) or
  TimeZoneIndependent (the wall-clock time as sent, no conversion); `Format` DateOnly or
  DateAndTime. Dates before 1753-01-01 are refused [code unverified].
- Decimal (Precision 0-10), Double (0-5) and Money (0-4): a JSON number within
  MinValue..MaxValue [out of range: code unverified], rounded to the column's precision.
  A money value on a row without a currency takes the organization's base currency.
- Multi-select choices: AttributeType `Virtual`, AttributeTypeName `MultiSelectPicklistType`;
  the Web API value is the option numbers as text, "1,3"; an unknown option is refused like a
  choice's (0x8004431a); formatted value: the labels joined by "; ".
- A lookup bound to a row that does not exist: 404 0x80040217 `<table> With Id = <id> Does Not Exist`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from .metadata import Attr, EntityDef

if TYPE_CHECKING:
    from .store import Store

NUMBER_TYPES = {"Decimal", "Double", "Money"}
MIN_DATE = date(1753, 1, 1)
BASE_CURRENCY = "c0ffee00-0000-4000-8000-000000000840"  # US Dollar, the emulator org's base currency
EURO = "c0ffee00-0000-4000-8000-000000000978"
INTERESTS = {1: "Software", 2: "Hardware", 3: "Services", 4: "Training"}


def _s(name: str, length: int) -> Attr:
    return Attr(name, "String", max_length=length, format_name="Text")


def _key(name: str) -> Attr:
    return Attr(name, "Uniqueidentifier", required_level="SystemRequired", valid_for_update=False)


def _system() -> list[Attr]:
    ro = {"valid_for_create": False, "valid_for_update": False}
    return [Attr("createdon", "DateTime", **ro), Attr("modifiedon", "DateTime", **ro),  # type: ignore[arg-type]
            Attr("versionnumber", "BigInt", **ro)]  # type: ignore[arg-type]


def build_related() -> dict[str, EntityDef]:
    """The tables LeadSync's lookups point at: account, campaign and transactioncurrency."""
    tables = {
        "account": ("accounts", [_key("accountid"), Attr("name", "String", "ApplicationRequired", 160, "Text")]),
        "campaign": ("campaigns", [_key("campaignid"), Attr("name", "String", "ApplicationRequired", 128, "Text")]),
        "transactioncurrency": ("transactioncurrencies", [
            _key("transactioncurrencyid"), Attr("isocurrencycode", "String", "SystemRequired", 5, "Text"),
            _s("currencyname", 100), _s("currencysymbol", 10), Attr("currencyprecision", "Integer")]),
    }
    return {name: EntityDef(name, set_name, f"{name}id", {a.logical_name: a for a in [*attrs, *_system()]},
                            change_tracking=False)
            for name, (set_name, attrs) in tables.items()}


def typed_columns(entity: str) -> list[Attr]:
    """Lead and contact columns of the richer types (OOB names where the product has one)."""
    currency = Attr("transactioncurrencyid", "Lookup", binds={"transactioncurrencyid": "transactioncurrencies"})
    if entity == "contact":
        return [currency, Attr("birthdate", "DateTime", date_behavior="DateOnly", date_format="DateOnly")]
    return [
        currency,
        Attr("parentaccountid", "Lookup", binds={"parentaccountid": "accounts"}),
        Attr("campaignid", "Lookup", binds={"campaignid": "campaigns"}),
        Attr("estimatedclosedate", "DateTime", date_behavior="DateOnly", date_format="DateOnly"),
        Attr("new_lastvisit", "DateTime", date_behavior="UserLocal", date_format="DateAndTime"),
        Attr("new_score", "Decimal", precision=2, min_value=-100000000000.0, max_value=100000000000.0),
        Attr("budgetamount", "Money", precision=2, min_value=0.0, max_value=922337203685477.0),
        Attr("new_interests", "MultiSelectPicklist", options=dict(INTERESTS)),
    ]


def seed(store: Store) -> None:
    """Every org has its base currency; the emulator's also has the euro."""
    for rid, code, name, symbol in ((BASE_CURRENCY, "USD", "US Dollar", "$"), (EURO, "EUR", "Euro", "€")):
        store.create("transactioncurrencies", {"transactioncurrencyid": rid, "isocurrencycode": code,
                                               "currencyname": name, "currencysymbol": symbol,
                                               "currencyprecision": 2}, validate=False)


def attribute_extras(attr: Attr, expand_options: bool) -> dict[str, Any]:
    """The typed metadata properties of one attribute (spec §9 casts)."""
    t = attr.attribute_type
    if t == "DateTime":
        return {"Format": attr.date_format or "DateAndTime",
                "DateTimeBehavior": {"Value": attr.date_behavior or "UserLocal", "CanBeChanged": False,
                                     "ManagedPropertyLogicalName": "canchangedatetimebehavior"}}
    if t in NUMBER_TYPES:
        extras: dict[str, Any] = {"Precision": attr.precision, "MinValue": attr.min_value,
                                  "MaxValue": attr.max_value}
        if t == "Money":
            extras["PrecisionSource"] = 0  # the column's own Precision
        return extras
    if t == "MultiSelectPicklist" and expand_options:
        return {"OptionSet": {"Options": [{"Value": v, "Label": {"UserLocalizedLabel": {"Label": text,
                                                                                        "LanguageCode": 1033}}}
                                          for v, text in (attr.options or {}).items()]},
                "GlobalOptionSet": None}
    return {}


class TypedValueError(Exception):
    """A value the column refuses: (status, code, message, payload?) for the store to raise."""

    def __init__(self, status: int, code: str, message: str, payload: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.payload = status, code, message, payload


def check_value(entity: EntityDef, attr: Attr, value: Any) -> Any:
    """The stored form of a Web API value for a typed column, or TypedValueError."""
    t = attr.attribute_type
    if t == "DateTime":
        return _datetime(entity, attr, value)
    if t in NUMBER_TYPES:
        return _number(entity, attr, value)
    if t == "MultiSelectPicklist":
        return _multi(entity, attr, value)
    return value


def _convert_error(value: Any, edm: str) -> TypedValueError:
    return TypedValueError(400, "0x80048d19", f"Cannot convert the literal '{value}' to the expected type '{edm}'.",
                           payload=True)


def _datetime(entity: EntityDef, attr: Attr, value: Any) -> str:
    if attr.date_behavior == "DateOnly":
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise _convert_error(value, "Edm.Date")
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise _convert_error(value, "Edm.Date") from None
        _range(entity, attr, day)
        return day.isoformat()
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) and "T" in value else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:  # Edm.DateTimeOffset needs a zone
        raise _convert_error(value, "Edm.DateTimeOffset")
    if attr.date_behavior != "TimeZoneIndependent":
        when = when.astimezone(UTC)  # UserLocal: stored in UTC
    _range(entity, attr, when.date())
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _range(entity: EntityDef, attr: Attr, day: date) -> None:
    if day < MIN_DATE:
        raise TypedValueError(400, "0x80040203", f"A validation error occurred.  The value of '{attr.logical_name}' "
                              f"on record of type '{entity.logical_name}' is outside the valid range. Dates must "
                              "be between 1/1/1753 and 12/31/9999.")


def _number(entity: EntityDef, attr: Attr, value: Any) -> float:
    edm = {"Decimal": "Edm.Decimal", "Double": "Edm.Double", "Money": "Edm.Decimal"}[attr.attribute_type]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _convert_error(value, edm)
    low, high = attr.min_value, attr.max_value
    if (low is not None and value < low) or (high is not None and value > high):
        raise TypedValueError(400, "0x80044330", f"A validation error occurred.  The value {value} of "
                              f"'{attr.logical_name}' on record of type '{entity.logical_name}' is outside the valid "
                              f"range. Accepted Values: {low} to {high}")
    return round(float(value), attr.precision if attr.precision is not None else 10) + 0.0


def _multi(entity: EntityDef, attr: Attr, value: Any) -> str:
    if not isinstance(value, str):
        raise _convert_error(value, "Edm.String")
    parts = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in parts if not re.fullmatch(r"-?\d+", p) or int(p) not in (attr.options or {})]
    if bad:
        raise TypedValueError(400, "0x8004431a", f"A validation error occurred.  The value {bad[0]} of "
                              f"'{attr.logical_name}' on record of type '{entity.logical_name}' is outside the valid "
                              f"range. Accepted Values: {','.join(str(v) for v in attr.options or {})}")
    return ",".join(str(n) for n in sorted(dict.fromkeys(int(p) for p in parts)))


def check_target(store: Store, set_name: str, rid: str) -> None:
    """A lookup may only point at a row that exists."""
    from .store import not_found

    if set_name in store.rows and rid not in store.rows[set_name]:
        raise not_found(store.by_set[set_name], rid)


def default_currency(entity: EntityDef, row: dict[str, Any]) -> None:
    """A row holding an amount without a currency gets the base currency, as Dataverse sets it."""
    if "_transactioncurrencyid_value" not in row or row.get("_transactioncurrencyid_value"):
        return
    if any(a.attribute_type == "Money" and row.get(a.logical_name) is not None for a in entity.attrs.values()):
        row["_transactioncurrencyid_value"] = BASE_CURRENCY


def formatted(store: Store, attr: Attr, value: Any, row: dict[str, Any]) -> str | None:
    """The formatted value of a typed column (en-US), or None when it has none here."""
    t = attr.attribute_type
    if t == "Money":
        currency = store.rows.get("transactioncurrencies", {}).get(str(row.get("_transactioncurrencyid_value")))
        symbol = (currency or {}).get("currencysymbol") or "$"
        return f"{symbol}{float(value):,.{attr.precision if attr.precision is not None else 2}f}"
    if t == "DateTime" and attr.date_behavior == "DateOnly":
        day = date.fromisoformat(str(value))
        return f"{day.month}/{day.day}/{day.year}"
    if t == "MultiSelectPicklist":
        return "; ".join((attr.options or {}).get(int(p), p) for p in str(value).split(","))
    if t in ("Decimal", "Double"):
        return f"{float(value):,.{attr.precision or 0}f}"
    return None
