"""The real-time endpoint with a shared-secret header configured (its own system)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from devhost.harness import Harness, running
from devhost.stack import StackConfig
from shared.sync.realtime import SECRET_HEADER

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    config = StackConfig(app_port=0, extra_env={"LEADSYNC_WEBHOOK_SECRET": "marketo-webhook-secret",
                                                "MARKETO_POLL_SCHEDULE": "0 0 0 1 1 *",
                                                "DATAVERSE_POLL_SCHEDULE": "0 0 0 1 1 *"})
    with running(config, first_sync=False) as harness:
        yield harness


def call(h: Harness, lead_id: int, secret: str | None) -> httpx.Response:
    headers = {"x-functions-key": h.stack.config.function_key}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    return httpx.post(f"{h.stack.app_url}/api/sync-person", json={"leadId": lead_id}, headers=headers, timeout=30)


def test_without_the_secret_nothing_happens(h: Harness) -> None:
    lead_id = h.marketo.create_lead(email="secret-test@example.com", lastName="Secret")
    for wrong in (None, "", "marketo-webhook-secreT"):
        response = call(h, lead_id, wrong)
        assert response.status_code == 401 and SECRET_HEADER in response.json()["error"]
    assert h.dataverse.find("leads", emailaddress1="secret-test@example.com") == []
    assert call(h, lead_id, "marketo-webhook-secret").status_code == 201
