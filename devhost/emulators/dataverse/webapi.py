"""The Web API proper: one synchronous `dispatch(Req) -> Resp`, reused for `$batch` inner requests.

Sources: Microsoft's Dataverse Web API documentation (headers, status codes, query and paging, CRUD,
conditional ops, alternate keys, change tracking, batch and *Multiple, errors, metadata, QualifyLead).
"""

from __future__ import annotations

import json
import re
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from . import batch as batchfmt
from . import filter as odata_filter
from . import formatted, metadata_api
from . import merge as merge_action
from .metadata import EntityDef
from .store import SYSTEM_USER, ApiError, Store, Tombstone, is_guid, not_found

API_PREFIX = "/api/data/v9.2/"
MAX_PAGE = 5000
MAX_BATCH = 1000
JSON_TYPE = "application/json; odata.metadata=minimal"
EXPIRED_CODE = "0x80044352"
EXPIRED_MESSAGE = "Version stamp associated with the client has expired. Please perform a full sync."
_KEY_PAIR = re.compile(r"\s*(\w+)\s*=\s*('(?:[^']|'')*'|[^,]+)\s*(?:,|$)")
_ENTITY_URL = re.compile(r"^(\w+)(?:\((.*)\))?(?:/(.+))?$", re.DOTALL)
WRITE_ONLY = {"serviceendpoints": ("authvalue",)}
_PREFER = re.compile(r'\s*([\w.-]+)(?:\s*=\s*("[^"]*"|[^,]*))?\s*(?:,|$)')


@dataclass
class Req:
    method: str
    path: str  # after /api/data/v9.2/, still percent-encoded
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class Resp:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def json_resp(status: int, obj: Any, headers: dict[str, str] | None = None) -> Resp:
    h = {"Content-Type": JSON_TYPE, "OData-Version": "4.0"}
    h.update(headers or {})
    return Resp(status, h, json.dumps(obj).encode())


def error_resp(err: ApiError) -> Resp:
    """Every non-2xx body is `{"error":{"code","message"}}`."""
    return json_resp(err.status, {"error": {"code": err.code, "message": err.message}})


def parse_prefer(value: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in _PREFER.finditer(value or ""):
        if m.group(1):
            out[m.group(1).lower()] = (m.group(2) or "").strip().strip('"')
    return out


def _bad_query(message: str) -> ApiError:
    # Malformed query → 400; code seen on live servers for such errors [unverified].
    return ApiError(400, "0x80060888", message)


def _cookie(**values: Any) -> str:
    attrs = " ".join(f'{k}="{v}"' for k, v in values.items())
    return f"<cookie {attrs} />"


def _parse_cookie(text: str) -> dict[str, str]:
    found = dict(re.findall(r'(\w+)="([^"]*)"', text))
    if not text.startswith("<cookie") or not found:
        raise _bad_query("The $skiptoken is invalid.")
    return found


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    return (1, value.casefold() if isinstance(value, str) else value)


class WebApi:
    def __init__(self, store: Store, base_url: str) -> None:
        self.store = store
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url + API_PREFIX
        self.batch_operations = 0
        self.org_id = str(uuid.uuid4())
        self.user_id = SYSTEM_USER  # WhoAmI names the application user every store holds
        self.bu_id = str(uuid.uuid4())
        self.metadata_stamps: dict[str, dict[str, str]] = {}  # RetrieveMetadataChanges stamps issued
        self.denied: set[str] = set()  # privileges the application user's roles lack, e.g. "prvReadLead"

    # -- entry -------------------------------------------------------------------------------
    def dispatch(self, req: Req) -> Resp:
        try:
            with self.store.lock:
                return self._route(req)
        except ApiError as err:
            return error_resp(err)
        except odata_filter.FilterError as err:
            return error_resp(_bad_query(str(err)))

    def operation(self, method: str, path: str) -> str:
        """A short label for stats, e.g. `GET leads`, `POST $batch`, `POST leads/CreateMultiple`."""
        m = _ENTITY_URL.match(unquote(path))
        if not m:
            return f"{method} {path}"
        name = m.group(1)
        tail = (m.group(3) or "").split("?")[0].replace("Microsoft.Dynamics.CRM.", "")
        if path.startswith("$batch"):
            name = "$batch"
        elif path.startswith("EntityDefinitions"):
            return f"{method} EntityDefinitions"
        return f"{method} {name}" + (f"/{tail}" if tail else "")

    def _route(self, req: Req) -> Resp:
        path = unquote(req.path)
        if path == "WhoAmI":
            return json_resp(200, {
                "@odata.context": self.root + "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.bu_id, "UserId": self.user_id, "OrganizationId": self.org_id,
            })
        if path == "$batch":
            if req.method != "POST":
                raise ApiError(405, "0x80060888", "The $batch endpoint accepts POST only.")
            return self.batch(req)
        if path.startswith("EntityDefinitions"):
            self._require("prvReadEntity", "entity")
            if "/Attributes" in path:  # columns are the Field (attribute) table: a privilege of their own
                self._require("prvReadAttribute", "attribute")
            return self.metadata(req, path)
        if path.startswith("RetrieveMetadataChanges("):
            return metadata_api.retrieve_metadata_changes(self, req, path, self.metadata_stamps)
        if path in ("Merge", "Microsoft.Dynamics.CRM.Merge"):
            return merge_action.merge(self, req)
        m = _ENTITY_URL.match(path)
        if not m or m.group(1) not in self.store.by_set:
            segment = path.split("(")[0].split("/")[0]
            raise ApiError(404, "0x8004f510", f"Resource not found for the segment '{segment}'.")
        entity = self.store.entity(m.group(1))
        key, tail = m.group(2), m.group(3)
        self._require(_privilege(req.method, entity.logical_name, key, tail), entity.logical_name)
        if key is None and tail is None:
            if req.method == "GET":
                return self.query(req, entity)
            if req.method == "POST":
                return self.create(req, entity)
            raise ApiError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a collection.")
        if key is None and tail:
            action = tail.removeprefix("Microsoft.Dynamics.CRM.")
            if req.method == "POST" and action in {"CreateMultiple", "UpdateMultiple", "UpsertMultiple"}:
                return self.multiple(req, entity, action)
            raise ApiError(404, "0x8004f510", f"Resource not found for the segment '{tail}'.")
        assert key is not None
        if tail:
            if tail.removeprefix("Microsoft.Dynamics.CRM.") == "QualifyLead" and entity.logical_name == "lead":
                if req.method != "POST":
                    raise ApiError(405, "0x80060888", "QualifyLead is an action: use POST.")
                return self.qualify(req, entity, key)
            raise ApiError(404, "0x8004f510", f"Resource not found for the segment '{tail}'.")
        if req.method == "GET":
            return self.retrieve(req, entity, key)
        if req.method == "PATCH":
            return self.upsert(req, entity, key)
        if req.method == "DELETE":
            return self.delete(req, entity, key)
        raise ApiError(405, "0x80060888", f"The HTTP method '{req.method}' is not allowed on a single record.")

    def _require(self, privilege: str, logical_name: str) -> None:
        """Dataverse's 403 for a missing privilege: code 0x80040220, the privilege named in the message."""
        if privilege in self.denied:
            raise ApiError(403, "0x80040220", f"Principal user (Id={self.user_id}, type=8, roleCount=1, "
                                              f"privilegeCount=0, accessMode=4), is missing {privilege} privilege "
                                              f"(Id={uuid.uuid5(uuid.NAMESPACE_URL, privilege)}) on "
                                              f"OTC={metadata_api._OBJECT_TYPE_CODES.get(logical_name, 0)} for entity "
                                              f"'{logical_name}'. context.Caller={self.user_id}")

    # -- helpers -----------------------------------------------------------------------------
    def _select(self, entity: EntityDef, req: Req) -> list[str] | None:
        raw = dict(req.query).get("$select")
        if not raw:
            return None
        readable = entity.readable()
        cols = [c.strip() for c in raw.split(",") if c.strip()]
        for c in cols:
            if c not in readable:
                raise _bad_query(f"Could not find a property named '{c}' on type '{entity.type_name}'.")
        return cols

    def render(self, entity: EntityDef, row: dict[str, Any], select: list[str] | None,
               annotate: list[str] | None = None) -> dict[str, Any]:
        """`@odata.etag` on every record; primary key always returned; `annotate` holds the
        `odata.include-annotations` terms asked for."""
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["versionnumber"]}"'}
        cols = select if select else list(entity.readable())
        for c in cols:
            out[c] = row.get(c)
        for c in WRITE_ONLY.get(entity.entity_set, ()):
            if c in out:
                out[c] = None  # written, never read back (serviceendpoint.authvalue)
        out[entity.primary_id] = row[entity.primary_id]
        if annotate:
            formatted.annotate(self.store, entity, out, annotate)
        return out

    def _context(self, entity: EntityDef, select: list[str] | None, suffix: str = "") -> str:
        cols = f"({','.join(select)})" if select else ""
        return f"{self.root}$metadata#{entity.entity_set}{cols}{suffix}"

    def entity_url(self, entity: EntityDef, rid: str) -> str:
        return f"{self.root}{entity.entity_set}({rid})"

    def _body(self, req: Req, entity: EntityDef) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "0x80048d19", f"Error identified in Payload provided by the user for Entity :"
                           f"'{entity.entity_set}' ----> InnerException : invalid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "0x80048d19", "The request body must be a JSON object.")
        return body

    def _parse_key(self, entity: EntityDef, key: str) -> tuple[str | None, dict[str, Any] | None]:
        """`(<guid>)` → id; `(col='v',col2=1)` → alternate key (must be defined, the service's documentation)."""
        k = key.strip().strip("{}")
        if is_guid(k):
            return k.lower(), None
        pairs: dict[str, Any] = {}
        pos = 0
        for m in _KEY_PAIR.finditer(key):
            if m.start() != pos:
                break
            raw = m.group(2).strip()
            if raw.startswith("'"):
                value: Any = raw[1:-1].replace("''", "'")
            elif re.fullmatch(r"-?\d+", raw):
                value = int(raw)
            else:
                raise ApiError(400, "0x80060888", f"Bad key value {raw!r} in '{entity.entity_set}({key})'.")
            pairs[m.group(1)] = value
            pos = m.end()
        if not pairs or pos != len(key):
            raise ApiError(400, "0x80060888", f"Bad key segment '{entity.entity_set}({key})'.")
        readable = entity.readable()
        for col in pairs:
            if col not in readable:
                raise _bad_query(f"Could not find a property named '{col}' on type '{entity.type_name}'.")
        self.store.check_key_defined(entity, tuple(pairs))
        return None, pairs

    def _resolve(self, entity: EntityDef, key: str) -> tuple[dict[str, Any] | None, str | None, dict[str, Any] | None]:
        rid, alt = self._parse_key(entity, key)
        if rid is not None:
            return self.store.get(entity.entity_set, rid), rid, None
        assert alt is not None
        return self.store.find_by_key(entity.entity_set, alt), None, alt

    def _missing(self, entity: EntityDef, rid: str | None) -> ApiError:
        if rid is None:
            return ApiError(404, "0x80060891",
                            f"A record with the specified key values does not exist in {entity.logical_name} entity")
        return not_found(entity, rid)

    # -- query / paging / delta -----------------------------------------------------------------
    def query(self, req: Req, entity: EntityDef) -> Resp:
        opts = dict(req.query)
        prefer = parse_prefer(req.headers.get("prefer"))
        select = self._select(entity, req)
        applied: list[str] = []
        page_size = MAX_PAGE
        if "odata.maxpagesize" in prefer:
            try:
                page_size = max(1, min(MAX_PAGE, int(prefer["odata.maxpagesize"])))
            except ValueError as exc:
                raise _bad_query("odata.maxpagesize must be an integer.") from exc
            applied.append(f"odata.maxpagesize={page_size}")
        wanted = formatted.requested(prefer)
        if wanted:
            applied.append(f'odata.include-annotations="{",".join(wanted)}"')
        if "$skip" in opts:
            raise _bad_query("The query parameter $skip is not supported.")
        if "$deltatoken" in opts:
            return self.delta(req, entity, select, page_size, applied)
        tracking = "odata.track-changes" in prefer
        if tracking:
            for option in ("$filter", "$orderby", "$expand", "$top"):
                if option in opts:
                    # Status 400 assumed (not documented).
                    raise ApiError(400, "0x80040203",
                                   f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')
            applied.append("odata.track-changes")
        table = self.store.rows[entity.entity_set]
        tree = None
        if opts.get("$filter"):
            tree = odata_filter.parse(opts["$filter"], entity.readable(), entity.type_name)
        orderby = self._orderby(entity, opts.get("$orderby"))
        rows: list[dict[str, Any]] = []  # with $orderby: the matching rows in order
        ids: list[str] = []  # without: the matching ids, ascending (= rows sorted by primary id)
        if orderby:
            # Ties keep the table's insertion order, so this path scans the table as it always did.
            rows = list(table.values())
            if tree is not None:
                keep = odata_filter.compile_filter(tree)
                rows = [r for r in rows if keep(r)]
            for col, desc in reversed(orderby):
                rows.sort(key=lambda r, c=col: _sort_key(r.get(c)), reverse=desc)  # type: ignore[misc]
        elif tree is None:
            ids = self.store.sorted_ids(entity.entity_set)
        else:
            keep = odata_filter.compile_filter(tree)
            ids = self._candidates(entity, tree)
            ids = [i for i in ids if keep(table[i])]
        top = None
        if "$top" in opts:
            try:
                top = int(opts["$top"])
            except ValueError as exc:
                raise _bad_query(f"Invalid value '{opts['$top']}' for $top.") from exc
            if top < 0:
                raise _bad_query("$top must be non-negative.")
        limited = top is not None and "odata.maxpagesize" not in prefer  # else $top is ignored
        cookie = _parse_cookie(opts["$skiptoken"]) if "$skiptoken" in opts else {}
        page_number = int(cookie.get("pagenumber", "1"))
        anchor = int(cookie.get("anchor", self.store.version))
        if orderby:
            if limited:
                rows = rows[:top]
            offset = int(cookie.get("offset", "0"))
            page, rest = rows[offset : offset + page_size], bool(rows[offset + page_size :])
            next_cookie = _cookie(pagenumber=page_number + 1, offset=offset + page_size, anchor=anchor)
        else:
            end = min(len(ids), top) if limited and top is not None else len(ids)
            last = cookie.get("last")
            start = bisect_right(ids, last, 0, end) if last else 0  # ids after the previous page's last
            page = [table[i] for i in ids[start : min(start + page_size, end)]]
            rest = start + page_size < end
            next_cookie = _cookie(pagenumber=page_number + 1, last=page[-1][entity.primary_id] if page else "",
                                  anchor=anchor)
        body: dict[str, Any] = {
            "@odata.context": self._context(entity, select),
            "value": [self.render(entity, r, select, wanted) for r in page],
        }
        if rest:
            body["@odata.nextLink"] = self._link(entity, req.query, "$skiptoken", next_cookie)
        elif tracking:
            body["@odata.deltaLink"] = self._delta_link(entity, select, anchor)
        headers = {"Preference-Applied": ",".join(applied)} if applied else {}
        return json_resp(200, body, headers)

    def _candidates(self, entity: EntityDef, tree: odata_filter.Node) -> list[str]:
        """Ascending ids of a superset of the rows `tree` accepts: from the store's indexes when the
        filter pins a column to values (primary-key `eq`/`In()`/`or` chains, or one column's), else all."""
        set_name = entity.entity_set
        wanted = odata_filter.index_keys(tree, entity.primary_id)
        if wanted is not None:
            found: set[str] = set()
            for column, values in wanted:
                found |= self.store.lookup(set_name, column, values)
            if len(found) <= len(self.store.rows[set_name]) // 2:
                return sorted(found)
        return self.store.sorted_ids(set_name)

    def _orderby(self, entity: EntityDef, raw: str | None) -> list[tuple[str, bool]]:
        if not raw:
            return []
        readable = entity.readable()
        out = []
        for piece in raw.split(","):
            words = piece.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() not in {"asc", "desc"}):
                raise _bad_query(f"Syntax error in $orderby '{raw}'.")
            if words[0] not in readable:
                raise _bad_query(f"Could not find a property named '{words[0]}' on type '{entity.type_name}'.")
            out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        return out

    def _link(self, entity: EntityDef, query: list[tuple[str, str]], name: str, value: str) -> str:
        kept = [(k, v) for k, v in query if k != name] + [(name, value)]
        qs = "&".join(f"{quote(k, safe='$')}={quote(v, safe=',()$')}" for k, v in kept)
        return f"{self.root}{entity.entity_set}?{qs}"

    def _delta_link(self, entity: EntityDef, select: list[str] | None, version: int) -> str:
        """Token `<version>!<MM/dd/yyyy HH:mm:ss>` as on live servers; opaque to clients."""
        stamp = datetime.now(timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
        query = [("$select", ",".join(select))] if select else []
        return self._link(entity, query, "$deltatoken", f"{version}!{stamp}")

    def delta(self, req: Req, entity: EntityDef, select: list[str] | None, page_size: int, applied: list[str]) -> Resp:
        """Changes since the token: upserted rows by version, then `$deletedEntity` items."""
        opts = dict(req.query)
        for option in ("$filter", "$orderby", "$expand", "$top"):
            if option in opts:
                raise ApiError(400, "0x80040203",
                               f'The "{option}" query parameter isn\'t supported when Change Tracking is enabled.')
        m = re.fullmatch(r"(\d+)!.*", opts["$deltatoken"])
        since = int(m.group(1)) if m else -1
        if since < self.store.min_delta_version or since > self.store.version:
            # Status unverified: 400 chosen.
            raise ApiError(400, EXPIRED_CODE, EXPIRED_MESSAGE)
        cookie = _parse_cookie(opts["$skiptoken"]) if "$skiptoken" in opts else {}
        upto = int(cookie.get("upto", self.store.version))
        after = (int(cookie.get("phase", "0")), int(cookie.get("lastver", "0")))
        # Only what the page needs: the changes after the cursor, one more than a page (is there a next?).
        rows, tombs = self.store.changes_since(entity.entity_set, since, upto, after=after, limit=page_size + 1)
        deleted_ctx = f"{self.root}$metadata#{entity.entity_set}/$deletedEntity"
        items: list[tuple[tuple[int, int], dict[str, Any] | None, Tombstone | None]] = [
            ((0, r["versionnumber"]), r, None) for r in rows
        ]
        items += [((1, t.version), None, t) for t in tombs]
        page, rest = items[:page_size], items[page_size:]
        wanted = formatted.requested(parse_prefer(req.headers.get("prefer")))
        body: dict[str, Any] = {
            "@odata.context": self._context(entity, select, "/$delta"),
            "value": [
                self.render(entity, row, select, wanted) if row is not None
                else {"@odata.context": deleted_ctx, "id": tomb.id, "reason": "deleted"}  # type: ignore[union-attr]
                for _, row, tomb in page
            ],
        }
        if rest:
            last = page[-1][0]
            cookie_text = _cookie(pagenumber=int(cookie.get("pagenumber", "1")) + 1, upto=upto, phase=last[0],
                                  lastver=last[1])
            body["@odata.nextLink"] = self._link(entity, req.query, "$skiptoken", cookie_text)
        else:
            body["@odata.deltaLink"] = self._delta_link(entity, select, upto)
        applied = applied + ["odata.track-changes"]
        return json_resp(200, body, {"Preference-Applied": ",".join(applied)})

    # -- single-record operations ---------------------------------------------------------------
    def retrieve(self, req: Req, entity: EntityDef, key: str) -> Resp:
        row, rid, _ = self._resolve(entity, key)
        if row is None:
            raise self._missing(entity, rid)
        select = self._select(entity, req)
        etag = f'W/"{row["versionnumber"]}"'
        prefer = parse_prefer(req.headers.get("prefer"))
        if req.headers.get("if-none-match") == etag and "odata.include-annotations" not in prefer:
            return Resp(304, {"OData-Version": "4.0", "ETag": etag})
        wanted = formatted.requested(prefer)
        body = {"@odata.context": self._context(entity, select, "/$entity"), **self.render(entity, row, select, wanted)}
        headers = {"ETag": etag}
        if wanted:
            headers["Preference-Applied"] = f'odata.include-annotations="{",".join(wanted)}"'
        return json_resp(200, body, headers)

    def _written(self, req: Req, entity: EntityDef, row: dict[str, Any], created: bool) -> Resp:
        url = self.entity_url(entity, row[entity.primary_id])
        headers = {"OData-EntityId": url, "ETag": f'W/"{row["versionnumber"]}"'}
        if created:
            headers["Location"] = url
        if "return" in parse_prefer(req.headers.get("prefer")) and \
                parse_prefer(req.headers.get("prefer"))["return"] == "representation":
            select = self._select(entity, req)
            wanted = formatted.requested(parse_prefer(req.headers.get("prefer")))
            body = {"@odata.context": self._context(entity, select, "/$entity"),
                    **self.render(entity, row, select, wanted)}
            return json_resp(201 if created else 200, body, headers)
        return Resp(204, {"OData-Version": "4.0", **headers})

    def create(self, req: Req, entity: EntityDef) -> Resp:
        """POST → 204 + OData-EntityId, or 201 + body with return=representation."""
        body = self._body(req, entity)
        self._pipeline(req, entity, "Create", body, None)
        row = self.store.create(entity.entity_set, body)
        return self._written(req, entity, row, created=True)

    def _check_conditions(self, req: Req, entity: EntityDef, row: dict[str, Any] | None, rid: str | None) -> None:
        """If-Match `*`/etag and If-None-Match `*` (MS-docs perform-conditional-operations)."""
        if_match = req.headers.get("if-match")
        if_none = req.headers.get("if-none-match")
        if if_match:
            if row is None:
                raise self._missing(entity, rid)
            if if_match != "*" and if_match.strip() != f'W/"{row["versionnumber"]}"':
                raise ApiError(412, "0x80060882",
                               "The version of the existing record doesn't match the RowVersion property provided.")
        if if_none == "*" and row is not None:
            raise ApiError(412, "0x80040237", "A record with matching key values already exists.")

    def upsert(self, req: Req, entity: EntityDef, key: str) -> Resp:
        """PATCH on a key URL is an upsert unless `If-Match: *`."""
        row, rid, alt = self._resolve(entity, key)
        self._check_conditions(req, entity, row, rid)
        body = self._body(req, entity)
        if row is not None:
            self._pipeline(req, entity, "Update", {**row, **body}, row[entity.primary_id])
            updated = self.store.update(entity.entity_set, row[entity.primary_id], body)
            return self._written(req, entity, updated, created=False)
        values = dict(body)
        if rid is not None:
            values[entity.primary_id] = rid
        for col, value in (alt or {}).items():
            values.setdefault(col, value)
        self._pipeline(req, entity, "Create", values, None)
        created = self.store.create(entity.entity_set, values)
        return self._written(req, entity, created, created=True)

    def delete(self, req: Req, entity: EntityDef, key: str) -> Resp:
        row, rid, _ = self._resolve(entity, key)
        if row is None:
            raise self._missing(entity, rid)
        self._check_conditions(req, entity, row, rid)
        self.store.delete(entity.entity_set, row[entity.primary_id])
        return Resp(204, {"OData-Version": "4.0"})

    def _pipeline(self, req: Req, entity: EntityDef, message: str, values: dict[str, Any], rid: str | None) -> None:
        bind = values.get("ownerid@odata.bind")
        if isinstance(bind, str) and SYSTEM_USER not in bind.lower():
            # Giving a record to another user or team is an Assign, a privilege of its own.
            self._require(f"prvAssign{entity.logical_name.capitalize()}", entity.logical_name)
        self.store.pipeline.before(self.store.rows[entity.entity_set], entity, message, values, rid, req.headers)

    # -- actions ----------------------------------------------------------------------------
    def multiple(self, req: Req, entity: EntityDef, action: str) -> Resp:
        """Create/Update/UpsertMultiple: @odata.type mandatory per target; one transaction."""
        body = self._body(req, entity)
        targets = body.get("Targets")
        if not isinstance(targets, list) or not targets:
            raise ApiError(400, "0x80040203", "Targets must be a non-empty array.")
        ids: list[str] = []
        with self.store.transaction():
            for target in targets:
                if not isinstance(target, dict) or \
                        str(target.get("@odata.type", "")).lstrip("#") != entity.type_name:
                    raise ApiError(400, "0x80040203",
                                   f"The '@odata.type' annotation '{entity.type_name}' is required on every Target.")
                values = {k: v for k, v in target.items() if k not in {"@odata.type", "@odata.id"}}
                if action == "CreateMultiple":
                    self._pipeline(req, entity, "Create", values, None)
                    ids.append(self.store.create(entity.entity_set, values)[entity.primary_id])
                    continue
                row: dict[str, Any] | None
                if "@odata.id" in target:
                    m = _ENTITY_URL.match(str(target["@odata.id"]).split(API_PREFIX)[-1].lstrip("/"))
                    if not m or m.group(1) != entity.entity_set or m.group(2) is None:
                        raise ApiError(400, "0x80040203", f"Invalid @odata.id '{target['@odata.id']}'.")
                    row, rid, alt = self._resolve(entity, m.group(2))
                    for col, value in (alt or {}).items():
                        values.setdefault(col, value)
                    if rid is not None:
                        values.setdefault(entity.primary_id, rid)
                elif entity.primary_id in target:
                    rid = str(target[entity.primary_id]).lower()
                    row = self.store.get(entity.entity_set, rid)
                else:
                    raise ApiError(400, "0x80040203", f"Each Target must carry '{entity.primary_id}' for {action}.")
                if row is not None:
                    self.store.update(entity.entity_set, row[entity.primary_id], values)
                elif action == "UpdateMultiple":
                    raise not_found(entity, rid or "")
                else:
                    self.store.create(entity.entity_set, values)
        if action == "CreateMultiple":
            return json_resp(200, {
                "@odata.context": self.root + "$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", "Ids": ids,
            })
        return Resp(204, {"OData-Version": "4.0"})

    def qualify(self, req: Req, entity: EntityDef, key: str) -> Resp:
        """QualifyLead: contact copies name/email/phone/address/jobtitle; lead → 1/Status."""
        row, rid, _ = self._resolve(entity, key)
        if row is None:
            raise self._missing(entity, rid)
        body = self._body(req, entity)
        for name in ("CreateAccount", "CreateContact", "CreateOpportunity", "Status"):
            if body.get(name) is None:
                raise ApiError(400, "0x80040203", f"The parameter '{name}' is required and cannot be null.")
        status = body["Status"]
        if status not in {3}:
            raise ApiError(400, "0x80040203", f"Status {status} is not a valid status for a qualified lead.")
        if row.get("statecode") != 0:
            # [message from memory; code unverified]
            raise ApiError(400, "0x80040203",
                           "The lead is closed. You cannot convert or qualify a lead that is already closed.")
        created: list[dict[str, Any]] = []
        with self.store.transaction():
            patch: dict[str, Any] = {"statecode": 1, "statuscode": status}
            if body["CreateContact"]:
                copied = {c: row.get(c) for c in (
                    "firstname", "lastname", "emailaddress1", "jobtitle", "telephone1", "mobilephone",
                    "address1_line1", "address1_line2", "address1_city", "address1_stateorprovince",
                    "address1_postalcode", "address1_country")}
                copied["_originatingleadid_value"] = row["leadid"]
                contact = self.store.create("contacts", copied, validate=False)
                patch["_parentcontactid_value"] = contact["contactid"]
                created.append({"@odata.type": "#Microsoft.Dynamics.CRM.contact", "contactid": contact["contactid"]})
            self.store.update("leads", row["leadid"], patch, validate=False)
        return json_resp(200, {
            "@odata.context": self.root + "$metadata#Collection(Microsoft.Dynamics.CRM.crmbaseentity)",
            "value": created,
        })

    # -- metadata ---------------------------------------------------------------------------
    def metadata(self, req: Req, path: str) -> Resp:
        """EntityDefinitions in every addressing form the Web API serves (metadata_api)."""
        return metadata_api.metadata(self, req, path)

    # -- $batch -----------------------------------------------------------------------------
    def batch(self, req: Req) -> Resp:
        """$batch: ≤1000 ops, change sets atomic, Content-ID refs, continue-on-error semantics."""
        try:
            items = batchfmt.parse(req.body, req.headers.get("content-type", ""))
        except (batchfmt.BatchFormatError, UnicodeDecodeError) as exc:
            raise ApiError(400, "0x80040203", str(exc)) from exc
        count = sum(len(i.requests) if isinstance(i, batchfmt.ChangeSet) else 1 for i in items)
        if count > MAX_BATCH:
            # [message unverified] the service's documentation: max 1000 requests per batch.
            raise ApiError(400, "0x80040203",
                           f"The number of requests in the batch ({count}) exceeds the maximum of {MAX_BATCH}.")
        keep_going = "odata.continue-on-error" in parse_prefer(req.headers.get("prefer"))
        content_ids: dict[str, str] = {}
        parts: list[batchfmt.InnerResponse | list[batchfmt.InnerResponse]] = []

        def finish(status: int, only: batchfmt.InnerResponse | None = None) -> Resp:
            ctype, body = batchfmt.render([only] if only is not None else parts)
            return Resp(status, {"Content-Type": ctype, "OData-Version": "4.0"}, body)

        for item in items:
            if isinstance(item, batchfmt.InnerRequest):
                resp = self._inner(item, content_ids)
                if resp.status >= 400 and not keep_going:
                    return finish(resp.status, resp)
                parts.append(resp)
                continue
            responses: list[batchfmt.InnerResponse] = []
            failed: batchfmt.InnerResponse | None = None
            try:
                with self.store.transaction():
                    for inner in item.requests:
                        resp = self._inner(inner, content_ids)
                        if resp.status >= 400:
                            failed = resp
                            raise _Rollback()
                        responses.append(resp)
            except _Rollback:
                pass
            if failed is not None:
                if not keep_going:
                    return finish(failed.status, failed)
                parts.append(failed)
            else:
                parts.append(responses)
        return finish(200)

    def _inner(self, inner: batchfmt.InnerRequest, content_ids: dict[str, str]) -> batchfmt.InnerResponse:
        self.batch_operations += 1
        url = inner.url
        split = urlsplit(url)
        path = split.path
        if path.startswith(API_PREFIX):
            path = path[len(API_PREFIX):]
        path = path.lstrip("/")
        try:
            ref = re.match(r"^\$(\w+)(.*)$", path)
            if ref:
                if ref.group(1) not in content_ids:
                    raise ApiError(400, "0x80040203",
                                   f"Content-ID Reference: '${ref.group(1)}' does not exist in the batch context.")
                path = content_ids[ref.group(1)] + ref.group(2)
            body = inner.body
            if body.strip() and "@odata.bind" in body.decode("utf-8", "replace"):
                doc = json.loads(body)
                for k, v in list(doc.items()):
                    if k.endswith("@odata.bind") and isinstance(v, str) and v.startswith("$"):
                        if v[1:] not in content_ids:
                            raise ApiError(400, "0x80040203",
                                           f"Content-ID Reference: '{v}' does not exist in the batch context.")
                        doc[k] = "/" + content_ids[v[1:]]
                body = json.dumps(doc).encode()
        except ApiError as err:
            r = error_resp(err)
            return batchfmt.InnerResponse(r.status, r.headers, r.body, inner.content_id)
        except json.JSONDecodeError:
            body = inner.body
        resp = self.dispatch(Req(inner.method, path, parse_qsl(split.query, keep_blank_values=True),
                                 inner.headers, body))
        entity_id = resp.headers.get("OData-EntityId")
        if inner.content_id is not None and entity_id:
            content_ids[inner.content_id] = entity_id.split(API_PREFIX, 1)[-1]
        if resp.status >= 400:
            resp.headers["REQ_ID"] = str(uuid.uuid4())
        return batchfmt.InnerResponse(resp.status, resp.headers, resp.body, inner.content_id)


class _Rollback(Exception):
    pass


def _privilege(method: str, logical_name: str, key: str | None, tail: str | None) -> str:
    """The privilege a request on a table needs, as Dataverse names it (prv<Access><Table>)."""
    action = (tail or "").removeprefix("Microsoft.Dynamics.CRM.")
    if method == "GET":
        access = "Read"
    elif method == "DELETE":
        access = "Delete"
    elif action == "CreateMultiple" or (method == "POST" and key is None and not action):
        access = "Create"
    else:
        access = "Write"
    return f"prv{access}{'User' if logical_name == 'systemuser' else logical_name.capitalize()}"
