"""The naive baseline: the same changes applied one record per call, with plain httpx.

This is what a per-record flow (a Power Automate "when a row is modified" flow, a Marketo
webhook per person) costs: it is handed one changed record, GETs the other side's record
by id, and writes it. It uses the same credentials and endpoints the app uses, and paces
itself under Marketo's 100 calls / 20 s so that no call is wasted on a 606.
"""

from __future__ import annotations

import ssl
import time
from collections import deque
from typing import Any

import httpx

MARKETO_CALLS_PER_20S = 95  # a little under Marketo's 100, so no call is refused


class Naive:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.marketo_url = env["MARKETO_BASE_URL"].rstrip("/")
        self.dataverse_url = env["DATAVERSE_URL"].rstrip("/")
        self.http = httpx.Client(timeout=60)
        self.dv = httpx.Client(timeout=60, verify=ssl.create_default_context(cafile=env["DATAVERSE_CA_BUNDLE"]))
        self._marketo_token = ""
        self._dataverse_token = ""
        self._window: deque[float] = deque()

    def close(self) -> None:
        self.http.close()
        self.dv.close()

    # -- auth, as the app authenticates -------------------------------------------------
    def marketo_headers(self) -> dict[str, str]:
        if not self._marketo_token:
            r = self.http.get(f"{self.marketo_url}/identity/oauth/token", params={
                "grant_type": "client_credentials", "client_id": self.env["MARKETO_CLIENT_ID"],
                "client_secret": self.env["MARKETO_CLIENT_SECRET"]})
            r.raise_for_status()
            self._marketo_token = r.json()["access_token"]
        return {"authorization": f"Bearer {self._marketo_token}"}

    def dataverse_headers(self) -> dict[str, str]:
        if not self._dataverse_token:
            authority = self.env["DATAVERSE_AUTHORITY_HOST"].rstrip("/")
            r = self.dv.post(f"{authority}/{self.env['DATAVERSE_TENANT_ID']}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": self.env["DATAVERSE_CLIENT_ID"],
                "client_secret": self.env["DATAVERSE_CLIENT_SECRET"], "scope": f"{self.dataverse_url}/.default"})
            r.raise_for_status()
            self._dataverse_token = r.json()["access_token"]
        return {"authorization": f"Bearer {self._dataverse_token}", "accept": "application/json",
                "OData-MaxVersion": "4.0", "OData-Version": "4.0"}

    def _marketo(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        while True:
            now = time.monotonic()
            while self._window and self._window[0] <= now - 20:
                self._window.popleft()
            if len(self._window) >= MARKETO_CALLS_PER_20S:
                time.sleep(self._window[0] + 20 - now + 0.01)
                continue
            self._window.append(now)
            r = self.http.request(method, f"{self.marketo_url}/rest{path}", headers=self.marketo_headers(), **kw)
            r.raise_for_status()
            body: dict[str, Any] = r.json()
            if body.get("success"):
                return body
            if body["errors"][0]["code"] in ("606", "615"):
                time.sleep(1)  # counted by Marketo, and by us: a real cost of the naive flow
                continue
            raise RuntimeError(f"Marketo {path}: {body['errors']}")

    # -- the flows -----------------------------------------------------------------------
    def dynamics_to_marketo(self, changes: list[tuple[int, dict[str, Any]]]) -> None:
        """For each (Marketo id, changed Marketo fields): GET the person by id, then write it."""
        for marketo_id, fields in changes:
            self._marketo("GET", "/v1/leads.json", params={"filterType": "id", "filterValues": str(marketo_id),
                                                           "fields": ",".join(["id", *fields])})
            self._marketo("POST", "/v1/leads.json", json={"action": "updateOnly", "lookupField": "id",
                                                          "input": [{"id": marketo_id, **fields}]})

    def marketo_to_dynamics(self, changes: list[tuple[str, dict[str, Any]]]) -> None:
        """For each (lead id, changed Dataverse columns): GET the lead by id, then PATCH it."""
        for lead_id, columns in changes:
            url = f"{self.dataverse_url}/api/data/v9.2/leads({lead_id})"
            r = self.dv.get(url, params={"$select": ",".join(columns)}, headers=self.dataverse_headers())
            r.raise_for_status()
            etag = r.json().get("@odata.etag", "*")
            r = self.dv.patch(url, json=columns, headers={**self.dataverse_headers(), "If-Match": etag})
            r.raise_for_status()
