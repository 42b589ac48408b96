"""Another integration on the same Marketo subscription: a steady share of the rate limit.

`Competitor` is a thread that spends `share` of Marketo's 100 calls / 20 s with real REST
calls (`leads/describe.json`, a counted call that changes nothing), evenly spaced, with an
access token of its own from the identity endpoint. It does not retry: a call answered 606
or 615 was still spent (Marketo counts it), as another integration's would be. It counts
its own answers by code, so the benchmark can tell the sync's limit errors from its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from bench.scale import MARKETO_CALLS_PER_S


class Competitor:
    def __init__(self, base_url: str, client_id: str, client_secret: str, share: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.interval_s = 1 / (MARKETO_CALLS_PER_S * share)
        self.answers: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="competing-integration", daemon=True)

    def start(self) -> Competitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def calls(self) -> int:
        return sum(self.answers.values())

    @property
    def limit_errors(self) -> int:
        return self.answers["606"] + self.answers["615"]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as http:
            token = self._token(http)
            due = time.monotonic()
            while not self._stop.wait(max(0.0, due - time.monotonic())):
                due += self.interval_s
                answer = http.get(f"{self.base_url}/rest/v1/leads/describe.json",
                                  headers={"Authorization": f"Bearer {token}"}).json()
                code = "200" if answer.get("success") else str(answer["errors"][0]["code"])
                if code in ("601", "602"):  # the token expired: a new one, as any integration does
                    token = self._token(http)
                self.answers[code] += 1

    def _token(self, http: httpx.Client) -> str:
        response = http.get(f"{self.base_url}/identity/oauth/token",
                            params={"grant_type": "client_credentials", "client_id": self.client_id,
                                    "client_secret": self.client_secret})
        response.raise_for_status()
        return str(response.json()["access_token"])
