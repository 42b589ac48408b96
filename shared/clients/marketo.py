"""Marketo REST client for the sync: tokens, call budget, retries, paging, typed results.

What callers can rely on:
- Every call goes through a `CallBudget` (in the app, the budget every instance and process
  shares), so the sync alone never trips 606/615; a 606/615/429 it did not predict is
  reported to it as pressure from another integration.
- Retriable failures (502, 604, 606, 608, 611, 614, 615, 713, 719, any 5xx, 429, timeouts,
  dropped connections) are retried with exponential backoff and jitter, honouring
  `Retry-After`; after `max_attempts` they raise `MarketoTransient` (the queue retries).
- 601/602 refresh the access token and resend once without spending an attempt.
- 607 raises `QuotaExhausted` with `resets_at` = next midnight US Central.
- A paging token Marketo refuses as too old raises `CursorExpired` (re-baseline).
- Other call-level errors raise `MarketoError` with Marketo's string `code`.
- Record-level skips are never retried: they come back as `RecordResult(status="skipped")`.
Wire facts: Adobe's Marketo REST API documentation (developer.adobe.com/marketo-apis).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from shared.clients.marketo_models import (
    MERGE_LEADS,
    ActivityAttribute,
    ActivityEntry,
    ActivityJSON,
    ChangePage,
    DeletedLead,
    DeletedPage,
    DescribeJSON,
    EnvelopeJSON,
    FieldChange,
    FieldInfo,
    LeadChange,
    MergedPage,
    Reason,
    RecordResult,
    lead_change,
    merged_leads,
    next_reset,
    parse_date,
    record_results,
)
from shared.clients.ratelimit import CallBudget, budget_for
from shared.errors import CursorExpired, MarketoError, MarketoTransient, QuotaExhausted

__all__ = [
    "ActivityAttribute", "ActivityEntry", "CallBudget", "ChangePage", "DeletedLead", "DeletedPage", "FieldChange",
    "FieldInfo", "LeadChange", "MarketoClient", "Reason", "RecordResult", "TokenCache", "budget_for", "next_reset",
]

PRESSURE_CODES = frozenset({"606", "615"})  # rate and concurrency limits: the call budget's business
RETRYABLE_CODES = frozenset({"502", "604", "606", "608", "611", "614", "615", "713", "719"})
TOKEN_CODES = frozenset({"600", "601", "602"})
EXPIRED_CURSOR_CODE = "701"  # what the emulator answers for a too-old paging token (Adobe documents none)
MAX_BATCH = 300
MAX_URI = 8000  # Marketo answers 414 above 8 KB; stay clear of it
MAX_BODY = 1_000_000  # Marketo answers 413 above 1 MB
TOKEN_MARGIN_S = 60.0

# Per-endpoint timeouts (seconds), as Marketo documents them.
TIMEOUT_DEFAULT = 30.0
TIMEOUT_SYNC = 90.0
TIMEOUT_GET_LEADS = 60.0
TIMEOUT_PAGING_TOKEN = 300.0


# --------------------------------------------------------------------------- tokens


class TokenCache:
    """The access token of one (identity URL, client id). Thread-safe; shared per process by default."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: str | None = None
        self.refresh_at = 0.0


_tokens: dict[tuple[str, str], TokenCache] = {}
_tokens_lock = threading.Lock()


def token_cache_for(identity_url: str, client_id: str) -> TokenCache:
    """The process-wide token cache of one set of credentials (every client of them shares it)."""
    with _tokens_lock:
        return _tokens.setdefault((identity_url, client_id), TokenCache())


class _RetryLater(MarketoTransient):
    """A transient failure that told us how long to wait (`Retry-After`)."""

    def __init__(self, code: str, message: str, retry_after: float | None, request_id: str | None = None) -> None:
        super().__init__(code, message, request_id)
        self.retry_after = retry_after


# --------------------------------------------------------------------------- the client


class MarketoClient:
    """A Marketo REST client. Thread-safe; share one per instance and process."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.Client | None = None,
        budget: CallBudget | None = None,
        token_cache: TokenCache | None = None,
        max_attempts: int = 6,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        base = base_url.rstrip("/")
        self.rest_url = base + "/rest"
        self.identity_url = base + "/identity"
        self._client_id = client_id
        self._client_secret = client_secret
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=httpx.Timeout(TIMEOUT_DEFAULT, connect=10.0))
        self._budget = budget or budget_for(base)
        self._token = token_cache or token_cache_for(self.identity_url, client_id)
        self._max_attempts = max_attempts
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
        )
        self._count_lock = threading.Lock()
        self._describe: list[FieldInfo] | None = None
        self.calls = 0
        """REST HTTP requests sent by this client, retries included (identity calls are not)."""
        self.token_requests = 0

    @property
    def budget(self) -> CallBudget:
        """The call budget this client draws on (shared by every client of the instance in the process)."""
        return self._budget

    def close(self) -> None:
        """Close the HTTP client this client made (one passed in stays its owner's)."""
        if self._owns_http:
            self._http.close()

    def __repr__(self) -> str:
        return f"MarketoClient({self.rest_url!r}, client_id={self._client_id!r}, client_secret=***)"

    # ---- transport

    def _access_token(self) -> str:
        tok = self._token
        with tok.lock:
            now = time.monotonic()
            if tok.value is not None and now < tok.refresh_at:
                return tok.value
            value, ttl = self._fetch_token()
            if ttl <= 1:  # the old token is about to die and Marketo hands it back: wait it out
                time.sleep(max(ttl, 0) + 0.5)
                value, ttl = self._fetch_token()
            # Marketo returns the SAME token with its remaining life until it expires, so
            # refreshing "60 s early" only helps when a fresh token is more than 60 s old.
            margin = TOKEN_MARGIN_S if ttl > 2 * TOKEN_MARGIN_S else 1.0
            tok.value, tok.refresh_at = value, now + ttl - margin
            return value

    def _invalidate(self, token: str) -> None:
        with self._token.lock:
            if self._token.value == token:
                self._token.value = None

    def _fetch_token(self) -> tuple[str, float]:
        params = {"grant_type": "client_credentials", "client_id": self._client_id,
                  "client_secret": self._client_secret}
        self.token_requests += 1
        try:
            response = self._http.get(self.identity_url + "/oauth/token", params=params)
        except httpx.TransportError as exc:
            raise MarketoTransient("identity", f"identity call failed: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise MarketoTransient(str(response.status_code), "identity call failed")
        try:
            body = response.json()
        except ValueError as exc:
            raise MarketoTransient(str(response.status_code), "identity answered without JSON") from exc
        if response.status_code != 200 or "access_token" not in body:
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise MarketoError(str(response.status_code), f"identity refused: {error}".strip())
        return str(body["access_token"]), float(body.get("expires_in", 0))

    def _wait(self, state: RetryCallState) -> float:
        delay = float(self._backoff(state))
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryLater) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        return delay

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        form: Mapping[str, str] | None = None,
        timeout: float = TIMEOUT_DEFAULT,
    ) -> EnvelopeJSON:
        """One logical call: retried per the module docstring; returns a `success: true` envelope."""
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(MarketoTransient),
            reraise=True,
        )
        return retrying(self._attempt, method, path, params, body, form, timeout)

    def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Any,
        form: Mapping[str, str] | None,
        timeout: float,
    ) -> EnvelopeJSON:
        refreshed = False
        while True:
            token = self._access_token()
            envelope = self._send(method, path, token, params, body, form, timeout)
            if envelope.get("success"):
                return envelope
            errors = envelope.get("errors") or [{"code": "unknown", "message": "success false without errors"}]
            code, message = str(errors[0]["code"]), str(errors[0]["message"])
            request_id = envelope.get("requestId")
            if code in TOKEN_CODES:
                self._invalidate(token)
                if not refreshed:
                    refreshed = True
                    continue
                raise MarketoTransient(code, message, request_id)
            if code == "607":
                raise QuotaExhausted(message, next_reset(), request_id)
            if code in PRESSURE_CODES:
                self._budget.pressure()  # the budget allowed this call: someone else spends the limit
            if code in RETRYABLE_CODES:
                raise MarketoTransient(code, message, request_id)
            raise MarketoError(code, message, request_id)

    def _send(
        self,
        method: str,
        path: str,
        token: str,
        params: Mapping[str, str] | None,
        body: Any,
        form: Mapping[str, str] | None,
        timeout: float,
    ) -> EnvelopeJSON:
        headers = {"Authorization": f"Bearer {token}"}
        content: bytes | None = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            content = str(httpx.QueryParams(form)).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        with self._budget.slot():
            with self._count_lock:
                self.calls += 1
            try:
                response = self._http.request(
                    method, self.rest_url + path, params=params, content=content, headers=headers, timeout=timeout
                )
            except httpx.TimeoutException as exc:
                raise MarketoTransient("timeout", f"{method} {path} timed out") from exc
            except httpx.TransportError as exc:
                raise MarketoTransient("connection", f"{method} {path}: {exc!r}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            retry_after = response.headers.get("retry-after")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            if status == 429:
                self._budget.pressure(seconds)
            raise _RetryLater(str(status), f"HTTP {status} from {path}", seconds)
        if status != 200:
            raise MarketoError(str(status), f"HTTP {status} from {path}")
        try:
            return cast(EnvelopeJSON, response.json())
        except ValueError as exc:
            raise MarketoTransient("invalid-json", f"{path} answered without JSON") from exc

    # ---- change detection

    def paging_token(self, since: datetime) -> str:
        """A token for every change after `since` (an aware datetime)."""
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        iso = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        envelope = self._call("GET", "/v1/activities/pagingtoken.json", params={"sinceDatetime": iso},
                              timeout=TIMEOUT_PAGING_TOKEN)
        return envelope["nextPageToken"]

    def _activity_pages(self, path: str, params: dict[str, str]) -> Iterator[EnvelopeJSON]:
        """Marketo's activity paging: follow nextPageToken while moreResult (pages may be short or empty)."""
        while True:
            try:
                envelope = self._call("GET", path, params=params)
            except MarketoError as exc:
                if exc.code == EXPIRED_CURSOR_CODE:
                    raise CursorExpired("marketo", exc.message) from exc
                raise
            yield envelope
            if not envelope.get("moreResult"):
                return
            params = {**params, "nextPageToken": envelope["nextPageToken"]}

    def lead_changes(self, token: str, fields: Sequence[str], batch_size: int = MAX_BATCH) -> Iterator[ChangePage]:
        """New-lead (12) and change-data-value (13) activities after `token`, page by page.

        Only changes to `fields` are returned. Store the last page's `next_token` once the
        iteration ends and resume from it; dedupe on `marketo_guid`.
        """
        if not fields:
            raise ValueError("fields must name at least one field")
        params = {"nextPageToken": token, "fields": ",".join(fields), "batchSize": str(min(batch_size, MAX_BATCH))}
        for envelope in self._activity_pages("/v1/activities/leadchanges.json", params):
            items = cast(list[ActivityJSON], envelope.get("result") or [])
            yield ChangePage([lead_change(i) for i in items], envelope["nextPageToken"],
                             bool(envelope.get("moreResult")))

    def deleted_leads(self, token: str, batch_size: int = MAX_BATCH) -> Iterator[DeletedPage]:
        """Delete Lead (37) activities after `token`, page by page (same paging as `lead_changes`)."""
        params = {"nextPageToken": token, "batchSize": str(min(batch_size, MAX_BATCH))}
        for envelope in self._activity_pages("/v1/activities/deletedleads.json", params):
            items = cast(list[ActivityJSON], envelope.get("result") or [])
            deletions = [
                DeletedLead(i["marketoGUID"], int(i.get("primaryAttributeValueId", i["leadId"])),
                            parse_date(i["activityDate"]))
                for i in items
            ]
            yield DeletedPage(deletions, envelope["nextPageToken"], bool(envelope.get("moreResult")))

    def merged_leads(self, token: str, batch_size: int = MAX_BATCH) -> Iterator[MergedPage]:
        """Merge Leads (32) activities after `token`, page by page (same paging as `lead_changes`)."""
        params = {"nextPageToken": token, "activityTypeIds": str(MERGE_LEADS),
                  "batchSize": str(min(batch_size, MAX_BATCH))}
        for envelope in self._activity_pages("/v1/activities.json", params):
            items = cast(list[ActivityJSON], envelope.get("result") or [])
            yield MergedPage([merged_leads(i) for i in items], envelope["nextPageToken"],
                             bool(envelope.get("moreResult")))

    def merge_leads(self, winner: int, losers: Sequence[int]) -> None:
        """Merge `losers` into `winner` (Marketo keeps the winner's values and deletes the losers).

        MarketoError 1004 when one of them does not exist (any more).
        """
        self._call("POST", f"/v1/leads/{winner}/merge.json",
                   params={"leadIds": ",".join(str(i) for i in losers), "mergeInCRM": "false"})

    # ---- reading leads

    def get_leads(self, ids: Sequence[int], fields: Sequence[str]) -> list[dict[str, Any]]:
        """The leads with these ids (missing ones are simply absent); null fields are omitted."""
        return self.find_leads("id", [str(i) for i in ids], fields)

    def find_leads(self, filter_type: str, values: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any]]:
        """Leads whose `filter_type` field equals one of `values` (e.g. "email"), 300 values per call."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(values), MAX_BATCH):
            chunk = values[start : start + MAX_BATCH]
            params = {"filterType": filter_type, "filterValues": ",".join(chunk)}
            if fields:
                params["fields"] = ",".join(fields)
            while True:
                envelope = self._get_long("/v1/leads.json", params)
                out.extend(envelope.get("result") or [])
                if not envelope.get("moreResult"):
                    break
                params = {**params, "nextPageToken": envelope["nextPageToken"]}
        return out

    def _get_long(self, path: str, params: dict[str, str]) -> EnvelopeJSON:
        """GET, or `POST ?_method=GET` with a form body when the URI would pass 8 KB (Marketo's URI limit)."""
        url = httpx.URL(self.rest_url + path, params=params)
        if len(url.raw_path) <= MAX_URI:
            return self._call("GET", path, params=params, timeout=TIMEOUT_GET_LEADS)
        return self._call("POST", path, params={"_method": "GET"}, form=params, timeout=TIMEOUT_GET_LEADS)

    def describe(self) -> list[FieldInfo]:
        """The lead fields of the instance (cached for the life of this client)."""
        if self._describe is None:
            items = cast(list[DescribeJSON], self._call("GET", "/v1/leads/describe.json").get("result") or [])
            self._describe = [
                FieldInfo(i["id"], str(i["rest"]["name"]), i["displayName"], i["dataType"], i.get("length"),
                          bool(i["rest"].get("readOnly", False)))
                for i in items
            ]
        return self._describe

    def usage(self) -> int:
        """API calls counted today (US Central day) across every user of the instance."""
        result = self._call("GET", "/v1/stats/usage.json").get("result") or []
        return sum(int(day.get("total", 0)) for day in result)

    def partitions(self) -> list[dict[str, Any]]:
        """The instance's lead partitions (`id`, `name`, `description`)."""
        return list(self._call("GET", "/v1/leads/partitions.json").get("result") or [])

    def activity_types(self) -> list[dict[str, Any]]:
        """The instance's custom activity types (apiName, status, attributes)."""
        return list(self._call("GET", "/v1/activities/external/types.json").get("result") or [])

    # ---- writing

    def sync_leads(
        self, records: Sequence[Mapping[str, Any]], action: str = "createOrUpdate", lookup_field: str = "email",
        partition_name: str | None = None,
    ) -> list[RecordResult]:
        """Create/update leads; one result per record, aligned with `records`. Skips are not errors.

        `partition_name`: the lead partition (workspace) new people are created in; the
        lookup is scoped to it, and people of other partitions are not updated (1010)."""
        results: list[RecordResult] = []
        for chunk in _chunks([dict(r) for r in records]):
            body: dict[str, Any] = {"action": action, "lookupField": lookup_field, "input": chunk}
            if partition_name is not None:
                body["partitionName"] = partition_name
            envelope = self._call("POST", "/v1/leads.json", body=body, timeout=TIMEOUT_SYNC)
            results.extend(record_results(envelope, len(chunk)))
        return results

    def add_activities(self, entries: Sequence[ActivityEntry | Mapping[str, Any]]) -> list[RecordResult]:
        """Write custom activities; one result per entry (status "added" or "skipped").

        Entries are `ActivityEntry`s or raw wire dicts (`leadId`, `activityTypeId`, ...).
        """
        results: list[RecordResult] = []
        for chunk in _chunks([e.json() if isinstance(e, ActivityEntry) else dict(e) for e in entries]):
            envelope = self._call("POST", "/v1/activities/external.json", body={"input": chunk}, timeout=TIMEOUT_SYNC)
            results.extend(record_results(envelope, len(chunk)))
        return results

    def ensure_activity_type(
        self,
        api_name: str,
        name: str,
        primary_attribute: ActivityAttribute | str,
        attributes: Sequence[ActivityAttribute | tuple[str, str, str]] = (),
    ) -> int:
        """The id of the approved custom activity type `api_name`, creating/extending/approving it if needed.

        Attributes may be given as `ActivityAttribute` or `(api_name, name, data_type)`; a
        primary attribute given as a string is a string attribute of that API name.
        """
        if isinstance(primary_attribute, str):
            label = primary_attribute[:1].upper() + primary_attribute[1:]
            primary_attribute = ActivityAttribute(primary_attribute, label)
        wanted = [a if isinstance(a, ActivityAttribute) else ActivityAttribute(*a) for a in attributes]
        types = self._call("GET", "/v1/activities/external/types.json").get("result") or []
        found = next((t for t in types if t.get("apiName") == api_name), None)
        base = f"/v1/activities/external/type/{api_name}"
        if found is None:
            body = {"apiName": api_name, "name": name, "triggerName": name, "filterName": name,
                    "primaryAttribute": primary_attribute.json()}
            found = (self._call("POST", "/v1/activities/external/type.json", body=body).get("result") or [{}])[0]
        have = {a.get("apiName") for a in found.get("attributes") or []}
        missing = [a.json() for a in wanted if a.api_name not in have]
        if missing:
            self._call("POST", base + "/attributes/create.json", body={"attribute": missing})
        if missing or found.get("status") != "approved":
            self._call("POST", base + "/approve.json")
        return int(found["id"])


# --------------------------------------------------------------------------- helpers


def _chunks(items: list[dict[str, Any]], size: int = MAX_BATCH, max_bytes: int = MAX_BODY - 10_000) -> Iterator[
    list[dict[str, Any]]
]:
    """Batches of at most `size` items whose JSON stays under `max_bytes` (Marketo: 300 records, 1 MB)."""
    chunk: list[dict[str, Any]] = []
    used = 0
    for item in items:
        cost = len(json.dumps(item, separators=(",", ":")).encode()) + 1
        if chunk and (len(chunk) >= size or used + cost > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += cost
    if chunk:
        yield chunk
