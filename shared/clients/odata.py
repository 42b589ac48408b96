"""OData v4 pieces for the Dataverse client: the one place `$filter` values are built, key
segments, and `$batch` multipart encoding/decoding.

Every value that goes into a `$filter` or a key segment passes through `literal()`: strings are
single-quoted with `'` doubled (as OData requires of a `'` inside a literal), so a
value can never end its literal and add operators. Column names are checked against an identifier
pattern. Percent-encoding of the query string is httpx's job (it encodes `+ & = / ? # %`).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from urllib.parse import quote

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)?$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_STATUS_LINE = re.compile(r"^HTTP/1\.[01] (\d{3})")


class Guid(str):
    """A GUID literal: written unquoted (`leadid eq 1a2b...`). Validated on creation."""

    def __new__(cls, value: str | uuid.UUID) -> Guid:
        text = str(value).strip("{}").lower()
        if not _GUID.match(text):
            raise ValueError(f"not a GUID: {value!r}")
        return super().__new__(cls, text)


def column(name: str) -> str:
    """A column name, checked so it cannot smuggle operators into a filter."""
    if not _COLUMN.match(name):
        raise ValueError(f"not a column name: {name!r}")
    return name


def literal(value: Any) -> str:
    """The OData literal for `value`: str → 'quoted' (quotes doubled), Guid/UUID → bare GUID,
    bool → true/false, int/float → number, datetime → ISO UTC `Z`, date → YYYY-MM-DD, None → null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Guid):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return repr(value)
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no OData literal for {type(value).__name__}")


def eq(name: str, value: Any) -> str:
    """`name eq <literal>` (string comparison is case-insensitive on the server)."""
    return f"{column(name)} eq {literal(value)}"


def compare(name: str, op: str, value: Any) -> str:
    if op not in {"eq", "ne", "gt", "ge", "lt", "le"}:
        raise ValueError(f"not a comparison operator: {op!r}")
    return f"{column(name)} {op} {literal(value)}"


def in_(name: str, values: Iterable[Any]) -> str:
    """`Microsoft.Dynamics.CRM.In(PropertyName='x',PropertyValues=["a","b"])`.

    Values are JSON strings (double quotes; spec: values containing `'` must use them).
    """
    items = [str(v) if isinstance(v, (uuid.UUID, Guid)) else v for v in values]
    if not items:
        raise ValueError("in_() needs at least one value")
    for v in items:
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise TypeError(f"In() takes strings, ints or GUIDs, not {type(v).__name__}")
    encoded = ",".join(json.dumps(str(v)) for v in items)
    return f"Microsoft.Dynamics.CRM.In(PropertyName={literal(column(name))},PropertyValues=[{encoded}])"


def and_(*clauses: str) -> str:
    return " and ".join(f"({c})" for c in clauses if c)


def or_(*clauses: str) -> str:
    return " or ".join(f"({c})" for c in clauses if c)


def key_segment(key: str | uuid.UUID | Mapping[str, Any]) -> str:
    """`(<guid>)` or `(col='v',col2=1)` for an alternate key, percent-encoded for a URL path."""
    if isinstance(key, Mapping):
        if not key:
            raise ValueError("an alternate key needs at least one column")
        inner = ",".join(f"{column(k)}={literal(v)}" for k, v in key.items())
        return "(" + quote(inner, safe="'(),=@:!*$-._~") + ")"
    return f"({Guid(key)})"


# --- $batch -----------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPart:
    method: str
    url: str  # absolute URL
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None


def encode_batch(parts: Sequence[BatchPart]) -> tuple[str, bytes]:
    """A `$batch` body without change sets (each part independent)."""
    boundary = f"batch_{uuid.uuid4()}"
    out: list[str] = []
    for part in parts:
        lines = [f"--{boundary}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "",
                 f"{part.method} {part.url} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in part.headers.items()]
        if part.body is not None:
            lines += ["Content-Type: application/json; type=entry", "", json.dumps(part.body)]
        else:
            lines += [""]
        out.append("\r\n".join(lines))
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "\r\n".join(out).encode("utf-8")


def _split(text: str, boundary: str) -> list[str]:
    delim = "--" + boundary
    text = text.split(delim + "--", 1)[0]
    return [c.removeprefix("\r\n").removeprefix("\n") for c in text.split(delim)[1:]]


def _head(text: str) -> tuple[dict[str, str], str]:
    normalized = text.replace("\r\n", "\n")
    head, _, rest = normalized.partition("\n\n")
    headers = {}
    for line in head.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers, rest


def decode_batch(content_type: str, body: bytes) -> list[BatchResponse]:
    """Inner responses in order; change-set responses are flattened in place."""
    m = _BOUNDARY.search(content_type)
    if not m:
        raise ValueError(f"not a multipart batch response: {content_type!r}")
    out: list[BatchResponse] = []
    for chunk in _split(body.decode("utf-8"), m.group(1)):
        headers, rest = _head(chunk)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            out += decode_batch(ctype, rest.encode("utf-8"))
            continue
        rest = rest.lstrip("\n")
        status_line, _, after = rest.partition("\n")
        sm = _STATUS_LINE.match(status_line)
        if not sm:
            raise ValueError(f"bad status line in batch response: {status_line!r}")
        inner_headers, inner_body = _head(after)
        out.append(BatchResponse(int(sm.group(1)), inner_headers, inner_body.strip().encode("utf-8")))
    return out
