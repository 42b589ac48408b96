"""`MarketoAdmin`: a small typed client for the emulator's /_admin API (tests, demo, bench)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

CENTRAL = ZoneInfo("America/Chicago")  # Marketo's daily quota resets at midnight US Central


class MarketoAdmin:
    """Drive the emulator as a Marketo user (UI edits) and as a test harness (faults, clock, stats)."""

    def __init__(self, base_url: str, *, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=30)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
              params: dict[str, str] | None = None) -> Any:
        response = self.http.request(method, f"{self.base_url}/_admin{path}", json=body, params=params)
        response.raise_for_status()
        return response.json() if response.content else None

    # people, as edited in the Marketo UI (each logs the activities the UI would)
    def create_lead(self, **fields: Any) -> int:
        return int(self._call("POST", "/leads", fields)["id"])

    def update_lead(self, lead_id: int, **fields: Any) -> list[str]:
        """Returns the names of the fields whose value really changed."""
        return list(self._call("PATCH", f"/leads/{lead_id}", fields)["changed"])

    def delete_lead(self, lead_id: int) -> None:
        self._call("DELETE", f"/leads/{lead_id}")

    def get_lead(self, lead_id: int) -> dict[str, Any] | None:
        response = self.http.get(f"{self.base_url}/_admin/leads/{lead_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return dict(response.json())

    def find_leads(self, email: str) -> list[dict[str, Any]]:
        return list(self._call("GET", "/leads", params={"email": email})["leads"])

    def all_leads(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/leads")["leads"])

    def add_partition(self, name: str, description: str = "") -> int:
        """A new lead partition; returns its id."""
        return int(self._call("POST", "/partitions", {"name": name, "description": description})["id"])

    def bulk(self, leads: list[dict[str, Any]]) -> list[int]:
        """Create (no "id") or update (with "id") many people in one go; returns their ids in order."""
        return [int(i) for i in self._call("POST", "/leads/bulk", {"leads": leads})["ids"]]

    def activities(self, lead_id: int, *, all_types: bool = False) -> list[dict[str, Any]]:
        """Custom activity-log entries of a person (all activity types with all_types)."""
        params = {"all": "true"} if all_types else None
        return list(self._call("GET", f"/leads/{lead_id}/activities", params=params)["activities"])

    def log_size(self) -> int:
        return int(self._call("GET", "/log")["size"])

    # harness
    def fault(self, kind: str, *, count: int | None = None, rate: float | None = None,
              delay_s: float = 0.0, path_prefix: str | None = None) -> None:
        body: dict[str, Any] = {"kind": kind, "delay_s": delay_s}
        if count is not None:
            body["count"] = count
        if rate is not None:
            body["rate"] = rate
        if path_prefix is not None:
            body["path_prefix"] = path_prefix
        self._call("POST", "/faults", body)

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "/stats"))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def advance_clock(self, seconds: float) -> str:
        return str(self._call("POST", "/clock", {"advance_s": seconds})["now"])

    def advance_to_daily_reset(self) -> str:
        """Move the clock just past the next midnight US Central: the daily quota starts afresh."""
        now = datetime.fromisoformat(str(self._call("GET", "/clock")["now"]))
        local = now.astimezone(CENTRAL)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=CENTRAL)
        return self.advance_clock((midnight - now).total_seconds() + 1)

    def set_limits(self, **changes: Any) -> dict[str, Any]:
        """Change limits until the next reset, e.g. set_limits(daily_quota=5, rate_calls=None)."""
        return dict(self._call("PATCH", "/limits", changes))

    def spend(self, calls: int, user: str = "other-integration") -> int:
        """Count `calls` against today's quota as another integration would; today's total."""
        return int(self._call("POST", "/spend", {"calls": calls, "user": user})["today"])

    def close(self) -> None:
        self.http.close()
