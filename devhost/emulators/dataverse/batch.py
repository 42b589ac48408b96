"""`$batch` multipart/mixed parsing and response rendering.

Source: MS-docs:webapi/execute-batch-operations-using-web-api.md, the service's documentation.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 412: "Precondition Failed",
    413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


class BatchFormatError(ValueError):
    pass


@dataclass
class InnerRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    requests: list[InnerRequest] = field(default_factory=list)


@dataclass
class InnerResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


def boundary_of(content_type: str) -> str:
    m = _BOUNDARY.search(content_type or "")
    if not m:
        raise BatchFormatError("The content type of a batch request must be multipart/mixed with a boundary.")
    return m.group(1)


def _split(body: str, boundary: str) -> list[str]:
    delim = "--" + boundary
    if delim + "--" not in body:
        raise BatchFormatError(f"The batch is missing its closing delimiter '{delim}--'.")
    body = body.split(delim + "--", 1)[0]
    chunks = body.split(delim)[1:]
    return [c.removeprefix("\r\n").removeprefix("\n") for c in chunks]


def _headers_and_body(text: str) -> tuple[dict[str, str], str]:
    text = text.replace("\r\n", "\n")
    head, _, rest = text.partition("\n\n")
    headers: dict[str, str] = {}
    for line in head.split("\n"):
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers, rest


def _inner(part_headers: dict[str, str], text: str) -> InnerRequest:
    if "application/http" not in part_headers.get("content-type", "").lower():
        raise BatchFormatError("Each batch part must have Content-Type: application/http.")
    text = text.replace("\r\n", "\n").lstrip("\n")
    request_line, _, rest = text.partition("\n")
    pieces = request_line.split()
    if len(pieces) < 2:
        raise BatchFormatError(f"Invalid request line in batch part: {request_line!r}")
    headers, body = _headers_and_body(rest)
    content_id = part_headers.get("content-id")
    return InnerRequest(pieces[0].upper(), pieces[1], headers, body.rstrip("\n").encode(), content_id)


def parse(body: bytes, content_type: str) -> list[InnerRequest | ChangeSet]:
    """Parts in order; a change set groups its inner requests."""
    items: list[InnerRequest | ChangeSet] = []
    for chunk in _split(body.decode("utf-8"), boundary_of(content_type)):
        headers, rest = _headers_and_body(chunk)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            cs = ChangeSet()
            for inner_chunk in _split(rest, boundary_of(ctype)):
                inner_headers, inner_rest = _headers_and_body(inner_chunk)
                req = _inner(inner_headers, inner_rest)
                if req.method == "GET":
                    raise BatchFormatError("GET requests are not allowed inside a change set.")
                cs.requests.append(req)
            items.append(cs)
        else:
            items.append(_inner(headers, rest))
    return items


def _render_response(resp: InnerResponse) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if resp.content_id is not None:
        lines.append(f"Content-ID: {resp.content_id}")
    lines += ["", f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    lines += ["", resp.body.decode("utf-8")]
    return "\r\n".join(lines)


def render(parts: list[InnerResponse | list[InnerResponse]]) -> tuple[str, bytes]:
    """(content type, body) with a `batchresponse_` boundary and `changesetresponse_` for change sets."""
    boundary = f"batchresponse_{uuid.uuid4()}"
    out: list[str] = []
    for part in parts:
        out.append(f"--{boundary}")
        if isinstance(part, list):
            cs = f"changesetresponse_{uuid.uuid4()}"
            inner = [f"--{cs}\r\n" + _render_response(r) for r in part]
            out.append(f"Content-Type: multipart/mixed; boundary={cs}\r\n\r\n" + "\r\n".join(inner) + f"\r\n--{cs}--")
        else:
            out.append(_render_response(part))
    out.append(f"--{boundary}--\r\n")
    return f"multipart/mixed; boundary={boundary}", "\r\n".join(out).encode("utf-8")
