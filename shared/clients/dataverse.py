"""Dataverse Web API v9.2 client (httpx + msal) used by the sync.

What callers can rely on (wire facts: Microsoft's Dataverse Web API documentation):
- Auth: msal client credentials, token cached by msal, re-acquired once on a 401.
- Every request carries the OData headers the Web API expects.
- One place (`_send`) decides what is retried: 429 (sleeping `Retry-After`, else exponential),
  5xx, timeouts and dropped connections; when attempts run out → `DataverseTransient`.
  412 → `ConcurrencyConflict`; other 4xx → `DataverseError(status, code, message)`, never retried;
  an expired delta token (0x80044352) → `CursorExpired("dataverse", ...)`.
- `$filter` values come only from `shared.clients.odata` (escaping in one function).
"""

from __future__ import annotations

import json
import random
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import msal
import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from shared.clients import odata
from shared.clients.dataverse_models import (
    TYPED_CASTS,
    AttributeMetadata,
    DeltaPage,
    EntityMetadata,
    Record,
    WriteOp,
    WriteResult,
    entity_id,
    entity_metadata,
    primary_key,
    write_result,
)
from shared.clients.ratelimit import CallBudget
from shared.errors import ConcurrencyConflict, ConfigError, CursorExpired, DataverseError, DataverseTransient

__all__ = ["AttributeMetadata", "DataverseClient", "DeltaPage", "EntityMetadata", "Record", "WriteOp", "WriteResult"]

API_PATH = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000
MAX_BATCH = 1000
EXPIRED_DELTA_CODE = "0x80044352"
MICROSOFT_AUTHORITY_HOSTS = {
    "login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login-us.microsoftonline.com",
}
RETRY_STATUSES = {429, 500, 502, 503, 504}

# A private generator, so retries in worker threads never touch the global random state.
_jitter = random.Random()


class _Retry(Exception):
    """Internal: a retriable outcome; `error` is raised if attempts run out."""

    def __init__(self, error: DataverseTransient, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        err = resp.json().get("error", {})
        return str(err.get("code") or ""), str(err.get("message") or "")
    except (ValueError, AttributeError):
        return "", resp.text[:500]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class DataverseClient:
    """A Dataverse environment at `url` (e.g. https://org.crm.dynamics.com), as one application user.

    Thread-safe. `requests_made` counts HTTP requests sent to the Web API (retries included,
    token requests excluded).
    """

    def __init__(
        self,
        url: str,
        tenant_id: str,
        client_id: str,
        *,
        client_secret: str | None = None,
        client_certificate: Mapping[str, str] | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        ca_bundle: str | None = None,
        http: httpx.Client | None = None,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 120.0,
        timeout: float = 120.0,
        bulk_chunk_size: int = 1000,
        url_budget: int = 16_000,
        budget: CallBudget | None = None,
    ) -> None:
        if (client_secret is None) == (client_certificate is None):
            raise ConfigError("DATAVERSE_CLIENT_SECRET", "give exactly one of client_secret or client_certificate")
        self.url = url.rstrip("/")
        self.api = self.url + API_PATH
        self.scope = self.url + "/.default"
        self.authority = authority_host.rstrip("/") + "/" + tenant_id
        self.client_id = client_id
        self._credential: Any = client_secret if client_secret is not None else dict(client_certificate or {})
        self._authority_host = urlsplit(authority_host).hostname or ""
        self.ca_bundle = ca_bundle
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self.http = http or httpx.Client(verify=verify, timeout=timeout)
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.bulk_chunk_size = bulk_chunk_size
        self.url_budget = url_budget
        self.budget = budget  # the service-protection budget every request draws on (None: unlimited)
        self.requests_made = 0
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._msal: msal.ConfidentialClientApplication | None = None
        self._metadata: dict[str, EntityMetadata] = {}

    def close(self) -> None:
        self.http.close()

    # -- auth ------------------------------------------------------------------------------
    def _app(self) -> msal.ConfidentialClientApplication:
        if self._msal is None:
            kwargs: dict[str, Any] = {}
            if self._authority_host not in MICROSOFT_AUTHORITY_HOSTS:
                kwargs.update(validate_authority=False, instance_discovery=False)
            if self.ca_bundle:
                # requests honours REQUESTS_CA_BUNDLE over Session.verify unless trust_env is off.
                session = requests.Session()
                session.trust_env = False
                session.verify = self.ca_bundle
                kwargs["http_client"] = session
            try:
                self._msal = msal.ConfidentialClientApplication(
                    self.client_id, client_credential=self._credential, authority=self.authority, **kwargs
                )
            except ValueError as exc:
                raise ConfigError("DATAVERSE_TENANT_ID", f"authority {self.authority} unusable: {exc}") from exc
            except requests.RequestException as exc:
                raise DataverseTransient(0, "", f"authority discovery failed: {exc}") from exc
        return self._msal

    def _token(self, rejected: str | None = None) -> str:
        """A bearer token from msal's cache; drops `rejected` from the cache first (after a 401)."""
        with self._token_lock:
            app = self._app()
            if rejected is not None:
                cache = app.token_cache
                for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                    if item.get("secret") == rejected:
                        cache.remove_at(item)
            try:
                result = app.acquire_token_for_client(scopes=[self.scope])
            except requests.RequestException as exc:
                raise DataverseTransient(0, "", f"token request failed: {exc}") from exc
            if "access_token" not in result:
                error = str(result.get("error", ""))
                detail = str(result.get("error_description", ""))
                if error in {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_tenant",
                             "invalid_request", "unsupported_grant_type"}:
                    raise ConfigError("DATAVERSE_CLIENT_ID", f"token refused ({error}): {detail}")
                raise DataverseTransient(401, error, f"token request failed: {detail}")
            return str(result["access_token"])

    # -- the one place that sends and retries -------------------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retry) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max)
        delay = self.backoff_initial * (2 ** (state.attempt_number - 1))
        return float(min(self.backoff_max, delay) * (0.5 + _jitter.random() / 2))

    def _send(self, method: str, url: str, *, params: Mapping[str, str] | None = None, json_body: Any = None,
              content: bytes | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """Send with retries; returns any non-retriable response (the caller maps 4xx via `_raise`)."""
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(lambda e: isinstance(e, _Retry)),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(method, url, params, json_body, content, headers)
        except _Retry as exc:
            raise exc.error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_once(self, method: str, url: str, params: Mapping[str, str] | None, json_body: Any,
                   content: bytes | None, headers: Mapping[str, str] | None) -> httpx.Response:
        base = {
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "If-None-Match": "null",
        }
        if json_body is not None:
            base["Content-Type"] = "application/json"
        base.update(headers or {})
        token = self._token()
        for refreshed in (False, True):
            base["Authorization"] = f"Bearer {token}"
            with self._lock:
                self.requests_made += 1
            try:
                with self.budget.slot() if self.budget is not None else nullcontext():
                    resp = self.http.request(method, url, params=params, json=json_body, content=content,
                                             headers=base)
            except httpx.TimeoutException as exc:
                raise _Retry(DataverseTransient(0, "timeout", f"{method} {url}: {exc!r}")) from exc
            except httpx.TransportError as exc:
                raise _Retry(DataverseTransient(0, "connection", f"{method} {url}: {exc!r}")) from exc
            if resp.status_code == 401 and not refreshed:
                token = self._token(rejected=token)
                continue
            break
        if resp.status_code == 429 and self.budget is not None:
            self.budget.pressure(_retry_after(resp))  # the budget allowed it: someone else spends the limit
        if resp.status_code in RETRY_STATUSES:
            code, message = _error_of(resp)
            raise _Retry(DataverseTransient(resp.status_code, code, message or resp.reason_phrase),
                         _retry_after(resp) if resp.status_code in {429, 503} else None)
        return resp

    @staticmethod
    def _raise(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        code, message = _error_of(resp)
        if resp.status_code == 412:
            raise ConcurrencyConflict(412, code, message)
        if code == EXPIRED_DELTA_CODE:
            raise CursorExpired("dataverse", message)
        raise DataverseError(resp.status_code, code, message or resp.reason_phrase)

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        resp = self._send(method, url, **kw)
        self._raise(resp)
        return resp.json() if resp.content else None

    # -- reads -------------------------------------------------------------------------------
    def _pages(self, url: str, params: Mapping[str, str] | None, prefer: str) -> Iterator[dict[str, Any]]:
        """The `@odata.nextLink` paginator: follows links verbatim with the same Prefer."""
        next_url: str | None = url
        next_params = params
        while next_url:
            doc = self._json("GET", next_url, params=next_params, headers={"Prefer": prefer})
            yield doc
            next_url, next_params = doc.get("@odata.nextLink"), None

    def query(self, entity_set: str, filter: str | None, select: Sequence[str], top: int | None = None,
              page_size: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """All rows matching `filter` (build it with `shared.clients.odata`), following nextLink."""
        params = {"$select": ",".join(odata.column(c) for c in select)}
        if filter:
            params["$filter"] = filter
        prefer = f"odata.maxpagesize={min(page_size, MAX_PAGE_SIZE)}"
        if top is not None:
            params["$top"] = str(top)
            prefer = ""  # $top is ignored when maxpagesize is sent
        rows: list[dict[str, Any]] = []
        for doc in self._pages(f"{self.api}/{entity_set}", params, prefer):
            rows += doc.get("value", [])
        return rows[:top] if top is not None else rows

    def _chunks(self, values: Sequence[Any]) -> Iterator[list[Any]]:
        """Chunks whose In() clause stays under `url_budget` bytes once percent-encoded."""
        chunk: list[Any] = []
        size = 0
        for value in values:
            cost = len(quote(json.dumps(str(value)), safe="")) + 3  # its encoded bytes plus the comma
            if chunk and size + cost > self.url_budget:
                yield chunk
                chunk, size = [], 0
            chunk.append(value)
            size += cost
        if chunk:
            yield chunk

    def find_by(
        self, entity_set: str, column: str, values: Sequence[Any], select: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Rows whose `column` is in `values` (server compares strings case-insensitively)."""
        unique = list(dict.fromkeys(values))
        rows: list[dict[str, Any]] = []
        for chunk in self._chunks(unique):
            rows += self.query(entity_set, odata.in_(column, chunk), select)
        return rows

    def get_by_ids(self, entity_set: str, ids: Sequence[str], select: Sequence[str],
                   key_column: str | None = None) -> list[dict[str, Any]]:
        """Rows for `ids` (missing ones are absent), in input order, each with `@odata.etag`."""
        key = key_column or primary_key(entity_set)
        guids = [odata.Guid(i) for i in ids]
        found = {r[key]: r for r in self.find_by(entity_set, key, guids, list(select))}
        return [found[g] for g in dict.fromkeys(guids) if g in found]

    def changes(self, entity_set: str, select: Sequence[str], delta_link: str | None,
                page_size: int = MAX_PAGE_SIZE) -> Iterator[DeltaPage]:
        """Change tracking. `delta_link=None` → full read; store the last page's `delta_link`.

        Raises CursorExpired when the stored link is too old: drop it and call again with None.
        """
        prefer = f"odata.track-changes,odata.maxpagesize={min(page_size, MAX_PAGE_SIZE)}"
        if delta_link is None:
            pages = self._pages(f"{self.api}/{entity_set}", {"$select": ",".join(odata.column(c) for c in select)},
                                prefer)
        else:
            pages = self._pages(delta_link, None, prefer)
        for doc in pages:
            records, deleted = [], []
            for item in doc.get("value", []):
                if str(item.get("@odata.context", "")).endswith("$deletedEntity") or (
                    item.get("reason") == "deleted" and "id" in item
                ):
                    deleted.append(str(item["id"]))
                else:
                    records.append(item)
            yield DeltaPage(records, deleted, doc.get("@odata.nextLink"), doc.get("@odata.deltaLink"))

    # -- single writes ------------------------------------------------------------------------
    @staticmethod
    def _id_from(resp: httpx.Response) -> str:
        found = entity_id(resp.headers.get("OData-EntityId", ""))
        if found is None:
            raise DataverseError(resp.status_code, "", "response carries no OData-EntityId")
        return found

    def create(self, entity_set: str, record: Mapping[str, Any], *, detect_duplicates: bool = False) -> str:
        """POST; returns the new id. (A retry after a dropped connection may create twice.)

        `detect_duplicates`: have the org's published duplicate detection rules checked (the
        Web API skips them unless asked); a match is a 412 with code 0x80040333."""
        headers = {"MSCRM.SuppressDuplicateDetection": "false"} if detect_duplicates else None
        resp = self._send("POST", f"{self.api}/{entity_set}", json_body=dict(record), headers=headers)
        self._raise(resp)
        return self._id_from(resp)

    def update(self, entity_set: str, record_id: str, changes: Mapping[str, Any], etag: str | None = None) -> None:
        """PATCH with `If-Match` (the etag, else `*` so a missing row is 404, never created)."""
        resp = self._send("PATCH", f"{self.api}/{entity_set}{odata.key_segment(record_id)}",
                          json_body=dict(changes), headers={"If-Match": etag or "*"})
        self._raise(resp)

    def upsert(self, entity_set: str, key: str | Mapping[str, Any], record: Mapping[str, Any], *,
               create_only: bool = False, update_only: bool = False) -> str:
        """PATCH on a key URL; `key` is an id or an alternate key {column: value}. Returns the id."""
        if create_only and update_only:
            raise ValueError("create_only and update_only exclude each other")
        headers = {"If-None-Match": "*"} if create_only else {"If-Match": "*"} if update_only else {}
        resp = self._send("PATCH", f"{self.api}/{entity_set}{odata.key_segment(key)}", json_body=dict(record),
                          headers=headers)
        self._raise(resp)
        return self._id_from(resp)

    def delete(self, entity_set: str, record_id: str, etag: str | None = None) -> None:
        resp = self._send("DELETE", f"{self.api}/{entity_set}{odata.key_segment(record_id)}",
                          headers={"If-Match": etag} if etag else None)
        self._raise(resp)

    # -- bulk -----------------------------------------------------------------------------------
    def _part(self, op: WriteOp) -> odata.BatchPart:
        pk = primary_key(op.entity_set)
        headers = {"Prefer": "return=representation"}
        if op.kind == "create":
            return odata.BatchPart("POST", f"{self.api}/{op.entity_set}?$select={pk}", op.record, headers)
        if op.key is None:
            raise ValueError(f"{op.kind} needs a key")
        if op.kind == "update":
            headers["If-Match"] = op.etag or "*"
        elif op.etag:
            headers["If-Match"] = op.etag
        return odata.BatchPart("PATCH", f"{self.api}/{op.entity_set}{odata.key_segment(op.key)}?$select={pk}",
                               op.record, headers)

    def batch_write(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """All ops via `$batch` with `odata.continue-on-error`, ≤1000 per request; one result per op, in order."""
        results: list[WriteResult] = []
        for start in range(0, len(ops), MAX_BATCH):
            chunk = ops[start : start + MAX_BATCH]
            content_type, body = odata.encode_batch([self._part(op) for op in chunk])
            resp = self._send("POST", f"{self.api}/$batch", content=body,
                              headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"})
            self._raise(resp)
            parts = odata.decode_batch(resp.headers.get("Content-Type", ""), resp.content)
            if len(parts) != len(chunk):
                raise DataverseError(resp.status_code, "", f"$batch returned {len(parts)} parts for {len(chunk)} ops")
            for op, part in zip(chunk, parts, strict=True):
                results.append(write_result(op, part))
        return results

    def _multiple(self, action: str, entity_set: str, logical_name: str, records: Sequence[Mapping[str, Any]],
                  chunk_size: int | None) -> list[Any]:
        size = chunk_size or self.bulk_chunk_size
        out: list[Any] = []
        for start in range(0, len(records), size):
            targets = [{**r, "@odata.type": f"Microsoft.Dynamics.CRM.{logical_name}"} for r in
                       records[start : start + size]]
            doc = self._json("POST", f"{self.api}/{entity_set}/Microsoft.Dynamics.CRM.{action}",
                             json_body={"Targets": targets})
            out += (doc or {}).get("Ids", [])
        return out

    def create_multiple(self, entity_set: str, logical_name: str, records: Sequence[Mapping[str, Any]],
                        chunk_size: int | None = None) -> list[str]:
        """CreateMultiple: each chunk one transaction; returns the new ids in order."""
        return [str(i) for i in self._multiple("CreateMultiple", entity_set, logical_name, records, chunk_size)]

    def update_multiple(self, entity_set: str, logical_name: str, records: Sequence[Mapping[str, Any]],
                        chunk_size: int | None = None) -> None:
        """UpdateMultiple: every record carries its primary key."""
        self._multiple("UpdateMultiple", entity_set, logical_name, records, chunk_size)

    def upsert_multiple(self, entity_set: str, logical_name: str, records: Sequence[Mapping[str, Any]],
                        chunk_size: int | None = None) -> None:
        """UpsertMultiple: records carry the primary key or `"@odata.id": "leads(col='v')"`; 204, no per-row result."""
        self._multiple("UpsertMultiple", entity_set, logical_name, records, chunk_size)

    # -- actions and metadata -------------------------------------------------------------------
    def qualify_lead(self, lead_id: str, status: int = 3) -> str:
        """QualifyLead creating a contact only; returns the contact id."""
        doc = self._json("POST", f"{self.api}/leads{odata.key_segment(lead_id)}/Microsoft.Dynamics.CRM.QualifyLead",
                         json_body={"CreateAccount": False, "CreateContact": True, "CreateOpportunity": False,
                                    "Status": status})
        for item in (doc or {}).get("value", []):
            if "contactid" in item:
                return str(item["contactid"])
        raise DataverseError(200, "", "QualifyLead created no contact")

    def who_am_i(self) -> dict[str, Any]:
        return dict(self._json("GET", f"{self.api}/WhoAmI"))

    def entity_definition(self, logical_name: str, select: Sequence[str]) -> dict[str, Any]:
        """Table facts from EntityDefinitions, e.g. ChangeTrackingEnabled (spec §9)."""
        url = f"{self.api}/EntityDefinitions(LogicalName={odata.literal(odata.column(logical_name))})"
        return dict(self._json("GET", url, params={"$select": ",".join(select)}))

    def attributes(self, logical_name: str) -> EntityMetadata:
        """Column metadata, cached per client: type, RequiredLevel, MaxLength, Format, options."""
        if logical_name in self._metadata:
            return self._metadata[logical_name]
        base = f"{self.api}/EntityDefinitions(LogicalName={odata.literal(odata.column(logical_name))})/Attributes"
        items = self._json("GET", base, params={
            "$select": "LogicalName,AttributeType,AttributeTypeName,RequiredLevel,IsValidForCreate,"
                       "IsValidForUpdate"})["value"]
        strings = self._json("GET", f"{base}/Microsoft.Dynamics.CRM.StringAttributeMetadata",
                             params={"$select": "LogicalName,MaxLength,FormatName"})["value"]
        options: dict[str, tuple[int, ...]] = {}
        for cast in ("PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata",
                     "MultiSelectPicklistAttributeMetadata"):
            for a in self._json("GET", f"{base}/Microsoft.Dynamics.CRM.{cast}",
                                params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"})["value"]:
                opts = (a.get("OptionSet") or {}).get("Options") or []
                options[a["LogicalName"]] = tuple(int(o["Value"]) for o in opts)
        typed = [a for cast, select in TYPED_CASTS.items()
                 for a in self._json("GET", f"{base}/Microsoft.Dynamics.CRM.{cast}",
                                     params={"$select": select})["value"]]
        meta = entity_metadata(logical_name, items, strings, options, typed)
        self._metadata[logical_name] = meta
        return meta
